"""Per-class decision thresholds from frame scores (shared by training and evaluation)."""

from __future__ import annotations

import numpy as np


def tune_thresholds_frames(s: np.ndarray, y: np.ndarray, classes: list[str]) -> dict[str, float]:
    """Per class, the grid 0.1..0.9 (33 steps) threshold with the best frame F1, clamped to
    [0.15, 0.85]. ``s``: scores [frames, C]; ``y``: targets [frames, C]."""
    th = {}
    grid = np.linspace(0.1, 0.9, 33)
    for k, c in enumerate(classes):
        best, bt = -1, 0.5
        for t in grid:
            pr = s[:, k] >= t
            tp = (pr & (y[:, k] > 0)).sum()
            f1 = 2 * tp / max(1, pr.sum() + (y[:, k] > 0).sum())
            if f1 > best:
                best, bt = f1, float(t)
        th[c] = round(min(max(bt, 0.15), 0.85), 3)
    return th
