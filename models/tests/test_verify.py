import json

import onnx
import pytest
from onnx import helper

from conftest import TINY_DIR
from models.verify import ContractError, check_contract, main


def tiny():
    return onnx.load(str(TINY_DIR / "step.onnx"))


def set_meta(m, key, value):
    props = {p.key: p.value for p in m.metadata_props}
    if value is None:
        props.pop(key)
    else:
        props[key] = value
    del m.metadata_props[:]
    helper.set_model_props(m, props)
    return m


def problems_of(m):
    with pytest.raises(ContractError) as e:
        check_contract(m)
    return str(e.value)


def test_good_model_passes():
    assert check_contract(tiny()).n_classes == 8


@pytest.mark.parametrize("key", ["mambatag.contract", "mambatag.labels", "mambatag.thresholds",
                                 "mambatag.hop", "mambatag.license"])
def test_missing_metadata(key):
    assert f"missing metadata {key}" in problems_of(set_meta(tiny(), key, None))


def test_bad_metadata_values():
    assert "contract is '2'" in problems_of(set_meta(tiny(), "mambatag.contract", "2"))
    assert "must be 'step' or 'chunk'" in problems_of(set_meta(tiny(), "mambatag.graph", "stream"))
    m = set_meta(tiny(), "mambatag.thresholds", json.dumps({"speech": 1.2}))
    msg = problems_of(m)
    assert "lacks labels" in msg and "'speech'] = 1.2 is not in (0, 1)" in msg
    m = set_meta(tiny(), "mambatag.labels", json.dumps(["a", "b"]))
    assert "last dimension must be the number of labels 2" in problems_of(m)
    assert "positive integer" in problems_of(set_meta(tiny(), "mambatag.hop", "ten"))
    assert "second dimension must be the fixed hop 320" in problems_of(set_meta(tiny(), "mambatag.hop", "320"))


def test_missing_state_output():
    m = tiny()
    out = [o for o in m.graph.output if o.name == "state.layer1.ssm.next"][0]
    m.graph.output.remove(out)
    assert "state input 'state.layer1.ssm' has no output 'state.layer1.ssm.next'" in problems_of(m)


def test_fixed_batch_and_bad_names():
    m = tiny()
    d = m.graph.input[0].type.tensor_type.shape.dim[0]
    d.ClearField("dim_param")
    d.dim_value = 1
    assert "input 'audio' [1, 160]: the batch dimension (first) must be symbolic" in problems_of(m)
    m = tiny()
    m.graph.input[1].name = "hidden"
    msg = problems_of(m)
    assert "unexpected input 'hidden'" in msg


def test_state_shape_mismatch():
    m = tiny()
    out = [o for o in m.graph.output if o.name == "state.layer0.conv.next"][0]
    out.type.tensor_type.shape.dim[1].dim_value = 4
    assert "output 'state.layer0.conv.next' [B, 4, 32] must have the shape of 'state.layer0.conv' [B, 3, 32]" \
        in problems_of(m)


def test_cli_rejects_broken_model(tmp_path, capsys):
    m = set_meta(tiny(), "mambatag.license", None)
    onnx.save(m, str(tmp_path / "step.onnx"))
    assert main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "breaks the mambatag contract" in out and "missing metadata mambatag.license" in out
    assert main([str(tmp_path / "nope.onnx")]) == 2
