"""Check an exported mambatag model against the contract and the numpy reference.

Usage::

    python -m models.verify PACKAGE_DIR_OR_ONNX [--weights W.safetensors] [--frames 1000] [--tol 1e-4]
        [--chunk CHUNK.onnx | --no-chunk]

1. **Contract** (CONTRACT.md §2, §6; what the Rust engine checks at load time): required
   ``mambatag.*`` metadata with valid values, input ``audio [B, hop]`` plus only ``state.*``
   inputs, every state with a ``<state>.next`` output of the same fixed trailing shape,
   ``scores [B, C]`` with ``C = len(labels)``, float32 everywhere, symbolic batch dimension.
2. **Runtime**: one zero-state call at B=2 gives the declared shapes, finite scores in [0, 1].
3. **Parity** (needs the weights: ``--weights`` or ``weights.safetensors`` next to the graph): the
   step graph run hop by hop with carried state over ``--frames`` frames of a test signal (chirp,
   noise, silence, loud clipping, clicks, near-silence) against ``reference.py``; prints the max
   abs error and fails above ``--tol``. Also checks batch rows are independent (B=3 vs 3 x B=1).
4. **Chunk graph** (``chunk.onnx`` beside the step graph, or ``--chunk``; CONTRACT.md §3): its
   contract (same states, labels and metadata as the step graph, plus ``mambatag.chunk_frames``),
   then the same test signal at B=2 (the second row a different signal) in calls of 1, 7, then
   ``chunk_frames`` hops with state carried, the last call shorter when ``T`` is symbolic (zero-
   padded when fixed): per-frame scores against the step graph's (and the reference's), fails
   above ``--tol``.

Exit status: 0 all good, 1 a check failed, 2 bad usage / unreadable files.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from models import frontend

CONTRACT_VERSIONS = ("1",)
REQUIRED_METADATA = ("mambatag.contract", "mambatag.graph", "mambatag.sample_rate", "mambatag.hop",
                     "mambatag.labels", "mambatag.thresholds", "mambatag.model_name",
                     "mambatag.model_version", "mambatag.license")
FLOAT = onnx.TensorProto.FLOAT


class ContractError(ValueError):
    """The model breaks the contract; ``problems`` lists every violation found."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("model breaks the mambatag contract:\n  - " + "\n  - ".join(self.problems))


@dataclass
class ContractInfo:
    graph: str
    sample_rate: int
    hop: int
    labels: list[str]
    thresholds: dict[str, float]
    states: dict[str, list[int]]  # name -> trailing (non-batch) shape
    metadata: dict[str, str]
    chunk_frames: int | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def n_classes(self) -> int:
        return len(self.labels)


def _dims(vi: onnx.ValueInfoProto):
    """``(elem_type, [int | str | None per dim])`` or ``(elem_type, None)`` when rank is unknown."""
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return t.elem_type, None
    out = []
    for d in t.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            out.append(d.dim_param)
        else:
            out.append(None)
    return t.elem_type, out


def _fmt(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]" if shape is not None else "unknown"


def _int(md, key, problems, positive=True):
    v = md.get(key)
    try:
        i = int(v)
        if str(i) != v.strip() or (positive and i <= 0):
            raise ValueError
        return i
    except (TypeError, ValueError, AttributeError):
        problems.append(f"metadata {key} must be a positive integer, got {v!r}")
        return None


