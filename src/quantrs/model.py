"""Reading ONNX models without copying their weights (writing is quantrs.writer's).

The graph is parsed with `onnx`; the weights stay behind one small interface, WeightStore
(name -> read-only array, dtype, shape, where the bytes live), so that the rest of quantrs never
handles TensorProto payloads and the loader can become a streaming, memory-mapped one without
touching its callers. External data is memory-mapped and must stay inside the model's folder.
"""

from __future__ import annotations

import logging
import math
import mmap
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from quantrs._wire import scan_fields
from quantrs.errors import ModelLoadError, first_line
from quantrs.graph import MAIN, constant_tensor, separate_sibling_names, walk_graphs

__all__ = ["WeightInfo", "WeightStore", "LoadedModel", "load_model", "resolve_external_path"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightInfo:
    """What quantrs knows about one stored tensor without reading its values."""

    name: str  # the value name: the initializer's name or the Constant node's output
    data_type: int  # onnx.TensorProto.DataType
    shape: tuple[int, ...]
    location: str  # "embedded" or the external file's name relative to the model
    kind: str = "initializer"  # or "constant" (a Constant node's `value`)
    scope: str = MAIN  # the graph that holds it: "" for the main graph, else the body's path

    @property
    def dtype_name(self) -> str:
        return TensorProto.DataType.Name(self.data_type)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        if self.data_type in _SUB_BYTE:
            return (self.size + 1) // 2  # two 4-bit values per byte
        np_type = helper.tensor_dtype_to_np_dtype(self.data_type)
        return self.size * np.dtype(np_type).itemsize


class WeightStore:
    """Read-only access to a model's stored tensors by value name, without copying their bytes.

    Every tensor the graph stores is here: the main graph's initializers, the initializers of
    If/Loop/Scan bodies and the `value` of Constant nodes, at any depth (a value name is unique
    across the model, and load_model refuses a model where it is not).

    The main graph's embedded payloads are views of the memory-mapped model file (located by the
    wire-format scan in load_model); external data files are memory-mapped too, once each. The
    tensors nested in nodes are parsed with the graph. `release()` hands a tensor's pages back to
    the OS, so that streaming through a model larger than RAM keeps the resident set small.
    """

    def __init__(
        self,
        graph: onnx.GraphProto,
        base_dir: Path | None,
        model_path: Path | None,
        *,
        file_map: mmap.mmap | None = None,
        embedded: dict[str, tuple[int, int]] | None = None,
        aliases: dict[str, str] | None = None,
    ) -> None:
        self._tensors: dict[str, TensorProto] = {}
        self._where: dict[str, tuple[str, str]] = {}  # name -> (kind, scope)
        self._paths: dict[str, tuple[str, ...]] = {}
        for scope in walk_graphs(graph):
            for t in scope.graph.initializer:
                self._add(t.name, t, "initializer", scope.path, model_path)
            for node in scope.graph.node:
                t = constant_tensor(node)
                if t is not None and node.output and node.output[0]:
                    self._add(node.output[0], t, "constant", scope.path, model_path)
        for scope in walk_graphs(graph):
            for node in scope.graph.node:
                if constant_tensor(node) is not None:
                    continue
                for out in node.output:
                    if out in self._tensors and _nested(self._paths[out], scope.path):
                        raise ModelLoadError(
                            f"{model_path}: invalid graph: {out!r} is {_describe(*self._where[out])} and also "
                            f"the output of {node.op_type} {node.name!r}"
                        )
        self.aliases = (
            aliases or {}
        )  # a sibling body's tensor renamed apart -> its name in the file (graph.separate_sibling_names)
        self._base_dir = base_dir
        self._model_path = model_path
        self._file_map = file_map
        self._embedded = embedded or {}  # name -> (offset, length) of raw_data in the model file
        self._external_maps: dict[Path, mmap.mmap] = {}
        self._external_paths: dict[str, Path] = {}  # location -> resolve_external_path's answer
        self._stored_ranges: dict[str, tuple[Path, int, int]] = {}  # value name -> _external_range's answer

    def _add(self, name: str, tensor: TensorProto, kind: str, path: tuple[str, ...], model_path: Path | None) -> None:
        scope = " > ".join(path)
        if name in self._tensors:  # sibling bodies' own tensors were renamed apart (load_model)
            first = _describe(*self._where[name])
            raise ModelLoadError(
                f"{model_path}: invalid graph: {name!r} is defined twice ({first}, and {_describe(kind, scope)})"
            )
        if any(d < 0 for d in tensor.dims) or math.prod(max(d, 1) for d in tensor.dims) >= _MAX_ELEMENTS:
            raise ModelLoadError(f"{model_path}: {name!r} has the shape {list(tensor.dims)}, not one a tensor can have")
        if tensor.data_location == TensorProto.EXTERNAL:
            _check_external_fields(tensor, name, model_path)
        self._tensors[name] = tensor
        self._where[name] = (kind, scope)
        self._paths[name] = path

    def __contains__(self, name: str) -> bool:
        return name in self._tensors

    def __iter__(self) -> Iterator[WeightInfo]:
        return (self.info(name) for name in self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def info(self, name: str) -> WeightInfo:
        t = self._tensors[name]
        location = "embedded"
        if t.data_location == TensorProto.EXTERNAL:
            location = _external_fields(t).get("location", "")
        kind, scope = self._where[name]
        return WeightInfo(name=name, data_type=t.data_type, shape=tuple(t.dims), location=location, kind=kind, scope=scope)

    def embed_nested_external(self, graph: onnx.GraphProto) -> int:
        """Read into the graph the external data of every tensor nested in it (Constant values,
        tensor attributes, bodies' initializers): the writer streams only the main graph's
        initializers, and a nested tensor left pointing at the input's data file would break
        the output. Returns how many bytes were read in."""
        total = 0
        for scope in walk_graphs(graph):
            nested = list(scope.graph.initializer) if scope.path else []
            for node in scope.graph.node:
                for attr in node.attribute:
                    nested += [attr.t] if attr.type == onnx.AttributeProto.TENSOR else list(attr.tensors)
            for t in nested:
                if t.data_location != TensorProto.EXTERNAL:
                    continue
                path, offset, length = self._external_range(t)
                t.raw_data = np.frombuffer(self._map_external(path), dtype=np.uint8, count=length, offset=offset).tobytes()
                t.data_location = TensorProto.DEFAULT
                del t.external_data[:]
                total += length
        return total

    def tensor(self, name: str) -> TensorProto:
        """The TensorProto as parsed (main-graph initializers without their raw_data)."""
        return self._tensors[name]

    def payload(self, name: str) -> np.ndarray | None:
        """The tensor's raw bytes (uint8, a view of a mapped file), or None when the values sit
        in the parsed TensorProto itself (typed fields such as float_data)."""
        t = self._tensors[name]
        if t.data_location == TensorProto.EXTERNAL:
            path, offset, length = self._stored_range(name)
            return np.frombuffer(self._map_external(path), dtype=np.uint8, count=length, offset=offset)
        if name in self._embedded and self._file_map is not None:
            offset, length = self._embedded[name]
            return np.frombuffer(self._file_map, dtype=np.uint8, count=length, offset=offset)
        if t.HasField("raw_data"):
            return np.frombuffer(t.raw_data, dtype=np.uint8)
        return None

    def array(self, name: str) -> np.ndarray:
        """The initializer's values as a read-only array (a view of the mapped file where possible)."""
        t = self._tensors[name]
        raw = self.payload(name)
        if raw is None or t.data_type in _SUB_BYTE:
            try:
                arr = onnx.numpy_helper.to_array(t) if raw is None else _unpack_sub_byte(t, raw)
            except Exception as exc:  # onnx raises bare ValueError/TypeError on bad payloads
                raise ModelLoadError(f"{self._model_path}: cannot read initializer {name!r}: {exc}") from None
        else:
            dtype = _values_dtype(t, self._model_path)
            count = int(np.prod(t.dims, dtype=np.int64))
            if raw.size != count * dtype.itemsize:
                raise ModelLoadError(
                    f"{self._model_path}: initializer {name!r} holds {raw.size} bytes, "
                    f"its shape {list(t.dims)} needs {count * dtype.itemsize} (truncated or corrupt file)"
                )
            arr = raw.view(dtype).reshape(tuple(t.dims))
        arr = arr.view()
        arr.flags.writeable = False
        return arr

    def file_range(self, name: str) -> tuple[Path, int, int] | None:
        """(file, offset, length) of the tensor's bytes on disk (the model file for embedded
        raw_data, or its external data file), or None when they live in the parsed graph."""
        t = self._tensors[name]
        if t.data_location == TensorProto.EXTERNAL:
            return self._stored_range(name)
        if name in self._embedded and self._model_path is not None:
            offset, length = self._embedded[name]
            return self._model_path, offset, length
        return None

    def release(self, name: str) -> None:
        """Drop the tensor's mapped pages from this process (they stay in the page cache)."""
        t = self._tensors[name]
        if t.data_location == TensorProto.EXTERNAL:
            path, offset, length = self._stored_range(name)
            _drop_pages(self._map_external(path), offset, length)
        elif name in self._embedded and self._file_map is not None:
            _drop_pages(self._file_map, *self._embedded[name])

    def _external_range(self, t: TensorProto) -> tuple[Path, int, int]:
        fields = _external_fields(t)
        if self._base_dir is None or self._model_path is None:
            raise ModelLoadError(f"{self._model_path}: initializer {t.name!r} has external data but no folder")
        path = self._external_path(fields.get("location", ""))
        dtype = _values_dtype(t, self._model_path)
        count = int(np.prod(t.dims, dtype=np.int64))
        needed = (count + 1) // 2 if t.data_type in _SUB_BYTE else count * dtype.itemsize
        offset = int(fields.get("offset", 0))
        length = int(fields.get("length", needed))
        self._check_in_file(t, path, offset, length, fits_shape=length == needed)
        return path, offset, length

    def _check_in_file(self, t: TensorProto, path: Path, offset: int, length: int, *, fits_shape: bool = True) -> None:
        """The tensor's bytes lie inside its data file as the file is now (it may have been cut,
        or removed, since the path was resolved)."""
        try:
            file_size = path.stat().st_size
        except OSError as exc:
            raise ModelLoadError(f"{self._model_path}: external data file {path.name!r} of {t.name!r}: {exc.strerror}") from None
        if not fits_shape or offset < 0 or offset + length > file_size:
            raise ModelLoadError(
                f"{self._model_path}: external data of {t.name!r} ({path.name}, offset {offset}, "
                f"length {length}) does not fit its shape {list(t.dims)} or the file ({file_size} bytes)"
            )

    def _stored_range(self, name: str) -> tuple[Path, int, int]:
        """_external_range of a stored tensor, its entries parsed and checked once: a weight's
        bytes are asked for by its read, by the writer and by its release. The file's size is
        still checked on every call, as _external_range does."""
        known = self._stored_ranges.get(name)
        if known is None:
            known = self._stored_ranges[name] = self._external_range(self._tensors[name])
        else:
            path, offset, length = known
            self._check_in_file(self._tensors[name], path, offset, length)
        return known

    def _external_path(self, location: str) -> Path:
        """resolve_external_path, once per location: its checks walk the file system (a resolve
        and stat per call), and every read and release of a tensor asks again, hundreds of times
        for one data file. A location that fails is not cached: each ask raises again."""
        path = self._external_paths.get(location)
        if path is None:
            assert self._base_dir is not None and self._model_path is not None  # _external_range checked
            path = resolve_external_path(self._base_dir, location, self._model_path)
            self._external_paths[location] = path
        return path

    def _map_external(self, path: Path) -> mmap.mmap | bytes:
        if path not in self._external_maps:
            with open(path, "rb") as f:
                if os.fstat(f.fileno()).st_size == 0:
                    return b""
                self._external_maps[path] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return self._external_maps[path]


def _nested(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Whether one scope is the other or encloses it (where a name must not be defined twice)."""
    return a[: len(b)] == b or b[: len(a)] == a


def _describe(kind: str, scope: str) -> str:
    what = "an initializer" if kind == "initializer" else "a Constant node"
    return f"{what} of the main graph" if scope == MAIN else f"{what} in {scope}"


def _unpack_sub_byte(t: TensorProto, raw: np.ndarray) -> np.ndarray:
    copy = TensorProto()
    copy.CopyFrom(t)
    copy.raw_data = raw.tobytes()
    copy.data_location = TensorProto.DEFAULT
    del copy.external_data[:]
    return onnx.numpy_helper.to_array(copy)


_PAGE = mmap.PAGESIZE


def _drop_pages(mapping: mmap.mmap | bytes, offset: int, length: int) -> None:
    if not isinstance(mapping, mmap.mmap) or not hasattr(mmap, "MADV_DONTNEED"):
        return
    start = -(-offset // _PAGE) * _PAGE  # whole pages inside the range only
    stop = (offset + length) // _PAGE * _PAGE
    if stop > start:
        mapping.madvise(mmap.MADV_DONTNEED, start, stop - start)


_SUB_BYTE = {TensorProto.INT4, TensorProto.UINT4}
# No tensor has this many elements, counting a 0 as 1 (numpy's limit is 2**63 bytes, 2**59
# elements of 16 bytes): dims such as [2**32, 2**32] wrap int64 products to 0, and numpy refuses
# [5, 2**62, 2**62, 0] with a ValueError or MemoryError of its own though it holds nothing.
_MAX_ELEMENTS = 2**59


def _values_dtype(t: TensorProto, model_path: Path | None) -> np.dtype:
    """The numpy dtype of a tensor's stored bytes; ModelLoadError for a data type onnx does not
    define (0, UNDEFINED, included) and for strings, which are not stored as raw bytes."""
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type))
    except (KeyError, TypeError, ValueError):
        raise ModelLoadError(f"{model_path}: tensor {t.name!r} has data type {t.data_type}, not an onnx tensor type") from None
    if dtype.hasobject:
        raise ModelLoadError(f"{model_path}: string tensor {t.name!r} holds raw bytes; strings are stored as string_data")
    return dtype


def _external_fields(t: TensorProto) -> dict[str, str]:
    return {e.key: e.value for e in t.external_data}


def _check_external_fields(t: TensorProto, name: str, model_path: Path | None) -> None:
    """Refuse external-data entries that are not text (protobuf hands invalid UTF-8 over as
    bytes) and an offset or length that is not a whole number."""
    for entry in t.external_data:
        if not isinstance(entry.key, str) or not isinstance(entry.value, str):
            raise ModelLoadError(f"{model_path}: the external data entries of {name!r} are not UTF-8 text")
    fields = _external_fields(t)
    for key in ("offset", "length"):
        if key in fields and not _DECIMAL.fullmatch(fields[key]):
            raise ModelLoadError(f"{model_path}: the external data {key} of {name!r} is {fields[key]!r}, not a number of bytes")


_DECIMAL = re.compile(r"[0-9]{1,19}")


def resolve_external_path(base_dir: Path, location: str, model_path: Path) -> Path:
    """The external-data file `location` names, refused unless it stays inside base_dir.

    Absolute paths, `..`, symbolic links leading out and hard links are refused: a model file must
    not make quantrs read (or later write) anything outside the model's own folder.
    """
    if not location or os.path.isabs(location) or Path(location).drive:
        raise ModelLoadError(f"{model_path}: external data location {location!r} must be a relative path")
    if "\0" in location:
        raise ModelLoadError(f"{model_path}: external data location {location!r} holds a NUL character")
    try:
        base = base_dir.resolve()
        candidate = base_dir / location
        resolved = candidate.resolve()
        if base not in resolved.parents:
            raise ModelLoadError(f"{model_path}: external data location {location!r} escapes the model's folder")
        if not resolved.is_file():
            raise ModelLoadError(f"{model_path}: external data file {location!r} is missing")
        if candidate.is_symlink() or resolved != candidate.absolute():
            raise ModelLoadError(f"{model_path}: external data location {location!r} goes through a symbolic link")
        if resolved.stat().st_nlink > 1:
            raise ModelLoadError(f"{model_path}: external data file {location!r} is a hard link")
    except ModelLoadError:
        raise
    except OSError as exc:  # a name too long, a loop of links, a folder that cannot be read
        raise ModelLoadError(f"{model_path}: external data location {location!r}: {first_line(exc)}") from None
    return resolved


@dataclass
class LoadedModel:
    """A parsed model: its graph (weights not copied out) and its weights behind a WeightStore."""

    path: Path
    proto: onnx.ModelProto
    weights: WeightStore
    file_size: int

    @property
    def opset(self) -> int:
        """The default-domain (ai.onnx) opset version."""
        return default_opset(self.proto)

    @property
    def external_files(self) -> set[str]:
        """The external-data files the weights live in (relative to the model's folder)."""
        return {info.location for info in self.weights if info.location != "embedded"}

    @property
    def total_bytes(self) -> int:
        """The model file plus its external-data files."""
        return self.file_size + sum((self.path.parent / f).stat().st_size for f in self.external_files)


def default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return 1


def load_model(path: str | os.PathLike[str]) -> LoadedModel:
    """Parse an ONNX file without copying its weights. Raises ModelLoadError naming the file for
    anything that is not one.

    The file is memory-mapped; the protobuf wire format is scanned (csrc/_wire.pyx) to find each
    initializer's raw_data, and everything else is parsed with `onnx` from the remaining bytes.
    """
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file")
    if not path.is_file():
        raise ModelLoadError(f"{path}: not a file")
    size = path.stat().st_size
    if size == 0:
        raise ModelLoadError(f"{path}: the file is empty, not an ONNX model")
    with open(path, "rb") as f:
        file_map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        proto, embedded = _parse_skeleton(np.frombuffer(file_map, dtype=np.uint8), file_map)
    except Exception as exc:  # malformed wire format, protobuf DecodeError: not ONNX, or truncated
        raise ModelLoadError(f"{path}: not a valid ONNX model ({first_line(exc)})") from None
    if not proto.HasField("graph") or (len(proto.graph.node) == 0 and len(proto.graph.initializer) == 0):
        raise ModelLoadError(f"{path}: not a valid ONNX model (no graph)")
    if proto.ir_version < 3 or not proto.opset_import:
        raise ModelLoadError(f"{path}: not a valid ONNX model (ir_version {proto.ir_version}, no opset)")
    # Parsing touched the graph's pages (Constant nodes' tensors are now copies in `proto`):
    # hand them back, so that they are not counted twice; weights fault in again when read.
    _drop_pages(file_map, 0, size)
    aliases = separate_sibling_names(proto.graph)
    weights = WeightStore(proto.graph, path.parent, path, file_map=file_map, embedded=embedded, aliases=aliases)
    return LoadedModel(path=path, proto=proto, weights=weights, file_size=size)


_GRAPH, _INITIALIZER, _RAW_DATA = 7, 5, 9  # ModelProto.graph, GraphProto.initializer, TensorProto.raw_data
# One field of scan_fields: (field number, wire type, tag start, value start, value end).
_WireField = tuple[int, int, int, int, int]


_PARSE_RUN = 16 << 20  # bytes of fields merged at once; their pages are handed back after


def _parse_skeleton(buf: np.ndarray, file_map: mmap.mmap | None = None) -> tuple[onnx.ModelProto, dict[str, tuple[int, int]]]:
    """The model without its initializers' raw_data, and where each raw_data lies in `buf`.

    A protobuf message parsed from several pieces is the merge of the pieces, so each level is
    merged from the runs of its fields that do not hold a payload, straight from the mapped
    file: nothing is copied but what protobuf itself keeps (Constant nodes' tensors included).
    Runs are cut at _PARSE_RUN bytes and their pages of `file_map` released once merged, so a
    graph full of Constant nodes is not resident twice (mapped and parsed) while it is read.
    """
    view = memoryview(buf)  # type: ignore[arg-type]  # ndarray is a buffer; numpy's stubs say so from Python 3.12
    top = scan_fields(buf, 0, buf.size)
    model = onnx.ModelProto()
    _merge_runs(model, top, _GRAPH, view, file_map)
    graphs = [f for f in top if f[0] == _GRAPH and f[1] == 2]
    if len(graphs) != 1:  # absent, or split in parts that protobuf would merge: parse it all
        model.ParseFromString(view)
        return model, {}
    graph_fields = scan_fields(buf, graphs[0][3], graphs[0][4])
    _merge_runs(model.graph, graph_fields, _INITIALIZER, view, file_map)
    return model, _parse_initializers(buf, view, file_map, model.graph, graph_fields)


def _merge_runs(
    message: onnx.ModelProto | onnx.GraphProto | onnx.TensorProto,
    fields: list[_WireField],
    skip: int,
    view: memoryview,
    file_map: mmap.mmap | None,
) -> None:
    """Merge into `message` its `fields` (of `view`) but those numbered `skip`, a run of
    consecutive fields at a time (at most _PARSE_RUN bytes past its start), each run's pages
    of `file_map` handed back once merged (the last run's stay: the caller hands back all)."""
    run_start: int | None = None
    run_end = 0  # read only while run_start is set
    for f in fields:
        if f[0] == skip or (run_start is not None and f[4] - run_start > _PARSE_RUN):
            if run_start is not None:
                message.MergeFromString(view[run_start:run_end])
                if file_map is not None:
                    _drop_pages(file_map, run_start, run_end - run_start)
            run_start = None
            if f[0] == skip:
                continue
        if run_start is None:
            run_start = f[2]
        run_end = f[4]
    if run_start is not None:
        message.MergeFromString(view[run_start:run_end])


def _parse_initializers(
    buf: np.ndarray,
    view: memoryview,
    file_map: mmap.mmap | None,
    graph: onnx.GraphProto,
    graph_fields: list[_WireField],
) -> dict[str, tuple[int, int]]:
    """Add each initializer of `graph_fields` to `graph` without its raw_data, and return where
    each raw_data lies in `buf` (offset, length), by tensor name."""
    embedded: dict[str, tuple[int, int]] = {}
    for field in graph_fields:
        if field[0] != _INITIALIZER or field[1] != 2:
            continue
        tensor_fields = scan_fields(buf, field[3], field[4])
        tensor = graph.initializer.add()
        _merge_runs(tensor, tensor_fields, _RAW_DATA, view, file_map)
        raw = [f for f in tensor_fields if f[0] == _RAW_DATA and f[1] == 2]
        if raw:
            embedded[tensor.name] = (raw[-1][3], raw[-1][4] - raw[-1][3])
    return embedded
