"""Reading ONNX models and writing them back, atomically.

The graph is parsed with `onnx`; the weights stay behind one small interface, WeightStore
(name -> read-only array, dtype, shape, where the bytes live), so that the rest of quantrs never
handles TensorProto payloads and the loader can become a streaming, memory-mapped one without
touching its callers. External data is memory-mapped and must stay inside the model's folder.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from quantrs.errors import ModelLoadError, OutputError

__all__ = ["WeightInfo", "WeightStore", "LoadedModel", "load_model", "save_model", "PROTOBUF_LIMIT"]

logger = logging.getLogger(__name__)

# A serialized protobuf message cannot exceed 2 GiB; bigger models keep weights as external data.
PROTOBUF_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class WeightInfo:
    """What quantrs knows about one initializer without reading its values."""

    name: str
    data_type: int  # onnx.TensorProto.DataType
    shape: tuple[int, ...]
    location: str  # "embedded" or the external file's name relative to the model

    @property
    def dtype_name(self) -> str:
        return TensorProto.DataType.Name(self.data_type)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        np_type = helper.tensor_dtype_to_np_dtype(self.data_type)
        return self.size * np.dtype(np_type).itemsize


class WeightStore:
    """Read-only access to a model's initializers by name."""

    def __init__(self, graph: onnx.GraphProto, base_dir: Path, model_path: Path) -> None:
        self._tensors = {t.name: t for t in graph.initializer}
        self._base_dir = base_dir
        self._model_path = model_path

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
        return WeightInfo(name=name, data_type=t.data_type, shape=tuple(t.dims), location=location)

    def array(self, name: str) -> np.ndarray:
        """The initializer's values as a read-only array (a view of the file where possible)."""
        t = self._tensors[name]
        if t.data_location == TensorProto.EXTERNAL:
            arr = self._external_array(t)
        elif t.HasField("raw_data") and t.data_type not in _SUB_BYTE:
            dtype = helper.tensor_dtype_to_np_dtype(t.data_type)
            raw = t.raw_data
            expected = int(np.prod(t.dims, dtype=np.int64)) * np.dtype(dtype).itemsize
            if len(raw) != expected:
                raise ModelLoadError(
                    f"{self._model_path}: initializer {name!r} holds {len(raw)} bytes, "
                    f"its shape {list(t.dims)} needs {expected} (truncated or corrupt file)"
                )
            arr = np.frombuffer(raw, dtype=dtype).reshape(tuple(t.dims))
        else:
            try:
                arr = onnx.numpy_helper.to_array(t)
            except Exception as exc:  # onnx raises bare ValueError/TypeError on bad payloads
                raise ModelLoadError(f"{self._model_path}: cannot read initializer {name!r}: {exc}") from None
        arr = arr.view()
        arr.flags.writeable = False
        return arr

    def _external_array(self, t: TensorProto) -> np.ndarray:
        fields = _external_fields(t)
        path = resolve_external_path(self._base_dir, fields.get("location", ""), self._model_path)
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type))
        offset = int(fields.get("offset", 0))
        count = int(np.prod(t.dims, dtype=np.int64))
        length = int(fields.get("length", count * dtype.itemsize))
        file_size = path.stat().st_size
        if length != count * dtype.itemsize or offset < 0 or offset + length > file_size:
            raise ModelLoadError(
                f"{self._model_path}: external data of {t.name!r} ({path.name}, offset {offset}, "
                f"length {length}) does not fit its shape {list(t.dims)} or the file ({file_size} bytes)"
            )
        if count == 0:
            return np.empty(tuple(t.dims), dtype=dtype)
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(t.dims))

    def materialize(self, t: TensorProto) -> None:
        """Make an externally stored initializer embedded (its bytes copied into raw_data)."""
        if t.data_location != TensorProto.EXTERNAL:
            return
        values = np.ascontiguousarray(self._external_array(t))
        del t.external_data[:]
        t.data_location = TensorProto.DEFAULT
        t.raw_data = values.tobytes()


_SUB_BYTE = {TensorProto.INT4, TensorProto.UINT4}


def _external_fields(t: TensorProto) -> dict[str, str]:
    return {e.key: e.value for e in t.external_data}


def resolve_external_path(base_dir: Path, location: str, model_path: Path) -> Path:
    """The external-data file `location` names, refused unless it stays inside base_dir.

    Absolute paths, `..`, symbolic links leading out and hard links are refused: a model file must
    not make quantrs read (or later write) anything outside the model's own folder.
    """
    if not location or os.path.isabs(location) or Path(location).drive:
        raise ModelLoadError(f"{model_path}: external data location {location!r} must be a relative path")
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


def default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return 1


def load_model(path: str | os.PathLike[str]) -> LoadedModel:
    """Parse an ONNX file. Raises ModelLoadError naming the file for anything that is not one."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file")
    if not path.is_file():
        raise ModelLoadError(f"{path}: not a file")
    size = path.stat().st_size
    if size == 0:
        raise ModelLoadError(f"{path}: the file is empty, not an ONNX model")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends: not ONNX, or truncated
        raise ModelLoadError(f"{path}: not a valid ONNX model ({_one_line(exc)})") from None
    if not proto.HasField("graph") or (len(proto.graph.node) == 0 and len(proto.graph.initializer) == 0):
        raise ModelLoadError(f"{path}: not a valid ONNX model (no graph)")
    if proto.ir_version < 3 or not proto.opset_import:
        raise ModelLoadError(f"{path}: not a valid ONNX model (ir_version {proto.ir_version}, no opset)")
    return LoadedModel(path=path, proto=proto, weights=WeightStore(proto.graph, path.parent, path), file_size=size)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def save_model(model: onnx.ModelProto, path: str | os.PathLike[str], *, external_data: bool | None = None) -> list[Path]:
    """Write `model` to `path` atomically; returns the files written.

    Everything is first written into a temporary folder beside `path` and moved into place only
    when complete, so a failure never leaves a partial output. External data (`<name>.data`
    beside the model) is used when asked, or automatically when the model would exceed the 2 GiB
    protobuf limit.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{path}: the output folder {folder} does not exist")
    if external_data is None:
        external_data = model.ByteSize() > PROTOBUF_LIMIT - (1 << 24)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder))
    except OSError as exc:
        raise OutputError(f"{path}: cannot write to {folder} ({exc.strerror})") from None
    try:
        written = []
        if external_data:
            data_name = path.name + ".data"
            onnx.save_model(
                model,
                str(tmp / path.name),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data_name,
                size_threshold=1024,
            )
            if (tmp / data_name).exists():
                os.replace(tmp / data_name, folder / data_name)
                written.append(folder / data_name)
        else:
            onnx.save_model(model, str(tmp / path.name))
        os.replace(tmp / path.name, path)
        written.insert(0, path)
        return written
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the model ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