def check_metadata(md: dict[str, str], expect_graph: str | None = None):
    """Validate the ``mambatag.*`` metadata; returns ``(fields dict, problems, warnings)``."""
    problems, warnings = [], []
    missing = [k for k in REQUIRED_METADATA if k not in md]
    if missing:
        problems.append("missing metadata " + ", ".join(missing))
    out = {"labels": [], "thresholds": {}, "graph": md.get("mambatag.graph"), "chunk_frames": None,
           "sample_rate": None, "hop": None}
    if "mambatag.contract" in md and md["mambatag.contract"] not in CONTRACT_VERSIONS:
        problems.append(f"metadata mambatag.contract is {md['mambatag.contract']!r}; "
                        f"this checker knows {', '.join(CONTRACT_VERSIONS)}")
    g = md.get("mambatag.graph")
    if g is not None and g not in ("step", "chunk"):
        problems.append(f"metadata mambatag.graph must be 'step' or 'chunk', got {g!r}")
    if expect_graph and g is not None and g != expect_graph:
        problems.append(f"metadata mambatag.graph is {g!r}, expected {expect_graph!r}")
    if "mambatag.sample_rate" in md:
        out["sample_rate"] = _int(md, "mambatag.sample_rate", problems)
        if out["sample_rate"] not in (None, frontend.SAMPLE_RATE):
            warnings.append(f"sample_rate {out['sample_rate']} differs from the front end's {frontend.SAMPLE_RATE}")
    if "mambatag.hop" in md:
        out["hop"] = _int(md, "mambatag.hop", problems)
    if "mambatag.labels" in md:
        try:
            labels = json.loads(md["mambatag.labels"])
            if (not isinstance(labels, list) or not labels
                    or not all(isinstance(x, str) and x.strip() for x in labels)):
                raise ValueError("must be a non-empty JSON array of non-empty strings")
            if len(set(labels)) != len(labels):
                raise ValueError("has duplicate labels")
            out["labels"] = labels
        except ValueError as e:
            problems.append(f"metadata mambatag.labels {e}: {md['mambatag.labels'][:80]!r}")
    if "mambatag.thresholds" in md:
        try:
            th = json.loads(md["mambatag.thresholds"])
            if not isinstance(th, dict):
                raise ValueError("must be a JSON object label -> threshold")
            if out["labels"]:
                miss = [l for l in out["labels"] if l not in th]
                extra = [k for k in th if k not in out["labels"]]
                if miss:
                    problems.append(f"metadata mambatag.thresholds lacks labels {miss}")
                if extra:
                    problems.append(f"metadata mambatag.thresholds names unknown labels {extra}")
            for k, v in th.items():
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0.0 < v < 1.0):
                    problems.append(f"metadata mambatag.thresholds[{k!r}] = {v!r} is not in (0, 1)")
            out["thresholds"] = {k: float(v) for k, v in th.items()
                                 if isinstance(v, (int, float)) and not isinstance(v, bool)}
        except ValueError as e:
            problems.append(f"metadata mambatag.thresholds {e}")
    for k in ("mambatag.model_name", "mambatag.model_version", "mambatag.license"):
        if k in md and not md[k].strip():
            problems.append(f"metadata {k} is empty")
    if g == "chunk":
        if "mambatag.chunk_frames" not in md:
            problems.append("missing metadata mambatag.chunk_frames (required for a chunk graph)")
        else:
            out["chunk_frames"] = _int(md, "mambatag.chunk_frames", problems)
    elif "mambatag.chunk_frames" in md:
        warnings.append("metadata mambatag.chunk_frames is only meaningful in a chunk graph")
    unknown = [k for k in md if k.startswith("mambatag.") and k not in REQUIRED_METADATA
               and k not in ("mambatag.description", "mambatag.chunk_frames")]
    if unknown:
        warnings.append("unknown metadata keys " + ", ".join(unknown))
    return out, problems, warnings


