"""models/soup.py: the element-wise mean of checkpoints of one model, and clear refusals."""

import hashlib
import json

import numpy as np
import pytest

from models import soup
from models.weights import MambaConfig, init_weights, load_metadata, load_weights, save_weights

CFG = MambaConfig(16, 2, d_state=4, labels=["a", "b"])


def _save(tmp_path, name, seed, config=CFG, mean_shift=0.0):
    w = init_weights(config, seed=seed)
    w["frontend.mean"] = w["frontend.mean"] + 0.5 + mean_shift
    p = tmp_path / name
    save_weights(p, w, config)
    return str(p), w


def test_soup_is_the_elementwise_mean(tmp_path):
    (p1, w1), (p2, w2), (p3, w3) = (_save(tmp_path, f"w{i}.safetensors", i) for i in (1, 2, 3))
    out = tmp_path / "soup.safetensors"
    assert soup.main([str(out), p1, p2, p3]) == 0
    got, config = load_weights(out)
    assert config == CFG
    for k in w1:
        want = ((w1[k].astype(np.float64) + w2[k] + w3[k]) / 3).astype(np.float32)
        np.testing.assert_array_equal(got[k], want, err_msg=k)
    # the inputs differ, so the mean is none of them
    assert not np.array_equal(got["head.weight"], w1["head.weight"])
    np.testing.assert_array_equal(got["frontend.mean"], w1["frontend.mean"])
    meta = json.loads(load_metadata(out)["soup"])
    assert [m["sha256"] for m in meta] == [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in (p1, p2, p3)]


def test_soup_refuses_different_frontend_config_and_single_input(tmp_path, capsys):
    p1, _ = _save(tmp_path, "a.safetensors", 1)
    p2, _ = _save(tmp_path, "b.safetensors", 2, mean_shift=0.1)
    p3, _ = _save(tmp_path, "c.safetensors", 3, config=MambaConfig(16, 3, d_state=4, labels=["a", "b"]))
    out = str(tmp_path / "o.safetensors")
    assert soup.main([out, p1, p2]) == 2
    assert "b.safetensors: frontend.mean differs" in capsys.readouterr().err
    assert soup.main([out, p1, p3]) == 2
    assert "c.safetensors: config differs" in capsys.readouterr().err
    assert soup.main([out, p1]) == 2
    assert "at least two checkpoints" in capsys.readouterr().err
    assert soup.main([out, p1, str(tmp_path / "missing.safetensors")]) == 2
    assert "missing.safetensors" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        open(out)
