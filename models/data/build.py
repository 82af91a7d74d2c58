#!/usr/bin/env python3
"""Build the mambatag default-model data set from allowlisted Debian packages + synthesis.

    python3 models/data/build.py fetch      # apt-get download pinned .debs, check sha256, dpkg -x
    python3 models/data/build.py bundle     # label, split by source, decode to 16 kHz, synthesize,
                                            # encode Opus shards -> .data/bundle/
    python3 models/data/build.py all        # both
    (`all` runs `python3 models/data/mine.py score` between them when its output is missing: the YAMNet teacher scores
    that cut the mined long recordings of labels.toml's teacher_min rules; bundle also uses the
    teacher to vet synthetic impacts/tools)
    python3 models/data/build.py pin        # (maintainer) rewrite manifest.json from the .debs
                                            # currently in .data/debs

Outputs (never committed; .data/ is git-ignored):
    .data/debs/*.deb               downloaded packages (sha256-checked against manifest.json)
    .data/x/<package>/...          extracted packages (0ad-data: public.zip audio/ extracted to
                                   .data/x/0ad-data/public_zip/audio/)
    .data/bundle/index.json        one record per clip: split, role, labels, source, shard offsets
    .data/bundle/audio/*.ogg       16 kHz mono Ogg/Opus shards (clips separated by 0.25 s silence)
    .data/bundle/stats.json        minutes per class / split / real vs synthetic; licenses
    .data/bundle/stats.md          the same as a markdown table (goes into the model card)

Only the packages listed in manifest.json are ever downloaded (the allowlist of the issue).
"""
from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from concurrent.futures import ProcessPoolExecutor

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import synth  # noqa: E402

REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
DATA = os.environ.get("MAMBATAG_DATA", os.path.join(REPO, ".data"))
SR = 16000
AUDIO_EXT = (".wav", ".ogg", ".flac", ".opus", ".aiff", ".aif", ".mp3")
ALLOWLIST = [
    "tuxpaint-stamps-default", "asterisk-core-sounds-en-wav", "asterisk-core-sounds-es-wav",
    "asterisk-core-sounds-fr-wav", "asterisk-core-sounds-ru-wav", "wesnoth-1.16-music", "0ad-data",
    "hedgewars-data", "flightgear-data-base", "lomiri-sounds", "sonic-pi-samples",
    "bucklespring-data", "alsa-utils", "fillets-ng-data-cs", "fillets-ng-data-nl",
    "warzone2100-music", "supertuxkart-data", "torcs-data", "hydrogen-drumkits", "klettres-data",
]

# Caps that keep the bundle small (seconds). Per file: long tracks contribute one excerpt.
MAX_CLIP_S = {"speech": 12.0, "music": 20.0, "other": 20.0, "distractor": 6.0, "background": 30.0}
# Per (package, split) speech cap in seconds: speech is abundant, keep it balanced by source.
SPEECH_CAP_S = {"train": 420.0, "val": 50.0}
SPEECH_CAP_VAL_PACKAGE_S = 360.0      # the held-out speech package (asterisk fr)
VAL_MUSIC_S = 12.0                    # validation music clips are 12 s excerpts
HYDROGEN_MAX_FILES = 120              # single drum hits: enough is enough
DISTRACTOR_CAP_S = 600.0
MINED_TOTAL_S = 120.0                 # per long recording cut into teacher-confirmed pieces
CLASSES = ["speech", "music", "animal", "alarm", "vehicle", "tools", "impact", "weather"]
SYNTH = {"speech_n": 260, "music_n": 55, "music_s": 18.0, "alarm_n": 70, "alarm_s": 6.0,
         "weather_n": 36, "weather_s": 15.0,
         # impact / tools: many candidates, kept only where the teacher hears the intended class
         "impact_try": 500, "impact_s": 3.0, "tools_try": 800, "tools_s": 6.0, "vet_min": 0.3}
