"""Metrics shared by training and evaluation: average precision and per-class thresholds."""

from __future__ import annotations

import numpy as np


def average_precision(y, s) -> float:
    """Step-wise AP as sklearn's ``average_precision_score``: sum over distinct score thresholds
    of (recall gain) x (precision at that threshold); NaN when there is no positive. Tied scores
    form one threshold, so the result does not depend on the order of the items (saturated
    sigmoids give exact ties)."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(s, dtype=np.float64)
    if y.sum() == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # last index of each tie group
    tp = np.cumsum(y)[last]
    prec = tp / (last + 1)
    gain = np.diff(np.r_[0, tp])
    return float((prec * gain).sum() / y.sum())


def tune_thresholds_frames(s: np.ndarray, y: np.ndarray, classes: list[str],
                           f1_tolerance: float = 0.0) -> dict[str, float]:
    """Per class, the grid 0.1..0.9 (33 steps) threshold with the best frame F1, clamped to
    [0.15, 0.85]. ``s``: scores [frames, C]; ``y``: targets [frames, C].

    ``f1_tolerance`` > 0 trades a little F1 for detection delay: the LOWEST grid threshold whose
    frame F1 is at least ``(1 - f1_tolerance)`` times the best (a lower threshold is crossed
    earlier in a rising score)."""
    th = {}
    grid = np.linspace(0.1, 0.9, 33)
    for k, c in enumerate(classes):
        f1s = []
        for t in grid:
            pr = s[:, k] >= t
            tp = (pr & (y[:, k] > 0)).sum()
            f1s.append(2 * tp / max(1, pr.sum() + (y[:, k] > 0).sum()))
        f1s = np.asarray(f1s, dtype=np.float64)
        best = int(np.argmax(f1s))  # the first (lowest) of equal maxima, as before
        if f1_tolerance > 0:
            best = int(np.flatnonzero(f1s >= (1.0 - f1_tolerance) * f1s[best])[0])
        th[c] = round(min(max(float(grid[best]), 0.15), 0.85), 3)
    return th
