"""Model inputs for validation, benchmarks and calibration: the user's samples, or inputs
generated from the model's declared signature.

A sample is one feed of the model: a dict mapping every graph input to an array of the dtype,
rank and fixed dims the model declares (no NaN; infinities are allowed: masks of -inf are data). `iter_samples` reads them from:

* a `.npy` file (a model with one input) or a `.npz` file keyed by input name;
* a folder of such files (taken in name order);
* onnxruntime test data: a folder holding `test_data_set_0/`, `test_data_set_1/`, ... (taken in
  numeric order), or one `test_data_set_*` folder itself (any folder of `input_*.pb` files). Each
  set is one sample; each `input_K.pb` is a serialized onnx TensorProto whose `name` names the
  input, or, when empty, feeds the K-th model input (`output_*.pb` files are ignored);
* from Python: an iterable of dicts (input name -> array-like), one dict, or any object with a
  `get_next()` method returning a dict, then None at the end (the protocol of onnxruntime's
  `CalibrationDataReader`). Python samples are taken as given, never split.

A `.npy`/`.npz` array may stack several samples on axis 0. For an input of rank r:

* an array of rank r + 1 holds N samples: `array[i]` is sample i;
* an array of rank r whose axis 0 is not the model's fixed batch size B (an int on axis 0 of the
  input) but a multiple of it holds N = len / B samples of B rows each;
* otherwise (a dynamic batch, or the fixed batch itself) the array is one sample, as given.

With `split_batch` (what `auto` reads: it holds samples out, so it counts them as a user does),
a file or test data set that the rules above leave as one sample is split on the batch axis when
every input has one: an array of rank r whose axis 0 is dynamic (symbolic or unknown) holds one
sample per row (`array[i:i+1]`), every input the same number of rows (a scalar given once goes
with every row). Otherwise (an input with a fixed axis 0, or of unknown rank, or inputs of
different lengths) it stays one sample. Without it (`calibrate`, `validate`, gptq's samples) the
batch is one run of the model: every row is in its statistics all the same.

In a `.npz` every input must hold the same number of samples, except a scalar input given once
(a sample rate), which goes with every sample. A `.npy` is read one sample at a time (plain
reads, so a stacked file is never resident at once; a `.npz` is read a file at a time). Inputs
of unknown rank are never split.

Every sample is checked against the model's inputs; a bad one raises a one-line ConfigError
naming where it came from (`data.npz`, `data.npy[3]` for the fourth sample stacked in a file,
`.../test_data_set_0/input_1.pb`, or `sample 3` for Python samples) and the input.
"""

from __future__ import annotations

import io
import math
import os
import re
import struct
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, TypeAlias

import numpy as np
import onnx
from onnx import helper, numpy_helper

from quantrs.errors import ConfigError, first_line

__all__ = [
    "InputSpec",
    "DataReader",
    "SampleSource",
    "input_specs",
    "iter_samples",
    "load_samples",
    "describe_source",
    "generate_samples",
    "check_sample",
]


class DataReader(Protocol):
    """onnxruntime's CalibrationDataReader protocol: one sample per call, None at the end."""

    def get_next(self) -> Mapping[str, Any] | None: ...


SampleSource: TypeAlias = str | os.PathLike[str] | DataReader | Mapping[str, Any] | Iterable[Mapping[str, Any]]

_SET = re.compile(r"test_data_set_(\d+)")
_INPUT = re.compile(r"input_(\d+)\.pb")
_Labelled = Iterator[tuple[str, Mapping[str, Any]]]


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


def load_samples(
    source: SampleSource, specs: list[InputSpec], *, limit: int | None = None, split_batch: bool = False
) -> list[dict[str, np.ndarray]]:
    """All of iter_samples, as a list."""
    return list(iter_samples(source, specs, limit=limit, split_batch=split_batch))


