"""Average the weights of several checkpoints of one model (a uniform "model soup"), numpy only.

    python3 -m models.soup OUT.safetensors IN.safetensors IN.safetensors [...]

Every input must have the same config (architecture and labels) and the same front-end
normalisation (``frontend.mean``/``frontend.std``: they define the features the weights were
trained on, so checkpoints that disagree on them are not points of one model). The output is the
element-wise mean of every other tensor, in float64 and stored as float32, with the inputs'
sha256 and file names in its metadata under ``soup``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from models.data.build import sha256
from models.weights import load_weights, save_weights

FRONTEND = ("frontend.mean", "frontend.std")


def soup(paths: list[str]) -> tuple[dict[str, np.ndarray], object]:
    """The mean of the checkpoints at ``paths`` and their (shared) config. ValueError naming the
    file and the difference when they are not checkpoints of one model."""
    if len(paths) < 2:
        raise ValueError(f"a soup needs at least two checkpoints, got {len(paths)}")
    first, config = load_weights(paths[0])
    acc = {k: v.astype(np.float64) for k, v in first.items()}
    for p in paths[1:]:
        w, c = load_weights(p)
        if c != config:
            raise ValueError(f"{p}: config differs from {paths[0]}'s ({c} vs {config})")
        for k in FRONTEND:
            if not np.array_equal(w[k], first[k]):
                raise ValueError(f"{p}: {k} differs from {paths[0]}'s; checkpoints with different "
                                 f"front-end normalisation are not points of one model")
        for k, v in w.items():
            acc[k] += v
    n = len(paths)
    return {k: (v / n).astype(np.float32) for k, v in acc.items()}, config


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("inputs", nargs="+")
    a = ap.parse_args(argv)
    try:
        weights, config = soup(a.inputs)
    except (ValueError, OSError) as e:
        print(f"soup: {e}", file=sys.stderr)
        return 2
    meta = [{"file": os.path.basename(p), "sha256": sha256(p)} for p in a.inputs]
    save_weights(a.out, weights, config, {"soup": json.dumps(meta)})
    print(f"soup: mean of {len(a.inputs)} checkpoints -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
