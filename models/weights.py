"""Model configuration, weight names and safetensors I/O without torch (CONTRACT.md §5).

``MambaConfig`` is the one config class (``mamba.py`` re-exports it). Weights are a flat
``dict[str, np.ndarray]`` with mamba_ssm names::

    embed.weight [d_model, 64]            embed.bias [d_model]
    layers.<i>.norm.weight [d_model]
    layers.<i>.mixer.in_proj.weight  [2*d_inner, d_model]
    layers.<i>.mixer.conv1d.weight   [d_inner, 1, d_conv]    conv1d.bias [d_inner]
    layers.<i>.mixer.x_proj.weight   [dt_rank + 2*d_state, d_inner]
    layers.<i>.mixer.dt_proj.weight  [d_inner, dt_rank]      dt_proj.bias [d_inner]
    layers.<i>.mixer.A_log           [d_inner, d_state]      D [d_inner]
    layers.<i>.mixer.out_proj.weight [d_model, d_inner]
    norm_f.weight [d_model]   head.weight [C, d_model]   head.bias [C]
    frontend.mean [64]        frontend.std [64]

The config is stored as JSON in the safetensors header metadata under ``config``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

import numpy as np

from models import frontend

CONFIG_KEY = "config"


@dataclass
class MambaConfig:
    """Shape of a mambatag Mamba-1 tagger. ``dt_rank`` defaults to ``ceil(d_model / 16)``."""

    d_model: int
    n_layers: int
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | None = None
    labels: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.dt_rank is None:
            self.dt_rank = math.ceil(self.d_model / 16)
        self.labels = [str(x) for x in self.labels]
        for k in ("d_model", "n_layers", "d_state", "d_conv", "expand", "dt_rank"):
            v = getattr(self, k)
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"MambaConfig.{k} must be a positive int, got {v!r}")
        if self.d_conv < 2:
            raise ValueError(f"MambaConfig.d_conv must be >= 2, got {self.d_conv}")
        if not self.labels:
            raise ValueError("MambaConfig.labels must not be empty")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"MambaConfig.labels has duplicates: {self.labels}")

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    @property
    def n_mels(self) -> int:
        return frontend.N_MELS

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict) -> "MambaConfig":
        """Build from a dict; unknown keys are ignored (forward compatible)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_json(cls, s: str) -> "MambaConfig":
        return cls.from_dict(json.loads(s))


def as_config(config) -> MambaConfig:
    """Accept a MambaConfig, a dict or a JSON string."""
    if isinstance(config, MambaConfig):
        return config
    if isinstance(config, str):
        return MambaConfig.from_json(config)
    return MambaConfig.from_dict(dict(config))


def weight_shapes(config) -> dict[str, tuple[int, ...]]:
    """Every weight name with its shape, in a stable order."""
    c = as_config(config)
    D, E, N, K, R, C, M = c.d_model, c.d_inner, c.d_state, c.d_conv, c.dt_rank, c.n_classes, c.n_mels
    shapes = {"embed.weight": (D, M), "embed.bias": (D,)}
    for i in range(c.n_layers):
        p = f"layers.{i}."
        shapes.update({
            p + "norm.weight": (D,),
            p + "mixer.in_proj.weight": (2 * E, D),
            p + "mixer.conv1d.weight": (E, 1, K),
            p + "mixer.conv1d.bias": (E,),
            p + "mixer.x_proj.weight": (R + 2 * N, E),
            p + "mixer.dt_proj.weight": (E, R),
            p + "mixer.dt_proj.bias": (E,),
            p + "mixer.A_log": (E, N),
            p + "mixer.D": (E,),
            p + "mixer.out_proj.weight": (D, E),
        })
    shapes.update({"norm_f.weight": (D,), "head.weight": (C, D), "head.bias": (C,),
                   "frontend.mean": (M,), "frontend.std": (M,)})
    return shapes


