#!/usr/bin/env python3
"""Re-tune a weights file's onset thresholds exactly as models/train.py does at the end of a run
(per-class frame-F1 optimum on 48 eval-mode + 48 train-mode 30 s scenes from the TRAIN pool,
seed 4321; never validation), on CPU. For runs whose own tuning used fewer scenes.

    python3 models/eval/retune_thresholds.py WEIGHTS [--bundle .data/bundle] [--f1-tolerance 0.05] > thresholds.json
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "models", "data"))
from models import train  # noqa: E402
from models.mamba import MambaTagger  # noqa: E402
import pool as poolmod  # noqa: E402
import scenes  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("weights")
    ap.add_argument("--bundle", default=os.path.join(REPO, ".data", "bundle"))
    ap.add_argument("--val-scenes", type=int, default=48, help="as train.py --val-scenes")
    ap.add_argument("--f1-tolerance", type=float, default=0.0,
                    help="per class, the lowest threshold whose frame F1 is within this fraction of the "
                         "best (earlier detection for a little F1; 0: the F1 optimum, train.py's rule)")
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    model = MambaTagger.from_safetensors(a.weights)
    model.frontend.compute_dtype = torch.float32
    tr = poolmod.load_bundle(a.bundle, "train")
    mixer = scenes.SceneMixer(tr, "cpu")
    L = int(30.0 * train.SR) // train.HOP * train.HOP
    nb = max(1, a.val_scenes // 8)
    trng = np.random.default_rng(4321)
    thr = [mixer.generate(min(8, a.val_scenes), L, trng, mode="eval") for _ in range(nb)]
    thr += [mixer.generate(min(8, a.val_scenes), L, trng, mode="train") for _ in range(nb)]
    th = train.tune_thresholds(model, thr, tr.classes, f1_tolerance=a.f1_tolerance)
    print(json.dumps(th))


if __name__ == "__main__":
    main()