def iter_samples(
    source: SampleSource, specs: list[InputSpec], *, limit: int | None = None, split_batch: bool = False
) -> Iterator[dict[str, np.ndarray]]:
    """The samples of `source` (see the module docstring for the accepted forms), each checked
    against the model's inputs, at most `limit` of them (counted after splitting stacked files).
    `split_batch`: a file or test data set that is one sample is split into one sample per row
    of its inputs' dynamic batch axis (module docstring). Lazy: memory does not grow with the
    number of samples, and no sample past `limit` is read (nor `get_next()` called). A missing
    path or an unusable source raises ConfigError at once; a bad sample raises ConfigError when
    it is reached."""
    if limit is not None and limit < 0:
        raise ConfigError(f"the sample limit must be at least 0, not {limit}")
    return _checked(_labelled(source, specs, split_batch), specs, limit)


def describe_source(source: SampleSource) -> str:
    """A few words naming a sample source, for reports and error messages."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if callable(getattr(source, "get_next", None)):
        return f"{type(source).__name__}.get_next()"
    if isinstance(source, Mapping):
        return "one sample from Python"
    if isinstance(source, (list, tuple)):
        return f"{len(source)} sample(s) from a Python {type(source).__name__}"
    return f"samples from a Python {type(source).__name__}"


def _checked(samples: _Labelled, specs: list[InputSpec], limit: int | None) -> Iterator[dict[str, np.ndarray]]:
    if limit == 0:
        return
    count = 0
    for label, sample in samples:
        yield check_sample(sample, specs, label)
        count += 1
        if limit is not None and count >= limit:
            return  # before asking the source for one more


def _labelled(source: SampleSource, specs: list[InputSpec], split_batch: bool = False) -> _Labelled:
    """(where it came from, sample) pairs, unchecked; path sources are resolved now."""
    if isinstance(source, (str, os.PathLike)):
        return _path_samples(Path(source), specs, split_batch)
    get_next = getattr(source, "get_next", None)
    if callable(get_next):
        return _reader_samples(get_next)
    if isinstance(source, Mapping):
        return iter([("sample 0", source)])
    if isinstance(source, np.ndarray):
        raise ConfigError(
            "samples: pass a dict {input name: array}, a list of them, or the path of a .npy file, not a bare array"
        )
    if isinstance(source, Iterable):
        return ((f"sample {i}", sample) for i, sample in enumerate(source))
    raise ConfigError(f"samples: expected a path, an iterable of dicts or an object with get_next(), not {type(source).__name__}")


def _reader_samples(get_next: Callable[[], Mapping[str, Any] | None]) -> _Labelled:
    index = 0
    while True:
        sample = get_next()
        if sample is None:
            return
        yield f"sample {index}", sample
        index += 1


def _path_samples(path: Path, specs: list[InputSpec], split_batch: bool = False) -> _Labelled:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".npy", ".npz") and p.is_file())
        if files:
            return _file_samples(files, specs, split_batch)
        sets = sorted((p for p in path.iterdir() if p.is_dir() and _SET.fullmatch(p.name)), key=lambda p: int(p.name[14:]))
        if sets or _set_inputs(path):
            return _set_samples(sets or [path], specs, split_batch)
        raise ConfigError(
            f"{path}: no .npy or .npz samples in this folder, nor onnxruntime test data (test_data_set_*/input_*.pb)"
        )
    if path.is_file():
        if path.suffix == ".pb":
            raise ConfigError(f"{path}: pass the test_data_set_* folder holding this tensor (one set is one sample)")
        return _file_samples([path], specs, split_batch)
    raise ConfigError(f"{path}: no such samples file or folder")


def _file_samples(files: list[Path], specs: list[InputSpec], split_batch: bool = False) -> _Labelled:
    for file in files:
        yield from _split(str(file), _read(file, specs), specs, split_batch)


def _read(file: Path, specs: list[InputSpec]) -> dict[str, np.ndarray]:
    try:
        if file.suffix == ".npy":
            if len(specs) != 1:
                names = ", ".join(s.name for s in specs)
                raise ConfigError(f"{file}: a .npy sample feeds one input, the model has {len(specs)} ({names}); use .npz")
            return {specs[0].name: _NpyRows.open(file)}  # stacked samples: read one at a time
        return _read_npz(file)
    except ConfigError:
        raise
    except Exception as exc:  # ValueError, OSError, zipfile.BadZipFile: not a numpy file
        raise ConfigError(f"{file}: cannot read the sample ({first_line(exc)})") from None


# The .npy header's length field, by format version (numpy writes 1.0, 2.0 and 3.0; 3.0 is 2.0
# with a utf-8 header, which numpy only writes for non-ASCII field names).
_NPY_LENGTH = {(1, 0): "<H", (2, 0): "<I", (3, 0): "<I"}
# At most what one compressed byte of a deflated zip member inflates to: a member claiming more
# than this many times the whole archive's size cannot hold what it claims.
_DEFLATE_RATIO = 1032
# No array has this many elements, counting a 0 as 1 (numpy's limit is 2**63 bytes; 16-byte
# complex128 items make it 2**59): a shape such as (5, 2**62, 2**62, 0) holds nothing, yet numpy
# refuses it with a ValueError or MemoryError of its own.
_MAX_ELEMENTS = 2**59


def _npy_header(f: IO[bytes], available: int, where: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran order, dtype, bytes of data) from the .npy header at `f`'s position,
    refused unless the header and the data it announces fit in the `available` bytes of the
    file (or zip member): nothing is read or allocated for what a header only claims."""
    try:
        version = np.lib.format.read_magic(f)
    except ValueError as exc:
        raise ConfigError(f"{where}: not a .npy array ({first_line(exc)})") from None
    layout = _NPY_LENGTH.get(version)
    if layout is None:
        raise ConfigError(f"{where}: .npy format version {version[0]}.{version[1]}, not one numpy writes (1.0, 2.0, 3.0)")
    field = f.read(struct.calcsize(layout))
    if len(field) != struct.calcsize(layout):
        raise ConfigError(f"{where}: the file ends inside its .npy header")
    length = struct.unpack(layout, field)[0]
    start = np.lib.format.MAGIC_LEN + len(field)
    if start + length > available:
        raise ConfigError(f"{where}: the .npy header claims {length} bytes, the file holds {max(0, available - start)} after it")
    text = f.read(length)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    try:
        shape, fortran, dtype = read_header(io.BytesIO(field + text))  # numpy's checks of the header's contents
    except ValueError as exc:
        raise ConfigError(f"{where}: not a .npy array ({first_line(exc)})") from None
    if dtype.hasobject:
        raise ConfigError(f"{where}: an array of Python objects (pickled data), not numbers")
    if any(d < 0 for d in shape) or math.prod(max(d, 1) for d in shape) >= _MAX_ELEMENTS:
        raise ConfigError(f"{where}: the .npy header gives the shape {shape}, not one an array can have")
    nbytes = math.prod(shape) * dtype.itemsize
    if start + length + nbytes > available:
        raise ConfigError(
            f"{where}: the file is shorter than its header says (shape {shape} of {dtype} needs {nbytes} bytes, "
            f"{max(0, available - start - length)} follow the header; truncated?)"
        )
    return tuple(shape), fortran, dtype, nbytes