def check_weights(weights: dict, config) -> None:
    """Raise ValueError naming every missing, unexpected or mis-shaped weight."""
    shapes = weight_shapes(config)
    problems = []
    for k, s in shapes.items():
        if k not in weights:
            problems.append(f"missing {k} {list(s)}")
        elif tuple(np.shape(weights[k])) != s:
            problems.append(f"{k}: shape {list(np.shape(weights[k]))}, expected {list(s)}")
    problems += [f"unexpected weight {k}" for k in weights if k not in shapes]
    if problems:
        raise ValueError("weights do not match config: " + "; ".join(problems))


def inverse_softplus(y: np.ndarray) -> np.ndarray:
    """``x`` with ``softplus(x) = y`` (y > 0), as mamba_simple computes it."""
    return y + np.log(-np.expm1(-y))


def init_weights(config, seed: int = 0, dt_min: float = 1e-3, dt_max: float = 1e-1,
                 dt_init_floor: float = 1e-4) -> dict[str, np.ndarray]:
    """mamba_simple-style random init (float32), without torch.

    Linear/conv weights: PyTorch's default ``U(±1/sqrt(fan_in))`` (kaiming_uniform a=sqrt(5));
    dt_proj.weight ``U(±dt_rank**-0.5)``; dt_proj.bias = softplus^-1(dt), dt log-uniform in
    [dt_min, dt_max] floored at dt_init_floor; A_log = log(1..d_state); D = 1; out_proj scaled by
    1/sqrt(n_layers) (mamba_ssm's prenorm-residual rescale); norms 1; frontend mean 0, std 1.
    """
    c = as_config(config)
    rng = np.random.default_rng(seed)
    D, E, N, K, R, C, M = c.d_model, c.d_inner, c.d_state, c.d_conv, c.dt_rank, c.n_classes, c.n_mels

    def uni(shape, fan_in):
        b = 1.0 / math.sqrt(fan_in)
        return rng.uniform(-b, b, size=shape)

    w = {"embed.weight": uni((D, M), M), "embed.bias": uni((D,), M)}
    for i in range(c.n_layers):
        p = f"layers.{i}."
        dt = np.exp(rng.uniform(size=E) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = np.maximum(dt, dt_init_floor)
        w.update({
            p + "norm.weight": np.ones(D),
            p + "mixer.in_proj.weight": uni((2 * E, D), D),
            p + "mixer.conv1d.weight": uni((E, 1, K), K),
            p + "mixer.conv1d.bias": uni((E,), K),
            p + "mixer.x_proj.weight": uni((R + 2 * N, E), E),
            p + "mixer.dt_proj.weight": rng.uniform(-R ** -0.5, R ** -0.5, size=(E, R)),
            p + "mixer.dt_proj.bias": inverse_softplus(dt),
            p + "mixer.A_log": np.log(np.tile(np.arange(1, N + 1, dtype=np.float64), (E, 1))),
            p + "mixer.D": np.ones(E),
            p + "mixer.out_proj.weight": uni((D, E), E) / math.sqrt(c.n_layers),
        })
    w.update({"norm_f.weight": np.ones(D), "head.weight": uni((C, D), D), "head.bias": uni((C,), D),
              "frontend.mean": np.zeros(M), "frontend.std": np.ones(M)})
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in w.items()}


def save_weights(path, weights: dict, config, extra_metadata: dict | None = None) -> None:
    """Write ``weights`` (float32) to safetensors with the config JSON under ``config``."""
    from safetensors.numpy import save_file

    c = as_config(config)
    check_weights(weights, c)
    meta = {CONFIG_KEY: c.to_json()}
    if extra_metadata:
        meta.update({str(k): str(v) for k, v in extra_metadata.items()})
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()},
              str(path), metadata=meta)


def load_metadata(path) -> dict:
    """The safetensors header metadata (str -> str)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return dict(f.metadata() or {})


def load_weights(path) -> tuple[dict[str, np.ndarray], MambaConfig]:
    """Read a weights file: ``(weights, config)``. Checks names and shapes against the config."""
    from safetensors.numpy import load_file

    meta = load_metadata(path)
    if CONFIG_KEY not in meta:
        raise ValueError(f"{path}: safetensors metadata has no '{CONFIG_KEY}' entry")
    config = MambaConfig.from_json(meta[CONFIG_KEY])
    weights = load_file(str(path))
    check_weights(weights, config)
    return weights, config
