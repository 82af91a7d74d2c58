"""Shared fixtures for the models/ tests (run from the repo root: ``pytest models/tests``)."""

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.weights import MambaConfig, init_weights  # noqa: E402

TINY_DIR = ROOT / "models" / "test-tiny"
LABELS8 = ["speech", "music", "animal", "alarm", "vehicle", "tools", "impact", "weather"]


def export_to(tmp_path, weights, config, name="m", **kw):
    from models.export import export_package
    from models.weights import save_weights

    tmp_path.mkdir(parents=True, exist_ok=True)
    wp = tmp_path / "weights.safetensors"
    save_weights(wp, weights, config)
    return export_package(wp, tmp_path, name=name, **kw)


@pytest.fixture(scope="session")
def big_model(tmp_path_factory):
    """A random 128x4 (d_state 16) model package with plausible front-end stats."""
    from models import frontend
    from models.verify import test_signal

    c = MambaConfig(d_model=128, n_layers=4, d_state=16, labels=[f"c{i}" for i in range(16)])
    w = init_weights(c, seed=5)
    lm = frontend.logmel(test_signal(300, seed=3))
    w["frontend.mean"] = lm.mean(0).astype(np.float32)
    w["frontend.std"] = np.maximum(lm.std(0), 0.5).astype(np.float32)
    d = tmp_path_factory.mktemp("big")
    path = export_to(d, w, c, name="big")
    return path, w, c


@pytest.fixture(scope="session")
def tiny_model():
    from models.weights import load_weights

    w, c = load_weights(TINY_DIR / "weights.safetensors")
    return TINY_DIR / "step.onnx", w, c