BITRATE = {"speech": "16k", "default": "24k"}


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def load_manifest() -> dict:
    with open(os.path.join(HERE, "manifest.json")) as f:
        return json.load(f)


# ------------------------------------------------------------------------------------ fetch

def copyright_licenses(pkgdir: str, name: str) -> list[str]:
    p = os.path.join(pkgdir, "usr/share/doc", name, "copyright")
    if not os.path.exists(p):
        return []
    lic = []
    for line in open(p, encoding="utf-8", errors="replace"):
        if line.startswith("License:"):
            v = line.split(":", 1)[1].strip()
            if v and v not in lic:
                lic.append(v)
    return lic


def fetch(args) -> None:
    man = load_manifest()
    debs = os.path.join(DATA, "debs")
    xdir = os.path.join(DATA, "x")
    os.makedirs(debs, exist_ok=True)
    os.makedirs(xdir, exist_ok=True)
    for name, ent in man["packages"].items():
        assert name in ALLOWLIST, f"{name} is not on the allowlist"
        deb = os.path.join(debs, ent["filename"])
        if not os.path.exists(deb) or sha256(deb) != ent["sha256"]:
            print(f"[fetch] apt-get download {name}={ent['version']}", flush=True)
            subprocess.run(["apt-get", "download", f"{name}={ent['version']}"], cwd=debs, check=True)
        got = sha256(deb)
        if got != ent["sha256"]:
            raise SystemExit(f"sha256 mismatch for {deb}: {got} != {ent['sha256']}")
        out = os.path.join(xdir, name)
        if not os.path.exists(os.path.join(out, ".extracted")):
            print(f"[fetch] dpkg -x {ent['filename']}", flush=True)
            os.makedirs(out, exist_ok=True)
            subprocess.run(["dpkg", "-x", deb, out], check=True)
            open(os.path.join(out, ".extracted"), "w").write(ent["sha256"])
        if name == "0ad-data":
            zdst = os.path.join(out, "public_zip")
            if not os.path.exists(os.path.join(zdst, ".extracted")):
                zp = os.path.join(out, "usr/share/games/0ad/mods/public/public.zip")
                with zipfile.ZipFile(zp) as z:
                    for m in z.namelist():
                        if m.startswith("audio/") and m.lower().endswith(AUDIO_EXT):
                            z.extract(m, zdst)
                open(os.path.join(zdst, ".extracted"), "w").write("ok")
    print("[fetch] done")


def pin(args) -> None:
    """Write manifest.json from the .debs present in .data/debs (maintainer helper)."""
    debs = os.path.join(DATA, "debs")
    pk = {}
    for fn in sorted(os.listdir(debs)):
        if not fn.endswith(".deb"):
            continue
        p = os.path.join(debs, fn)
        name = subprocess.run(["dpkg-deb", "-f", p, "Package"], capture_output=True, text=True).stdout.strip()
        ver = subprocess.run(["dpkg-deb", "-f", p, "Version"], capture_output=True, text=True).stdout.strip()
        if name not in ALLOWLIST:
            continue
        lic = copyright_licenses(os.path.join(DATA, "x", name), name)
        pk[name] = {"version": ver, "filename": fn, "sha256": sha256(p), "size": os.path.getsize(p),
                    "copyright_file": f"usr/share/doc/{name}/copyright", "licenses_in_copyright": lic}
    missing = sorted(set(ALLOWLIST) - set(pk))
    man = {"about": "Pinned Debian packages (bookworm) used for the mambatag default model. "
                    "fetch: apt-get download NAME=VERSION, then sha256 must match.",
           "distribution": "debian bookworm main", "packages": pk}
    with open(os.path.join(HERE, "manifest.json"), "w") as f:
        json.dump(man, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"pinned {len(pk)} packages; missing {missing}")


# ------------------------------------------------------------------------------------ label

def load_rules() -> dict:
    with open(os.path.join(HERE, "labels.toml"), "rb") as f:
        return tomllib.load(f)


