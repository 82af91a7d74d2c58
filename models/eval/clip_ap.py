#!/usr/bin/env python3
"""Clip-level AP of safetensors weights (torch, CPU), for comparing training runs quickly.

    python3 -m models.eval.clip_ap W1.safetensors [W2 ...] [--split train|val] [--max-clips 1500]

The protocol of ``evaluate.py``'s clip part (each real clip alone from a fresh state, padded with
digital silence to 1 s, clip score = max over frames), without ONNX export or YAMNet, on either
split. ``--split train`` scores the train split's REAL clips (synthetic ones left out) as isolated
clips. Training only ever sees them mixed into 30 s scenes over backgrounds, so this measures how
the scene-trained model carries over to sounds presented alone — without looking at validation.
That is how the 1.2.0 fine-tunes were compared and picked (MODEL_CARD.md). A random subset of
``--max-clips`` (seed 0) keeps it to about a minute per model on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "models", "data"))

from models.eval.evaluate import MIN_CLIP_S, frame_ap  # noqa: E402


def clip_scores(model, pool, idx):
    """[len(idx), C] max-over-frames scores, each clip alone from a zero state."""
    import torch
    out = []
    for i in idx:
        x = pool.audio[i]
        n = max(len(x), int(MIN_CLIP_S * 16000))
        n = -(-n // 160) * 160
        xx = np.zeros(n, np.float32)
        xx[:len(x)] = x
        with torch.no_grad():
            s = model(torch.from_numpy(xx)[None]).float()[0].numpy()
        out.append(s.max(0))
    return np.stack(out) if out else np.zeros((0, len(pool.classes)), np.float32)


def clip_ap(model, pool, max_clips=0, seed=0):
    idx = np.arange(len(pool))
    if max_clips and len(idx) > max_clips:
        idx = np.sort(np.random.default_rng(seed).permutation(idx)[:max_clips])
    ap, macro = frame_ap(clip_scores(model, pool, idx), pool.labels[idx], pool.classes)
    return {"n_clips": int(len(idx)), "ap": ap, "macro_ap": macro}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights", nargs="+")
    ap.add_argument("--bundle", default=os.path.join(REPO, ".data", "bundle"))
    ap.add_argument("--split", choices=["train", "val"], default="train")
    ap.add_argument("--max-clips", type=int, default=1500)
    a = ap.parse_args(argv)
    import torch
    import pool as poolmod
    from models.mamba import MambaTagger
    torch.set_num_threads(os.cpu_count() or 1)
    for w in a.weights:
        if not os.path.isfile(w):
            sys.exit(f"clip_ap: {w}: no such weights file")
    if not os.path.isfile(os.path.join(a.bundle, "index.json")):
        sys.exit(f"clip_ap: {a.bundle}: not a data bundle (no index.json); build one with "
                 "`python3 models/data/build.py fetch && python3 models/data/mine.py score && "
                 "python3 models/data/build.py bundle`")
    p = poolmod.load_bundle(a.bundle, a.split, include_synthetic=False)
    for w in a.weights:
        m = MambaTagger.from_safetensors(w)
        m.eval()
        m.frontend.compute_dtype = torch.float32
        r = clip_ap(m, p, a.max_clips)
        print(f"{w}: {a.split} {r['n_clips']} clips, macro AP {r['macro_ap']:.3f} | "
              + " ".join(f"{c} {v:.3f}" for c, v in r["ap"].items()), flush=True)


if __name__ == "__main__":
    main()