def check_contract(model, expect_graph: str | None = None) -> ContractInfo:
    """Check an ONNX model (path or ModelProto) against the contract; raise :class:`ContractError`."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    md = {p.key: p.value for p in model.metadata_props}
    f, problems, warnings = check_metadata(md, expect_graph)
    graph, hop, labels = f["graph"], f["hop"], f["labels"]
    init_names = {i.name for i in model.graph.initializer}
    inputs = {vi.name: _dims(vi) for vi in model.graph.input if vi.name not in init_names}
    outputs = {vi.name: _dims(vi) for vi in model.graph.output}
    batch_params = set()

    def batch_dim(kind, name, shape):
        if not shape:
            return
        if not isinstance(shape[0], str):
            problems.append(f"{kind} '{name}' {_fmt(shape)}: the batch dimension (first) must be symbolic")
        else:
            batch_params.add(shape[0])

    def float_tensor(kind, name, et, shape, rank):
        if et != FLOAT:
            problems.append(f"{kind} '{name}' must be float32 (ONNX elem_type {et})")
        if shape is None or len(shape) != rank:
            problems.append(f"{kind} '{name}' must have rank {rank}, has shape {_fmt(shape)}")
            return False
        return True

    # audio
    if "audio" not in inputs:
        problems.append("no input named 'audio'")
    else:
        et, shape = inputs["audio"]
        if float_tensor("input", "audio", et, shape, 2):
            batch_dim("input", "audio", shape)
            if graph == "chunk":
                if isinstance(shape[1], int) and hop and shape[1] % hop:
                    problems.append(f"input 'audio' {_fmt(shape)}: second dimension must be a multiple of hop {hop}")
            elif shape[1] != hop:
                problems.append(f"input 'audio' {_fmt(shape)}: second dimension must be the fixed hop "
                                f"{hop} (metadata mambatag.hop)")
    # states
    states = {}
    for name, (et, shape) in inputs.items():
        if name == "audio":
            continue
        if not name.startswith("state."):
            problems.append(f"unexpected input '{name}' (only 'audio' and 'state.*' inputs are allowed)")
            continue
        if et != FLOAT:
            problems.append(f"input '{name}' must be float32 (ONNX elem_type {et})")
        if shape is None or len(shape) < 2:
            problems.append(f"state input '{name}' must be [B, d1, ...], has shape {_fmt(shape)}")
            continue
        batch_dim("input", name, shape)
        trailing = shape[1:]
        if not all(isinstance(d, int) and d > 0 for d in trailing):
            problems.append(f"state input '{name}' {_fmt(shape)}: trailing dimensions must be fixed numbers")
            continue
        states[name] = trailing
        nxt = name + ".next"
        if nxt not in outputs:
            problems.append(f"state input '{name}' has no output '{nxt}'")
            continue
        oet, oshape = outputs[nxt]
        if oet != FLOAT:
            problems.append(f"output '{nxt}' must be float32 (ONNX elem_type {oet})")
        if oshape is None or list(oshape[1:]) != trailing or len(oshape) != len(shape):
            problems.append(f"output '{nxt}' {_fmt(oshape)} must have the shape of '{name}' {_fmt(shape)}")
        else:
            batch_dim("output", nxt, oshape)
    # scores
    if "scores" not in outputs:
        problems.append("no output named 'scores'")
    else:
        et, shape = outputs["scores"]
        rank = 3 if graph == "chunk" else 2
        if float_tensor("output", "scores", et, shape, rank):
            batch_dim("output", "scores", shape)
            if shape[-1] != len(labels) and labels:
                problems.append(f"output 'scores' {_fmt(shape)}: last dimension must be the number of labels "
                                f"{len(labels)} (metadata mambatag.labels)")
    for name in outputs:
        if name == "scores" or name.endswith(".next") and name[:-5] in inputs:
            continue
        if name.endswith(".next"):
            problems.append(f"output '{name}' has no matching input '{name[:-5]}'")
        else:
            warnings.append(f"extra output '{name}' is ignored by the engine")
    if len(batch_params) > 1:
        warnings.append(f"batch dimension has several names {sorted(batch_params)}; expected one")
    if problems:
        raise ContractError(problems)
    return ContractInfo(graph=graph, sample_rate=f["sample_rate"], hop=hop, labels=labels,
                        thresholds=f["thresholds"], states=states, metadata=md,
                        chunk_frames=f["chunk_frames"], warnings=warnings)


# --------------------------------------------------------------------------- running


def make_session(path, threads: int = 1):
    from models.export import make_session as _ms

    return _ms(path, threads)


def run_steps(session, audio: np.ndarray, hop: int = frontend.HOP) -> np.ndarray:
    """Run a step graph over ``audio [B, N]`` (or 1-D) hop by hop from zero state: ``[B, T, C]``."""
    audio = np.asarray(audio, np.float32)
    if audio.ndim == 1:
        audio = audio[None]
    B, T = audio.shape[0], audio.shape[1] // hop
    names = [o.name for o in session.get_outputs()]
    state = {i.name: np.zeros([B] + list(i.shape[1:]), np.float32)
             for i in session.get_inputs() if i.name.startswith("state.")}
    scores = []
    for t in range(T):
        outs = dict(zip(names, session.run(names, {"audio": audio[:, t * hop:(t + 1) * hop], **state})))
        scores.append(outs["scores"])
        state = {k: outs[k + ".next"] for k in state}
    return np.stack(scores, axis=1)


def chunk_call_sizes(n_frames: int, T: int, symbolic: bool = True) -> list[int]:
    """Frames per call for a chunk-graph run: 1, 7, then ``T`` each, the last call shorter (when
    ``T`` is symbolic; a fixed ``T`` gets ``T`` every call and the tail is zero-padded)."""
    if not symbolic:
        return [T] * -(-n_frames // T)
    sizes, left = [], n_frames
    for n in [1, 7] + [T] * (n_frames // max(T, 1) + 1):
        if left <= 0:
            break
        sizes.append(min(n, left))
        left -= sizes[-1]
    return sizes


def run_chunks(session, audio: np.ndarray, sizes: list[int], hop: int = frontend.HOP,
               state: dict | None = None):
    """Run a chunk graph over ``audio [B, N]`` (or 1-D) in calls of ``sizes[i]`` hops, carrying
    state; a call is zero-padded to the graph's fixed ``T`` if it has one (the padded frames are
    dropped; they come after the real ones, so causality keeps those exact). Returns
    ``(scores [B, sum(sizes), C], state after the last call)`` — with padding, the state has seen
    the zeros too."""
    audio = np.asarray(audio, np.float32)
    if audio.ndim == 1:
        audio = audio[None]
    B = audio.shape[0]
    names = [o.name for o in session.get_outputs()]
    ain = [i for i in session.get_inputs() if i.name == "audio"][0]
    fixed = ain.shape[1] if isinstance(ain.shape[1], int) else None
    if state is None:
        state = {i.name: np.zeros([B] + list(i.shape[1:]), np.float32)
                 for i in session.get_inputs() if i.name.startswith("state.")}
    scores, pos = [], 0
    for n in sizes:
        a = audio[:, pos * hop:(pos + n) * hop]
        if fixed and a.shape[1] < fixed:
            a = np.concatenate([a, np.zeros((B, fixed - a.shape[1]), np.float32)], axis=1)
        outs = dict(zip(names, session.run(names, {"audio": a, **state})))
        scores.append(outs["scores"][:, :n])
        state = {k: outs[k + ".next"] for k in state}
        pos += n
    return np.concatenate(scores, axis=1), state


def test_signal(n_frames: int = 1000, seed: int = 7) -> np.ndarray:
    """Deterministic float32 test signal of ``n_frames`` hops cycling through hard cases:
    exponential chirp 50 Hz–7.9 kHz, white noise, exact silence, a 3x-overdriven tone clipped to
    +-1, clicks, near-silence (1e-4 noise, where ln(mel + 1e-6) is most sensitive), two tones."""
    sr = frontend.SAMPLE_RATE
    n = n_frames * frontend.HOP
    rng = np.random.default_rng(seed)
    pieces, total = [], 0
    kinds = ["chirp", "noise", "silence", "clip", "clicks", "faint", "tones"]
    i = 0
    while total < n:
        kind = kinds[i % len(kinds)]
        m = int(sr * (0.35 + 0.3 * rng.random()))
        t = np.arange(m) / sr
        if kind == "chirp":
            f0, f1, d = 50.0, 7900.0, m / sr
            k = (f1 / f0) ** (1 / d)
            x = 0.6 * np.sin(2 * np.pi * f0 * (k ** t - 1) / np.log(k))
        elif kind == "noise":
            x = 0.3 * rng.standard_normal(m)
        elif kind == "silence":
            x = np.zeros(m)
        elif kind == "clip":
            x = np.clip(3.0 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t), -1.0, 1.0)
        elif kind == "clicks":
            x = np.zeros(m)
            x[rng.integers(0, m, 6)] = rng.choice([-1.0, 1.0], 6)
        elif kind == "faint":
            x = 1e-4 * rng.standard_normal(m)
        else:
            x = 0.2 * np.sin(2 * np.pi * 330 * t) + 0.2 * np.sin(2 * np.pi * 1760 * t)
        pieces.append(x)
        total += m
        i += 1
    return np.concatenate(pieces)[:n].astype(np.float32)


test_signal.__test__ = False  # not a pytest test


def resolve(target) -> tuple[Path, Path | None]:
    """``(step.onnx path, weights path or None)`` for a package dir or an .onnx file."""
    p = Path(target)
    onnx_path = p / "step.onnx" if p.is_dir() else p
    w = onnx_path.parent / "weights.safetensors"
    return onnx_path, (w if w.exists() else None)


def verify(target, weights=None, frames: int = 1000, tol: float = 1e-4, log=print, chunk=None) -> bool:
    """Run all checks, printing a report through ``log``; True when everything passed.

    ``chunk``: the chunk graph to check against the step graph (default: ``chunk.onnx`` beside
    the step graph when it exists; ``False``: none)."""
    onnx_path, auto_w = resolve(target)
    weights = Path(weights) if weights else auto_w
    model = onnx.load(str(onnx_path))
    onnx.checker.check_model(model)
    try:
        info = check_contract(model, expect_graph="step")
    except ContractError as e:
        log(f"FAIL {onnx_path}: {e}")
        return False
    for w in info.warnings:
        log(f"warning: {w}")
    md = info.metadata
    log(f"contract ok: {onnx_path} — {md['mambatag.model_name']} {md['mambatag.model_version']} "
        f"({md['mambatag.license']}), {info.n_classes} labels, {len(info.states)} states "
        f"({sum(math.prod(s) for s in info.states.values())} floats per stream)")

    sess = make_session(onnx_path)
    ok = True
    # runtime shapes at B=2
    B = 2
    feed = {"audio": np.zeros((B, info.hop), np.float32),
            **{k: np.zeros([B] + v, np.float32) for k, v in info.states.items()}}
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
    if outs["scores"].shape != (B, info.n_classes):
        log(f"FAIL runtime: scores shape {outs['scores'].shape}, expected {(B, info.n_classes)}")
        ok = False
    for k, v in info.states.items():
        if outs[k + ".next"].shape != tuple([B] + v):
            log(f"FAIL runtime: {k}.next shape {outs[k + '.next'].shape}, expected {tuple([B] + v)}")
            ok = False
    s = outs["scores"]
    if not (np.all(np.isfinite(s)) and s.min() >= 0.0 and s.max() <= 1.0):
        log("FAIL runtime: scores not finite probabilities in [0, 1]")
        ok = False

    audio = test_signal(frames)
    ref = None
    if weights is None:
        log("no weights (pass --weights or put weights.safetensors next to the graph): parity not checked")
    else:
        from models.reference import reference_scores
        from models.weights import load_weights

        w, config = load_weights(weights)
        if list(config.labels) != info.labels:
            log(f"FAIL labels differ: graph {info.labels} vs weights {config.labels}")
            return False
        got = run_steps(sess, audio, info.hop)[0]
        ref = reference_scores(w, config, audio)
        err = np.abs(got - ref)
        t_worst, c_worst = np.unravel_index(int(err.argmax()), err.shape)
        status = "ok" if err.max() <= tol else "FAIL"
        log(f"{status} parity: step graph vs reference over {frames} frames: max abs error {err.max():.3g} "
            f"(frame {t_worst}, label {info.labels[c_worst]!r}), mean {err.mean():.3g}, tol {tol:g}; "
            f"scores span {ref.min():.3f}..{ref.max():.3f}")
        ok &= bool(err.max() <= tol)

        # batch independence: B=3 with different audio vs three B=1 runs
        nb = min(frames, 100) * info.hop
        rows = np.stack([audio[:nb], audio[::-1][:nb].copy(), test_signal(nb // info.hop, seed=99)])
        batched = run_steps(sess, rows, info.hop)
        single = np.concatenate([run_steps(sess, r, info.hop) for r in rows])
        berr = float(np.abs(batched - single).max())
        bstat = "ok" if berr <= 1e-5 else "FAIL"
        log(f"{bstat} batch rows independent: B=3 vs 3 x B=1 max abs diff {berr:.3g}")
        ok &= berr <= 1e-5

    if chunk is None:
        chunk = onnx_path.parent / "chunk.onnx"
        chunk = chunk if chunk.is_file() and chunk.resolve() != onnx_path.resolve() else False
    if chunk:
        ok &= verify_chunk(chunk, info, sess, audio, ref, tol, log)
    else:
        log("no chunk graph: chunk checks skipped")
    ok &= verify_fused(onnx_path, info, sess, audio, tol, log)
    return ok


def verify_fused(step_path: Path, info: ContractInfo, step_sess, audio: np.ndarray, tol: float = 1e-4,
                 log=print, step_frames: int = 120) -> bool:
    """Check ``step-fused.onnx`` / ``step-layer.onnx`` / ``chunk-fused.onnx`` beside ``step_path`` (CONTRACT.md §7):
    same contract and metadata as their standard twins, and the same scores as the standard step
    graph (run through :mod:`models.fused_ops`, the numpy semantics of the fused ops)."""
    from models.fused_ops import FusedRunner, uses_fused_ops

    ok = True
    want = run_steps(step_sess, audio, info.hop)[0]  # [frames, C]
    for kind, name in (("step", "step-fused.onnx"), ("step", "step-layer.onnx"), ("chunk", "chunk-fused.onnx")):
        p = step_path.parent / name
        if not p.is_file():
            log(f"no {p.name}: fused checks skipped")
            continue
        model = onnx.load(str(p), load_external_data=False)
        try:
            finfo = check_contract(model, expect_graph=kind)
        except ContractError as e:
            log(f"FAIL {p}: {e}")
            ok = False
            continue
        if not uses_fused_ops(model):
            log(f"warning: {p.name} uses no ai.mambatag op")
        skip = ("mambatag.graph", "mambatag.chunk_frames")
        diff = sorted(k for k in set(finfo.metadata) | set(info.metadata) if k not in skip
                      and finfo.metadata.get(k) != info.metadata.get(k))
        if diff or finfo.states != info.states:
            log(f"FAIL {p.name}: metadata {diff} / states differ from the step graph")
            ok = False
            continue
        r = FusedRunner(p)
        states = {k: np.zeros([1] + v, np.float32) for k, v in info.states.items()}
        if kind == "step":
            n = min(step_frames, len(want))
            got = []
            for t in range(n):
                o = r.run({"audio": audio[None, t * info.hop:(t + 1) * info.hop].astype(np.float32), **states})
                got.append(o["scores"][0])
                states = {k: o[k + ".next"] for k in states}
            got = np.stack(got)
        else:
            n = len(want)
            got = r.run({"audio": audio[None, :n * info.hop].astype(np.float32), **states})["scores"][0]
        err = float(np.abs(got - want[:n]).max())
        st = "ok" if err <= tol else "FAIL"
        log(f"{st} fused: {p.name} (numpy semantics of the ai.mambatag ops) vs step graph over {n} frames: "
            f"max abs error {err:.3g}, tol {tol:g}")
        ok &= err <= tol
    return ok


def verify_chunk(path, step_info: ContractInfo, step_sess, audio: np.ndarray, ref, tol: float = 1e-4,
                 log=print) -> bool:
    """Check a chunk graph (CONTRACT.md §3) against the step graph it belongs with."""
    path = Path(path)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    try:
        info = check_contract(model, expect_graph="chunk")
    except ContractError as e:
        log(f"FAIL {path}: {e}")
        return False
    for w in info.warnings:
        log(f"warning: {w}")
    problems = []
    if info.states != step_info.states:
        problems.append(f"states differ from the step graph's: {info.states} vs {step_info.states}")
    skip = ("mambatag.graph", "mambatag.chunk_frames")
    a = {k: v for k, v in info.metadata.items() if k not in skip}
    b = {k: v for k, v in step_info.metadata.items() if k not in skip}
    if a != b:
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        problems.append(f"metadata differs from the step graph's in {diff}")
    if problems:
        log(f"FAIL {path}: " + "; ".join(problems))
        return False
    T = info.chunk_frames
    adim = _dims([i for i in model.graph.input if i.name == "audio"][0])[1][1]
    symbolic = not isinstance(adim, int)
    if not symbolic:
        T = adim // info.hop
    log(f"contract ok: {path} — chunk graph, preferred T = {info.chunk_frames}, audio "
        f"{'[B, T*hop] with T symbolic' if symbolic else f'[B, {adim}]'}")
    frames = audio.shape[-1] // info.hop
    rows = np.stack([audio, test_signal(frames, seed=11)])
    want = run_steps(step_sess, rows, info.hop)
    sizes = chunk_call_sizes(frames, T, symbolic)
    got, _ = run_chunks(make_session(path), rows, sizes, info.hop)
    err = float(np.abs(got - want).max())
    ok = err <= tol
    msg = (f"{'ok' if ok else 'FAIL'} chunk parity: chunk vs step graph over {frames} frames at B=2 in "
           f"{len(sizes)} calls ({', '.join(map(str, sizes[:3]))}{', ...' if len(sizes) > 4 else ''}"
           f"{', ' + str(sizes[-1]) if len(sizes) > 3 else ''} frames): max abs diff {err:.3g}")
    if ref is not None:
        rerr = float(np.abs(got[0] - ref).max())
        ok &= rerr <= tol
        msg += f"; vs reference {rerr:.3g}"
    log(msg + f", tol {tol:g}")
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.verify", description=__doc__.split("\n")[0])
    ap.add_argument("target", help="model package directory or a step .onnx file")
    ap.add_argument("--weights", help="weights .safetensors (default: weights.safetensors beside the graph)")
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--chunk", help="chunk graph to check (default: chunk.onnx beside the step graph)")
    ap.add_argument("--no-chunk", action="store_true", help="skip the chunk-graph checks")
    a = ap.parse_args(argv)
    onnx_path, _ = resolve(a.target)
    if not onnx_path.is_file():
        print(f"error: {onnx_path} not found", file=sys.stderr)
        return 2
    try:
        ok = verify(a.target, a.weights, a.frames, a.tol, chunk=False if a.no_chunk else a.chunk)
    except (OSError, ValueError, onnx.checker.ValidationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
