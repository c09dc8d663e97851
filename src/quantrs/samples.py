"""Model inputs for validation and benchmarks: the user's samples, or inputs generated from the
model's declared signature.

Samples: a `.npy` file (a model with one input), a `.npz` file keyed by input name, or a folder
of either (one sample per file, in name order). Each file is one batch as the model takes it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from quantrs.errors import ConfigError

__all__ = ["InputSpec", "input_specs", "iter_samples", "load_samples", "generate_samples", "check_sample"]


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype
    shape: tuple[int | str | None, ...]  # ints, symbolic names, or None (unknown)


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The graph inputs a caller must feed (initializers that double as inputs excluded)."""
    initializers = {t.name for t in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers or not value.type.HasField("tensor_type"):
            continue
        tensor = value.type.tensor_type
        dims: tuple[int | str | None, ...] = ()
        if tensor.HasField("shape"):
            dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim)
        specs.append(InputSpec(value.name, np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)), dims))
    return specs


def load_samples(path: str | os.PathLike[str], specs: list[InputSpec], *, limit: int | None = None) -> list[dict[str, np.ndarray]]:
    """Read samples and check each against the model's inputs (names, dtype, rank, fixed dims,
    no NaN), raising ConfigError naming the file and the input."""
    return list(iter_samples(path, specs, limit=limit))


def iter_samples(path: str | os.PathLike[str], specs: list[InputSpec], *, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """load_samples, one file at a time: memory does not grow with the number of samples."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".npy", ".npz"))
        if not files:
            raise ConfigError(f"{path}: no .npy or .npz samples in this folder")
    elif path.is_file():
        files = [path]
    else:
        raise ConfigError(f"{path}: no such samples file or folder")
    for file in files[:limit]:
        yield check_sample(_read(file, specs), specs, str(file))


def _read(file: Path, specs: list[InputSpec]) -> dict[str, np.ndarray]:
    try:
        if file.suffix == ".npy":
            if len(specs) != 1:
                names = ", ".join(s.name for s in specs)
                raise ConfigError(f"{file}: a .npy sample feeds one input, the model has {len(specs)} ({names}); use .npz")
            return {specs[0].name: np.load(file, allow_pickle=False)}
        with np.load(file, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except ConfigError:
        raise
    except Exception as exc:  # ValueError, OSError, zipfile.BadZipFile: not a numpy file
        raise ConfigError(f"{file}: cannot read the sample ({exc})") from None


def check_sample(sample: dict[str, np.ndarray], specs: list[InputSpec], file: str) -> dict[str, np.ndarray]:
    """The sample, if it fits the model's inputs; ConfigError naming `file` (or "sample N") and
    the input otherwise."""
    if not isinstance(sample, dict):
        raise ConfigError(f"{file}: a sample must map input names to arrays, not {type(sample).__name__}")
    sample = {k: np.asarray(v) for k, v in sample.items()}
    expected = {s.name for s in specs}
    missing = sorted(expected - set(sample))
    if missing:
        raise ConfigError(f"{file}: missing input(s) {', '.join(missing)}")
    unknown = sorted(set(sample) - expected)
    if unknown:
        raise ConfigError(f"{file}: the model has no input named {', '.join(unknown)}")
    for spec in specs:
        value = sample[spec.name]
        if value.dtype != spec.dtype:
            raise ConfigError(f"{file}: input {spec.name!r} is {value.dtype}, the model expects {spec.dtype}")
        if spec.shape and value.ndim != len(spec.shape):
            raise ConfigError(f"{file}: input {spec.name!r} has shape {value.shape}, the model expects rank {len(spec.shape)}")
        for axis, (got, want) in enumerate(zip(value.shape, spec.shape)):
            if isinstance(want, int) and want > 0 and got != want:
                raise ConfigError(f"{file}: input {spec.name!r} has {got} on axis {axis}, the model expects {want}")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ConfigError(f"{file}: input {spec.name!r} holds NaN or infinity")
    return sample


def _index_limits(model: onnx.ModelProto) -> dict[str, int]:
    """For integer inputs used as Gather indices (token ids): the table's row count."""
    rows = {t.name: t.dims[0] for t in model.graph.initializer if t.dims}
    limits: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) > 1 and node.input[0] in rows:
            limits[node.input[1]] = min(limits.get(node.input[1], rows[node.input[0]]), rows[node.input[0]])
    return limits


def generate_samples(model: onnx.ModelProto, count: int = 4, *, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Inputs that fit the declared signature: symbolic batch dims get 2, other unknown dims 8;
    floats are standard normal, integers feeding an embedding are ids below its row count
    (otherwise 0-9), inputs named like masks are ones, booleans random."""
    rng = np.random.default_rng(seed)
    limits = _index_limits(model)
    feeds = []
    for _ in range(count):
        sample = {}
        for spec in input_specs(model):
            shape = tuple(d if isinstance(d, int) and d > 0 else (2 if i == 0 else 8) for i, d in enumerate(spec.shape))
            kind = spec.dtype.kind
            if kind == "f":
                value = rng.standard_normal(shape).astype(spec.dtype)
            elif kind in "iu":
                if "mask" in spec.name.lower():
                    value = np.ones(shape, dtype=spec.dtype)
                else:
                    value = rng.integers(0, limits.get(spec.name, 10), size=shape).astype(spec.dtype)
            elif kind == "b":
                value = rng.integers(0, 2, size=shape).astype(bool)
            else:
                raise ConfigError(f"input {spec.name!r} has type {spec.dtype}; pass samples with --data")
            sample[spec.name] = value
        feeds.append(sample)
    return feeds

