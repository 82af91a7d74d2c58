"""CPU smoke run of models/train.py (2 tiny steps on fake data): the training script runs end to
end and writes loadable weights with front-end stats and thresholds."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def test_train_smoke(tmp_path):
    from models import train
    from models.mamba import MambaTagger

    summary = train.main(["--smoke", "--out", str(tmp_path)])
    assert summary["steps"] == 2
    w = tmp_path / "weights.safetensors"
    assert w.exists()
    m = MambaTagger.from_safetensors(w)
    assert m.config.labels == ["speech", "music", "animal", "alarm", "vehicle", "tools", "impact", "weather"]
    assert float(m.frontend.std.min()) > 0 and not np.allclose(m.frontend.mean.numpy(), 0)
    th = json.loads((tmp_path / "thresholds.json").read_text())
    assert set(th) == set(m.config.labels) and all(0 < v < 1 for v in th.values())
    with torch.no_grad():
        p = m(torch.zeros(1, 1600))
    assert p.shape == (1, 10, 8)
    lines = (tmp_path / "train_log.jsonl").read_text().splitlines()
    assert all(json.loads(l) for l in lines)


def test_scene_targets_follow_events():
    sys.path.insert(0, str(ROOT / "models" / "data"))
    import pool
    import scenes

    p = pool.fake_pool(seed=3)
    mixer = scenes.SceneMixer(p)
    x, y, ev = mixer.generate(2, 16000 * 10, np.random.default_rng(0), mode="eval", n_events=(2, 3))
    assert x.shape == (2, 160000) and y.shape == (2, 1000, 8)
    assert float(x.abs().max()) <= 1.0
    for b in range(2):
        assert ev[b], "eval scenes have events"
        for c, on, off, _ in ev[b]:
            t_on = int(round(on * 100)) - 1
            assert y[b, t_on, c] == 1 and off > on