def _read_npz(file: Path) -> dict[str, np.ndarray]:
    """The arrays of a .npz archive, by name (a member "x.npy" is "x"), each checked against
    what the archive can hold before it is read (_npy_header, _DEFLATE_RATIO)."""
    with open(file, "rb") as f:
        if f.read(len(np.lib.format.MAGIC_PREFIX)) == np.lib.format.MAGIC_PREFIX:
            raise ConfigError(f"{file}: one .npy array, not a .npz archive keyed by input name; name it .npy")
    size = file.stat().st_size
    arrays: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(file) as archive:
        members = archive.infolist()
        claimed = sum(m.file_size for m in members)
        if claimed > _DEFLATE_RATIO * size:
            raise ConfigError(f"{file}: the archive's members claim {claimed} bytes, more than its {size} bytes can hold")
        for member in members:
            where = f"{file}: {member.filename}"
            if member.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise ConfigError(
                    f"{where}: compressed with zip method {member.compress_type}; numpy writes stored or deflated members"
                )
            with archive.open(member) as data:
                shape, fortran, dtype, nbytes = _npy_header(data, member.file_size, where)
                payload = data.read(nbytes)
            if len(payload) != nbytes:
                raise ConfigError(f"{where}: the member is shorter than its header says (truncated?)")
            name = member.filename[:-4] if member.filename.endswith(".npy") else member.filename
            arrays[name] = np.frombuffer(payload, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return arrays


class _NpyRows:
    """A .npy file's array, read from disk a sample at a time (plain reads, not a memory map:
    a mapped file's pages stay resident, so reading a 10 GB stack would grow the process by
    10 GB). Offers what splitting needs: shape, ndim, dtype, [i], [a:b] and np.array()."""

    def __init__(self, file: Path, shape: tuple[int, ...], dtype: np.dtype, offset: int) -> None:
        self.file, self.shape, self.dtype, self.offset = file, shape, dtype, offset
        self.ndim = len(shape)

    @staticmethod
    def open(file: Path) -> Any:
        with open(file, "rb") as f:
            shape, fortran, dtype, _ = _npy_header(f, os.fstat(f.fileno()).st_size, str(file))
            offset = f.tell()
        if fortran or not shape:
            return np.load(file, allow_pickle=False)  # rare layouts: read whole
        return _NpyRows(file, shape, dtype, offset)

    def _rows(self, start: int, stop: int) -> np.ndarray:
        row = int(np.prod(self.shape[1:], dtype=np.int64))
        count = (stop - start) * row
        data = np.fromfile(self.file, dtype=self.dtype, count=count, offset=self.offset + start * row * self.dtype.itemsize)
        if data.size != count:
            raise ConfigError(f"{self.file}: the file is shorter than its header says (truncated?)")
        return data.reshape((stop - start, *self.shape[1:]))

    def __getitem__(self, key: int | slice) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, _ = key.indices(self.shape[0])
            return self._rows(start, max(start, stop))
        return self._rows(key, key + 1)[0]

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        whole = self._rows(0, self.shape[0])
        return whole if dtype is None else whole.astype(dtype)


def _stacking(value: np.ndarray, spec: InputSpec) -> tuple[int, int | None]:
    """(number of samples in `value`, rows per sample): rows None when each sample is
    `value[i]` (or `value` itself when the number is 1 and it is not stacked, rows 0)."""
    rank = len(spec.shape)
    if rank == 0 and spec.shape == () and value.ndim != 1:
        return 1, 0
    if value.ndim == rank + 1:
        return value.shape[0], None
    batch = spec.shape[0]
    if (
        value.ndim == rank
        and isinstance(batch, int)
        and batch > 0
        and value.shape[0] != batch
        and value.shape[0] > 0
        and value.shape[0] % batch == 0
    ):
        return value.shape[0] // batch, batch
    return 1, 0


def _batch_rows(ordered: list[tuple[InputSpec, Any]]) -> dict[str, tuple[int, int]] | None:
    """For split_batch, the plans (as _stacking's) that split one sample into one per row of
    its batch axis: every input of rank r >= 1 given at rank r with a dynamic axis 0 (one row
    each), a scalar given once (with every row). None when an input has no such axis (fixed,
    or unknown rank), when the inputs' lengths differ, or when there is a single row."""
    plans: dict[str, tuple[int, int]] = {}
    for spec, value in ordered:
        if not spec.shape:  # a scalar input, or one of unknown rank
            if np.ndim(value) != 0:
                return None
            plans[spec.name] = (1, 0)
            continue
        batch = spec.shape[0]
        if value.ndim != len(spec.shape) or (isinstance(batch, int) and batch > 0) or value.shape[0] < 1:
            return None
        plans[spec.name] = (value.shape[0], 1)
    lengths = {n for n, rows in plans.values() if rows}
    return plans if len(lengths) == 1 and lengths != {1} else None


def _rows_of(label: str, ordered: list[tuple[InputSpec, Any]], plans: dict[str, tuple[int, int | None]], count: int) -> _Labelled:
    """The `count` samples `plans` cut from `ordered`, each copied out when it is reached.
    Several samples that hold no values are refused: a header can claim 10**12 of them in a
    file of a few bytes (reading them would never end)."""
    for spec, value in ordered:
        if count > 1 and plans[spec.name][1] != 0 and math.prod(value.shape[1:]) == 0:
            raise ConfigError(f"{label}: input {spec.name!r} has shape {tuple(value.shape)}: {count} samples that hold no values")
    for i in range(count):
        sample = {}
        for spec, value in ordered:
            rows = plans[spec.name][1]
            part = value if rows == 0 else value[i] if rows is None else value[i * rows : (i + 1) * rows]
            sample[spec.name] = np.array(part)  # a copy: never a view of the whole file
        yield f"{label}[{i}]", sample


def _split(label: str, arrays: dict[str, np.ndarray], specs: list[InputSpec], split_batch: bool = False) -> _Labelled:
    """The samples stacked in one file's arrays, each copied out when it is reached."""
    _check_names(arrays, specs, label)
    ordered = [(spec, arrays[spec.name]) for spec in specs]
    plans: dict[str, tuple[int, int | None]] = {spec.name: _stacking(value, spec) for spec, value in ordered}
    if all(rows == 0 for _, rows in plans.values()):
        by_row = _batch_rows(ordered) if split_batch else None
        if by_row is None:
            yield label, {spec.name: np.array(value) for spec, value in ordered}
            return
        yield from _rows_of(label, ordered, dict(by_row), max(n for n, _ in by_row.values()))
        return
    stacked = {name: n for name, (n, rows) in plans.items() if rows != 0}
    counts = {name: stacked.get(name, n) for name, (n, _) in plans.items()}
    shared = {spec.name for spec, value in ordered if plans[spec.name][1] == 0 and np.ndim(value) == 0 and stacked}
    for name in shared:  # a scalar given once (a sample rate) goes with every stacked sample
        counts[name] = next(iter(stacked.values()))
    first = specs[0].name
    other = next((name for name in counts if counts[name] != counts[first]), None)
    if other is not None:
        for spec, value in ordered:  # an input left whole may just be wrong: say how
            if plans[spec.name][1] == 0:
                _check_value(value, spec, label)
        raise ConfigError(
            f"{label}: input {first!r} holds {counts[first]} stacked sample(s), input {other!r} {counts[other]}; "
            "every input must hold the same number"
        )
    if counts[first] == 0:
        raise ConfigError(f"{label}: input {first!r} has shape {arrays[first].shape}: no samples on axis 0")
    yield from _rows_of(label, ordered, plans, counts[first])


def _set_inputs(folder: Path) -> list[tuple[int, Path]]:
    found = ((_INPUT.fullmatch(p.name), p) for p in folder.iterdir() if p.is_file())
    return sorted((int(m.group(1)), p) for m, p in found if m)


def _set_samples(sets: list[Path], specs: list[InputSpec], split_batch: bool = False) -> _Labelled:
    by_name = {s.name: s for s in specs}
    for folder in sets:
        inputs = _set_inputs(folder)
        if not inputs:
            raise ConfigError(f"{folder}: no input_*.pb tensors in this test data set")
        sample: dict[str, np.ndarray] = {}
        origin: dict[str, Path] = {}
        for index, file in inputs:
            tensor = _read_tensor(file)
            name = tensor.name or (specs[index].name if index < len(specs) else "")
            if not name:
                raise ConfigError(f"{file}: an unnamed tensor for input {index}, the model has {len(specs)} input(s)")
            if name in sample:
                raise ConfigError(f"{file}: input {name!r} is already given by {origin[name].name}")
            sample[name] = _tensor_array(tensor, file)
            origin[name] = file
        _check_names(sample, specs, str(folder))
        for name, file in origin.items():
            _check_value(sample[name], by_name[name], str(file))
        ordered = [(spec, sample[spec.name]) for spec in specs]
        by_row = _batch_rows(ordered) if split_batch else None
        if by_row is None:
            yield str(folder), sample
        else:
            yield from _rows_of(str(folder), ordered, dict(by_row), max(n for n, _ in by_row.values()))


def _read_tensor(file: Path) -> onnx.TensorProto:
    tensor = onnx.TensorProto()
    try:
        tensor.ParseFromString(file.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the tensor ({first_line(exc)})") from None
    except Exception:  # protobuf's DecodeError
        raise ConfigError(f"{file}: not a serialized onnx TensorProto") from None
    if tensor.data_type == onnx.TensorProto.UNDEFINED:
        raise ConfigError(f"{file}: not a serialized onnx TensorProto (no data type)")
    return tensor


def _tensor_array(tensor: onnx.TensorProto, file: Path) -> np.ndarray:
    dims = list(tensor.dims)
    if any(d < 0 for d in dims) or math.prod(max(d, 1) for d in dims) >= _MAX_ELEMENTS:
        # numpy raises MemoryError (or allocates) for some of these, even with no values
        raise ConfigError(f"{file}: cannot read the tensor (its shape {dims} is not one an array can have)")
    try:
        return numpy_helper.to_array(tensor, base_dir=str(file.parent))
    except Exception as exc:  # unknown data type, data not matching dims, missing external data
        raise ConfigError(f"{file}: cannot read the tensor ({first_line(exc)})") from None


def check_sample(sample: Mapping[str, Any], specs: list[InputSpec], file: str) -> dict[str, np.ndarray]:
    """The sample (as a dict of arrays), if it fits the model's inputs; ConfigError naming `file`
    (or "sample N") and the input otherwise."""
    if not isinstance(sample, Mapping):
        raise ConfigError(f"{file}: a sample must map input names to arrays, not {type(sample).__name__}")
    try:
        arrays = {k: np.asarray(v) for k, v in sample.items()}
    except Exception as exc:  # a value numpy cannot take
        raise ConfigError(f"{file}: a value is not an array ({first_line(exc)})") from None
    _check_names(arrays, specs, file)
    for spec in specs:
        _check_value(arrays[spec.name], spec, file)
    return arrays


def _check_names(sample: Mapping[str, Any], specs: list[InputSpec], file: str) -> None:
    expected = {s.name for s in specs}
    missing = sorted(expected - set(sample))
    if missing:
        raise ConfigError(f"{file}: missing input(s) {', '.join(missing)}")
    unknown = sorted(set(sample) - expected, key=str)
    if unknown:
        raise ConfigError(f"{file}: the model has no input named {', '.join(map(str, unknown))}")


def _check_value(value: np.ndarray, spec: InputSpec, file: str) -> None:
    if value.dtype != spec.dtype:
        raise ConfigError(f"{file}: input {spec.name!r} is {value.dtype}, the model expects {spec.dtype}")
    if spec.shape and value.ndim != len(spec.shape):
        raise ConfigError(f"{file}: input {spec.name!r} has shape {value.shape}, the model expects rank {len(spec.shape)}")
    for axis, (got, want) in enumerate(zip(value.shape, spec.shape)):
        if isinstance(want, int) and want > 0 and got != want:
            raise ConfigError(f"{file}: input {spec.name!r} has {got} on axis {axis}, the model expects {want}")
    if value.dtype.kind == "f" and np.isnan(value).any():  # infinity is data (masks of -inf)
        raise ConfigError(f"{file}: input {spec.name!r} holds NaN")


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