def group_key(pkg: str, rel: str) -> str:
    stem = os.path.splitext(os.path.basename(rel))[0]
    d = os.path.dirname(rel)
    if pkg == "tuxpaint-stamps-default":
        stem = stem.split("_desc")[0]
        stem = re.sub(r"_(filled|outline)(_en_GB)?$", "", stem)
    elif pkg.startswith("hedgewars") and "/voices/" in rel:
        stem = re.sub(r"\d+$", "", stem)  # Ow1/Ow2 ... ; voice packs are separate groups by dir
    else:
        stem = re.sub(r"([ _\-]?\d+[a-z]?)+$", "", stem) or stem
    return f"{pkg}:{d}/{stem}"


def hash01(s: str) -> float:
    return int(hashlib.sha1(s.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def label_files() -> list[dict]:
    cfg = load_rules()
    rules = cfg["rule"]
    xdir = os.path.join(DATA, "x")
    recs = []
    for pkg in ALLOWLIST:
        root = os.path.join(xdir, pkg)
        if not os.path.isdir(root):
            raise SystemExit(f"{root} missing: run build.py fetch first")
        for dp, dns, fns in os.walk(root):
            dns.sort()
            for fn in sorted(fns):
                if not fn.lower().endswith(AUDIO_EXT):
                    continue
                full = os.path.join(dp, fn)
                rel = os.path.relpath(full, root)
                key = f"{pkg}/{rel}"
                rule = next((r for r in rules if fnmatch.fnmatchcase(key, r["glob"])), None)
                if rule is None or rule["role"] == "skip":
                    continue
                labels = list(rule.get("labels", []))
                g = group_key(pkg, rel)
                if rule.get("train_only", False):
                    split = "train"      # mined with the teacher: never scored in validation
                elif pkg in cfg["val_packages"]:
                    split = "val"
                else:
                    frac = cfg["val_fraction"] if (not labels or labels[0] in ("speech", "music")) \
                        else cfg["val_fraction_small"]
                    split = "val" if hash01(g) < frac else "train"
                rec = {"pkg": pkg, "path": rel, "labels": labels, "role": rule["role"],
                       "loop": bool(rule.get("loop", False)), "group": g, "split": split,
                       "synthetic": False}
                if rule.get("teacher_min") is not None:
                    rec["teacher_min"] = float(rule["teacher_min"])
                    rec["mined"] = True
                elif rule.get("train_only", False):
                    rec["mined"] = True
                recs.append(rec)
    return recs


def select(recs: list[dict]) -> list[dict]:
    """Apply caps so the bundle stays small (deterministic order by hash)."""
    cfg = load_rules()
    out = []
    by = {}
    per_group = {}
    kept = []
    for r in sorted(recs, key=lambda r: hash01(r["path"])):
        if r["split"] == "val" and r["pkg"] not in cfg["val_packages"] and "speech" not in r["labels"]:
            per_group[r["group"]] = per_group.get(r["group"], 0) + 1
            if per_group[r["group"]] > cfg["val_max_per_group"]:
                continue
        kept.append(r)
    for r in kept:
        by.setdefault((r["pkg"], r["split"], "speech" if "speech" in r["labels"] else
                       ("hyd" if r["pkg"] == "hydrogen-drumkits" else "x")), []).append(r)
    for (pkg, split, kind), rs in sorted(by.items()):
        rs = sorted(rs, key=lambda r: hash01(r["path"]))
        if kind == "hyd":
            rs = rs[:HYDROGEN_MAX_FILES if split == "train" else HYDROGEN_MAX_FILES // 3]
        used = 0.0
        for r in rs:
            if kind == "speech":
                cap = SPEECH_CAP_VAL_PACKAGE_S if pkg in cfg["val_packages"] else SPEECH_CAP_S[split]
                if used >= cap * 1.15:   # header durations include silence that gets trimmed
                    break
                used += min(_duration(os.path.join(DATA, "x", pkg, r["path"])), MAX_CLIP_S["speech"])
                r["_cap"] = cap
            out.append(r)
    return out


def _duration(path: str) -> float:
    try:
        import soundfile as sf
        return sf.info(path).duration
    except Exception:  # noqa: BLE001
        return 3.0


# ------------------------------------------------------------------------------------ decode

def decode_any(path: str) -> np.ndarray:
    try:
        import soundfile as sf
        x, sr = sf.read(path, dtype="float32", always_2d=True)
        x = x.mean(axis=1)
        if sr != SR:
            from scipy.signal import resample_poly
            from math import gcd
            g = gcd(sr, SR)
            x = resample_poly(x, SR // g, sr // g).astype(np.float32)
        return x
    except Exception:
        return synth.decode(path, SR)


def excerpt(x: np.ndarray, max_s: float, key: str, loop: bool) -> np.ndarray:
    n = int(max_s * SR)
    if len(x) <= n:
        return x
    if loop:
        return x[:n]
    # skip the first 10 % (intros/silence) when picking a window in long tracks
    lo = min(len(x) - n, int(0.1 * len(x)))
    off = lo + int(hash01(key) * (len(x) - n - lo))
    return x[off:off + n]


def trim_silence(x: np.ndarray, thr_db: float = -50.0) -> np.ndarray:
    if len(x) == 0:
        return x
    a = np.abs(x)
    thr = max(a.max() * 10 ** (thr_db / 20), 1e-4)
    nz = np.nonzero(a > thr)[0]
    if len(nz) == 0:
        return x[:0]
    return x[max(0, nz[0] - 160): nz[-1] + 160]


def teacher_segments(x: np.ndarray, scores: dict, cls: str, thr: float, max_s: float,
                     total_s: float) -> list[np.ndarray]:
    """Pieces of x where the teacher's patch score for `cls` is >= thr: each 0.96 s patch that
    passes marks its window, touching windows merge, pieces are cut to <= max_s and at most
    total_s seconds are kept per file (in time order)."""
    k = CLASSES.index(cls)
    s = np.array(scores["scores"])[:, k]
    ends = np.array(scores["patch_end_s"])
    on = np.zeros(len(x) // 160 + 1, bool)
    for e, v in zip(ends, s):
        if v >= thr:
            on[max(0, int((e - 0.975) * 100)):int(e * 100)] = True
    out, used = [], 0.0
    idx = np.flatnonzero(np.diff(np.concatenate([[0], on.astype(np.int8), [0]])))
    for a, b in zip(idx[::2], idx[1::2]):
        for c in range(a, b, int(max_s * 100)):
            d = min(b, c + int(max_s * 100))
            if d - c < 100 or used >= total_s:   # pieces under 1 s are dropped
                continue
            out.append(x[c * 160:d * 160])
            used += (d - c) / 100
    return out


def _decode_job(args):
    r, xdir, tscores = args
    full = os.path.join(xdir, r["pkg"], r["path"])
    try:
        x = decode_any(full)
    except Exception as e:  # noqa: BLE001
        return [(r, None, str(e))]
    if r.get("teacher_min") is not None:
        pieces = teacher_segments(x, tscores, r["labels"][0], r["teacher_min"], MAX_CLIP_S["other"],
                                  MINED_TOTAL_S)
        out = []
        for j, p in enumerate(pieces):
            rr = dict(r, path=f"{r['path']}#{j}")
            rr.pop("teacher_min")
            p = p / max(np.abs(p).max(), 1e-6) * 0.9
            out.append((rr, p.astype(np.float32), None))
        return out or [(r, None, "no teacher-confirmed segment")]
    return [_decode_one(r, x)]


def _decode_one(r, x):
    x = trim_silence(x)
    kind = "speech" if "speech" in r["labels"] else ("music" if "music" in r["labels"] else
                                                      ("distractor" if r["role"] == "distractor" else
                                                       ("background" if r["role"] == "background" else "other")))
    max_s = MAX_CLIP_S[kind] if not (kind == "music" and r["split"] == "val") else VAL_MUSIC_S
    x = excerpt(x, max_s, r["path"], r["loop"])
    if len(x) < int(0.03 * SR) or np.abs(x).max() < 1e-3:
        return r, None, "empty"
    x = x / max(np.abs(x).max(), 1e-6) * 0.9   # peak-normalise; the mixer sets levels
    return r, x.astype(np.float32), None


# ------------------------------------------------------------------------------------ synth

def synth_records(rng: np.random.Generator) -> list[tuple[dict, np.ndarray]]:
    out = []
    for a, desc in synth.synth_speech(rng, SYNTH["speech_n"]):
        a = trim_silence(a)
        out.append(({"pkg": "synth:espeak-ng", "path": desc, "labels": ["speech"], "role": "event",
                     "loop": False, "split": "train", "synthetic": True}, a))
    for i in range(SYNTH["music_n"]):
        a, desc = synth.synth_music(rng, SYNTH["music_s"])
        out.append(({"pkg": "synth:fluidsynth", "path": desc, "labels": ["music"], "role": "event",
                     "loop": False, "split": "train", "synthetic": True}, trim_silence(a)))
    for i in range(SYNTH["alarm_n"]):
        a, desc = synth.synth_alarm(rng, SYNTH["alarm_s"])
        out.append(({"pkg": "synth:generated", "path": desc, "labels": ["alarm"], "role": "event",
                     "loop": True, "split": "train", "synthetic": True}, a))
    for i in range(SYNTH["weather_n"]):
        a, desc = synth.synth_weather(rng, SYNTH["weather_s"])
        out.append(({"pkg": "synth:generated", "path": desc, "labels": ["weather"], "role": "event",
                     "loop": True, "split": "train", "synthetic": True}, a))
    out += vetted_synth(rng)
    for i, (r, a) in enumerate(out):
        r["group"] = f"{r['pkg']}:{i}"
        m = max(np.abs(a).max(), 1e-6)
        out[i] = (r, (a / m * 0.9).astype(np.float32))
    return out


def vetted_synth(rng: np.random.Generator) -> list[tuple[dict, np.ndarray]]:
    """Synthetic impacts and tools (synth.synth_impact / synth_tools), kept only where the YAMNet
    teacher's score for the intended class is >= vet_min and the highest of the six small
    classes: a listening proxy that drops the renderings that do not sound like the class."""
    sys.path.insert(0, os.path.join(REPO, "models", "eval"))
    import yamnet_baseline as yb
    ym = yb.YamNet(threads=1)
    out = []
    for cls, fn, n, sec in (("impact", synth.synth_impact, SYNTH["impact_try"], SYNTH["impact_s"]),
                            ("tools", synth.synth_tools, SYNTH["tools_try"], SYNTH["tools_s"])):
        k = CLASSES.index(cls)
        kept = 0
        for _ in range(n):
            a, desc = fn(rng, sec)
            sc, _ = ym.scores(a * 0.5)
            mx = sc.max(0)
            if mx[k] >= SYNTH["vet_min"] and mx[k] >= mx[2:].max():
                a = trim_silence(a)
                out.append(({"pkg": "synth:generated", "path": f"{desc} (teacher {mx[k]:.2f})", "labels": [cls],
                             "role": "event", "loop": False, "split": "train", "synthetic": True,
                             "teacher_vetted": True}, a))
                kept += 1
        print(f"[bundle] synthetic {cls}: kept {kept} of {n} (teacher-vetted)", flush=True)
    return out


# ------------------------------------------------------------------------------------ shards

def write_shards(items: list[tuple[dict, np.ndarray]], outdir: str) -> list[dict]:
    """Concatenate clips into ~10-minute Opus shards per (split, codec class)."""
    import shutil
    shutil.rmtree(os.path.join(outdir, "audio"), ignore_errors=True)   # no stale shards
    os.makedirs(os.path.join(outdir, "audio"), exist_ok=True)
    gap = np.zeros(int(0.25 * SR), np.float32)
    buckets = {}
    for r, a in items:
        kind = "speech" if r["labels"] == ["speech"] else "default"
        buckets.setdefault((r["split"], kind), []).append((r, a))
    index = []
    for (split, kind), its in sorted(buckets.items()):
        shard_i = 0
        cur, cur_n, cur_recs = [gap], len(gap), []
        def flush():
            nonlocal shard_i, cur, cur_n, cur_recs
            if not cur_recs:
                return
            name = f"{split}_{kind}_{shard_i:02d}.ogg"
            pcm = (np.clip(np.concatenate(cur), -1, 1) * 32767).astype("<i2")
            dst = os.path.join(outdir, "audio", name)
            subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "s16le", "-ar", str(SR),
                            "-ac", "1", "-i", "-", "-c:a", "libopus", "-b:a", BITRATE[kind],
                            "-application", "audio", dst], input=pcm.tobytes(), check=True)
            for rr in cur_recs:
                rr["shard"] = name
            index.extend(cur_recs)
            shard_i += 1
            cur, cur_n, cur_recs = [gap], len(gap), []
        for r, a in its:
            r = dict(r)
            r["start"] = cur_n
            r["n"] = len(a)
            r["dur"] = round(len(a) / SR, 3)
            cur.append(a)
            cur.append(gap)
            cur_n += len(a) + len(gap)
            cur_recs.append(r)
            if cur_n > 600 * SR:
                flush()
        flush()
    return index


def stats(index: list[dict], man: dict) -> dict:
    cls = load_rules()["classes"]
    st = {"minutes": {}, "clips": {}}
    for r in index:
        labs = r["labels"] if r["role"] == "event" else [r["role"]]
        for lab in labs:
            k = f"{lab}|{r['split']}|{'synthetic' if r['synthetic'] else 'real'}"
            st["minutes"][k] = st["minutes"].get(k, 0.0) + r["dur"] / 60
            st["clips"][k] = st["clips"].get(k, 0) + 1
    rows = ["| class | train real min (clips) | train synthetic min (clips) | synthetic share of train | val real min (clips) |",
            "|---|---|---|---|---|"]
    for lab in cls + ["distractor", "background"]:
        def g(sp, kind):
            k = f"{lab}|{sp}|{kind}"
            return st["minutes"].get(k, 0.0), st["clips"].get(k, 0)
        tr, trn = g("train", "real")
        sy, syn = g("train", "synthetic")
        va, van = g("val", "real")
        share = sy / (tr + sy) if tr + sy else 0
        rows.append(f"| {lab} | {tr:.1f} ({trn}) | {sy:.1f} ({syn}) | {share:.0%} | {va:.1f} ({van}) |")
    per_pkg = {}
    for r in index:
        per_pkg.setdefault(r["pkg"], [0, 0.0])
        per_pkg[r["pkg"]][0] += 1
        per_pkg[r["pkg"]][1] += r["dur"] / 60
    st["per_source"] = {k: {"clips": v[0], "minutes": round(v[1], 2)} for k, v in sorted(per_pkg.items())}
    st["table_md"] = "\n".join(rows)
    return st


def bundle(args) -> None:
    man = load_manifest()
    xdir = os.path.join(DATA, "x")
    outdir = os.path.join(DATA, "bundle")
    recs = select(label_files())
    print(f"[bundle] {len(recs)} labelled files selected", flush=True)
    items = []
    used_s = {}
    errors = []
    tsc = {}
    if any(r.get("teacher_min") is not None for r in recs):
        import mine
        if not os.path.exists(mine.OUT):
            raise SystemExit(f"{mine.OUT} missing: run `python3 models/data/mine.py score` first")
        tsc = mine.load_scores()
    jobs = [(r, xdir, tsc.get(f"{r['pkg']}/{r['path']}")) for r in recs]
    with ProcessPoolExecutor(max_workers=args.jobs) as ex:
        results = [t for lst in ex.map(_decode_job, jobs, chunksize=16) for t in lst]
        for r, x, err in results:
            if x is None:
                errors.append((r["pkg"], r["path"], err))
                continue
            if "_cap" in r:
                k = (r["pkg"], r["split"])
                if used_s.get(k, 0.0) >= r["_cap"]:
                    continue
                used_s[k] = used_s.get(k, 0.0) + len(x) / SR
                del r["_cap"]
            if r["role"] == "distractor":
                k = ("distractor", r["split"])
                if used_s.get(k, 0.0) >= DISTRACTOR_CAP_S:
                    continue
                used_s[k] = used_s.get(k, 0.0) + len(x) / SR
            items.append((r, x))
    print(f"[bundle] decoded {len(items)} clips; {len(errors)} skipped (empty/undecodable)", flush=True)
    if not args.no_synth:
        rng = np.random.default_rng(20261129)
        print("[bundle] synthesizing (espeak-ng, fluidsynth, generated alarms/weather)", flush=True)
        items += synth_records(rng)
    for i, (r, _) in enumerate(items):
        r["id"] = i
    index = write_shards(items, outdir)
    index.sort(key=lambda r: r["id"])
    st = stats(index, man)
    cfg = load_rules()
    meta = {"sample_rate": SR, "classes": cfg["classes"], "val_packages": cfg["val_packages"],
            "clips": index}
    with open(os.path.join(outdir, "index.json"), "w") as f:
        json.dump(meta, f, ensure_ascii=False)
    with open(os.path.join(outdir, "stats.json"), "w") as f:
        json.dump({**st, "skipped": errors[:200], "n_skipped": len(errors)}, f, indent=1, ensure_ascii=False)
    with open(os.path.join(outdir, "stats.md"), "w") as f:
        f.write(st["table_md"] + "\n")
    size = sum(os.path.getsize(os.path.join(outdir, "audio", fn)) for fn in os.listdir(os.path.join(outdir, "audio")))
    print(st["table_md"])
    print(f"[bundle] {len(index)} clips, audio {size / 2**20:.1f} MiB in {outdir}")


def missing_tools(cmd: str, no_synth: bool = False) -> list[str]:
    """What step ``cmd`` needs and this machine lacks: programs on PATH and the GM soundfont
    (``scripts/data-deps.sh`` installs them all)."""
    import shutil
    need = ["apt-get", "dpkg-deb"] if cmd in ("fetch", "all", "pin") else []
    if cmd in ("bundle", "all"):
        need.append("ffmpeg")
        if not no_synth:
            need += ["espeak-ng", "fluidsynth"]
    out = [t for t in need if shutil.which(t) is None]
    if cmd in ("bundle", "all") and not no_synth and not any(map(os.path.exists, synth.SOUNDFONT_CANDIDATES)):
        out.append("fluid-soundfont-gm (" + ", ".join(synth.SOUNDFONT_CANDIDATES) + ")")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["fetch", "bundle", "all", "pin"])
    ap.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2)))
    ap.add_argument("--no-synth", action="store_true")
    a = ap.parse_args()
    lack = missing_tools(a.cmd, a.no_synth)
    if lack:
        ap.error(f"{a.cmd}: missing {', '.join(lack)}; install them with scripts/data-deps.sh")
    if a.cmd in ("fetch", "all"):
        fetch(a)
    if a.cmd == "all":
        import mine
        if not os.path.exists(mine.OUT):
            mine.score(a)
    if a.cmd in ("bundle", "all"):
        bundle(a)
    if a.cmd == "pin":
        pin(a)


if __name__ == "__main__":
    main()
