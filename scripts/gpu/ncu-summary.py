#!/usr/bin/env python3
"""Summarise an Nsight Compute CSV (`ncu --metrics gpu__time_duration.sum --csv ...`): GPU time
per kernel (and, with --grid, per launch geometry), largest first, in µs.
Usage: python3 ncu-summary.py NCU.csv [--grid] [--top N]"""
import argparse
import collections
import csv

ap = argparse.ArgumentParser()
ap.add_argument("csv")
ap.add_argument("--grid", action="store_true", help="group by kernel, grid and block size")
ap.add_argument("--top", type=int, default=40)
a = ap.parse_args()
rows = [r for r in csv.reader(open(a.csv)) if len(r) > 10]
hdr, rows = rows[0], rows[1:]
ki, vi, ui = hdr.index("Kernel Name"), hdr.index("Metric Value"), hdr.index("Metric Unit")
gi = hdr.index("Grid Size") if a.grid and "Grid Size" in hdr else None
bi = hdr.index("Block Size") if a.grid and "Block Size" in hdr else None
# ncu writes the unit it chose per value ("ns"/"nsecond", "us"/"usecond", "ms"/"msecond")
scale = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3,
         "second": 1e6, "s": 1e6}
tot = collections.defaultdict(float)
cnt = collections.Counter()
for r in rows:
    v = float(r[vi].replace(",", "")) * scale.get(r[ui], float("nan"))
    k = (r[ki][:90], r[gi] if gi is not None else "", r[bi] if bi is not None else "")
    tot[k] += v
    cnt[k] += 1
allt = sum(tot.values())
print(f"{len(rows)} launches (units {sorted(set(r[ui] for r in rows))}), {allt:.1f} us total")
for k, v in sorted(tot.items(), key=lambda kv: -kv[1])[:a.top]:
    where = f"  grid {k[1]} block {k[2]}" if gi is not None else ""
    print(f"{v / cnt[k]:10.2f} us x {cnt[k]:4d}  {100 * v / max(allt, 1e-9):5.1f} %{where}  {k[0]}")
