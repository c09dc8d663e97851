"""Streaming ONNX writer: the graph is serialized by `onnx`, the weights are written straight
from numpy buffers, one tensor at a time, never through protobuf.

Every tensor's size is known before anything is written (the plan fixes shapes and types), so
the file layout, including the protobuf length prefixes, is computed first; payloads are then
produced in file order by callbacks (this is where quantization happens) and released after
they are written. The result parses as an ordinary ONNX file.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import onnx
from onnx import TensorProto

from quantrs.errors import OutputError

__all__ = ["Payload", "OutTensor", "write_model", "folder_problem", "PROTOBUF_LIMIT"]

# A serialized protobuf message cannot exceed 2 GiB; bigger models keep weights as external data.
PROTOBUF_LIMIT = 2**31 - 1
_GRAPH_TAG = bytes([(7 << 3) | 2])  # ModelProto.graph, length-delimited
_INITIALIZER_TAG = bytes([(5 << 3) | 2])  # GraphProto.initializer
_RAW_DATA_TAG = bytes([(9 << 3) | 2])  # TensorProto.raw_data
EXTERNAL_MIN_BYTES = 1024  # smaller tensors stay inside the model file, as onnx does
_ALIGN = 4096  # external payload offsets: page-aligned, so runtimes can map them


@dataclass
class Payload:
    """A tensor's bytes, produced on demand in file order.

    `produce` returns a C-contiguous array (or bytes) of exactly `size` bytes; `release`, if
    given, runs once the bytes are written.
    """

    size: int
    produce: Callable[[], np.ndarray | bytes]
    release: Callable[[], None] | None = None


@dataclass
class OutTensor:
    """An initializer of the output: its TensorProto without data, and its payload (None when
    the header already holds the values in typed fields)."""

    header: TensorProto
    payload: Payload | None


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(tag: bytes, size: int) -> int:
    return len(tag) + len(_varint(size)) + size


def write_model(
    model: onnx.ModelProto,
    tensors: Sequence[OutTensor],
    path: str | os.PathLike[str],
    *,
    external_data: bool | None = None,
    limit: int | None = None,
) -> list[Path]:
    """Write `model` (whose graph holds no initializers) plus `tensors` to `path`, atomically.

    Single file unless `external_data` is True, or None and the file would pass `limit`; then the
    payloads of tensors of EXTERNAL_MIN_BYTES or more go to `<name>.data` beside the model.
    Returns the files written. Nothing appears at `path` unless everything was written.
    """
    limit = PROTOBUF_LIMIT if limit is None else limit
    limit -= min(1 << 20, limit // 16)  # headroom for what the size estimate leaves out
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    problem = folder_problem(path)
    if problem is not None:
        raise OutputError(f"{path}: {problem}")
    if len(model.graph.initializer):
        raise ValueError("write_model takes the initializers separately, not in model.graph")
    if external_data is None:
        single = _single_file_size(model, tensors)
        external_data = single > limit
    # The folder is made inside the try, by one system call: a Ctrl-C arriving after it exists
    # runs the clean-up (tempfile.mkdtemp leaves a window between its mkdir and its return).
    # os.urandom, as secrets.token_hex does: importing secrets (hmac, _hashlib) costs ~3 ms a run
    tmp = folder / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        try:
            os.mkdir(tmp, 0o700)
        except OSError as exc:
            raise OutputError(f"{path}: cannot write to {folder} ({exc.strerror})") from None
        if external_data:
            data_name = path.name + ".data"
            _write_external(model, tensors, tmp / path.name, tmp / data_name, data_name, limit)
            os.replace(tmp / data_name, folder / data_name)
            os.replace(tmp / path.name, path)
            return [path, folder / data_name]
        _write_single(model, tensors, tmp / path.name)
        os.replace(tmp / path.name, path)
        return [path]
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the model ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def folder_problem(path: str | os.PathLike[str]) -> str | None:
    """Why `path` cannot be written for want of its folder, or None: the folder does not exist,
    or it (or a folder above it) is a file, not a folder."""
    folder = Path(path).parent if str(Path(path).parent) else Path(".")
    if folder.is_dir():
        return None
    for above in (folder, *folder.parents):
        if above.exists() and not above.is_dir():
            return f"{above} is a file, not a folder" + ("" if above == folder else f" (the output folder is {folder})")
        if above.exists():
            break
    return f"the output folder {folder} does not exist"


def _headers(tensors: Sequence[OutTensor]) -> list[bytes]:
    return [t.header.SerializeToString() for t in tensors]


def _tensor_size(header: bytes, payload: Payload | None) -> int:
    return len(header) + (_field(_RAW_DATA_TAG, payload.size) if payload is not None else 0)


def _single_file_size(model: onnx.ModelProto, tensors: Sequence[OutTensor]) -> int:
    graph_size = model.graph.ByteSize() + sum(
        _field(_INITIALIZER_TAG, _tensor_size(h, t.payload)) for h, t in zip(_headers(tensors), tensors)
    )
    rest = model.ByteSize() - _field(_GRAPH_TAG, model.graph.ByteSize())
    return rest + _field(_GRAPH_TAG, graph_size)


def _model_prefix(model: onnx.ModelProto) -> tuple[bytes, bytes]:
    """(ModelProto fields except the graph, GraphProto fields except the initializers)."""
    rest = onnx.ModelProto()
    rest.CopyFrom(model)
    rest.ClearField("graph")
    return rest.SerializeToString(), model.graph.SerializeToString()


def _emit(out: BinaryIO, payload: Payload) -> None:
    data = payload.produce()
    view = memoryview(data).cast("B")  # type: ignore[arg-type]  # ndarray is a buffer; numpy's stubs say so from Python 3.12
    if view.nbytes != payload.size:
        raise ValueError(f"a payload produced {view.nbytes} bytes instead of {payload.size}")
    out.write(view)
    if payload.release is not None:
        payload.release()


def _write_single(model: onnx.ModelProto, tensors: Sequence[OutTensor], path: Path) -> None:
    model_rest, graph_bytes = _model_prefix(model)
    headers = _headers(tensors)
    sizes = [_tensor_size(h, t.payload) for h, t in zip(headers, tensors)]
    graph_size = len(graph_bytes) + sum(_field(_INITIALIZER_TAG, s) for s in sizes)
    with open(path, "wb") as out:
        out.write(model_rest + _GRAPH_TAG + _varint(graph_size) + graph_bytes)
        for header, size, tensor in zip(headers, sizes, tensors):
            out.write(_INITIALIZER_TAG + _varint(size) + header)
            if tensor.payload is not None:
                out.write(_RAW_DATA_TAG + _varint(tensor.payload.size))
                _emit(out, tensor.payload)


def _write_external(
    model: onnx.ModelProto,
    tensors: Sequence[OutTensor],
    model_path: Path,
    data_path: Path,
    location: str,
    limit: int,
) -> None:
    # Lay the data file out first: every header then names its final offset.
    layout: list[tuple[OutTensor, int | None]] = []
    offset = 0
    graph = onnx.ModelProto()
    graph.CopyFrom(model)
    for tensor in tensors:
        header = TensorProto()
        header.CopyFrom(tensor.header)
        payload = tensor.payload
        if payload is not None and payload.size >= EXTERNAL_MIN_BYTES:
            offset = -(-offset // _ALIGN) * _ALIGN
            header.data_location = TensorProto.EXTERNAL
            del header.external_data[:]
            for key, value in (("location", location), ("offset", str(offset)), ("length", str(payload.size))):
                entry = header.external_data.add()
                entry.key, entry.value = key, value
            layout.append((tensor, offset))
            offset += payload.size
        else:
            layout.append((tensor, None))
        graph.graph.initializer.append(header)
    small = [t.payload for t, off in layout if off is None and t.payload is not None]
    if graph.ByteSize() + sum(p.size for p in small) > limit:
        raise OutputError(f"{model_path.name}: the graph itself exceeds the 2 GiB protobuf limit")
    # Payloads are produced strictly in file order; the model file is written after them so
    # that small tensors kept inline can be produced in that same order.
    inline: dict[int, bytes] = {}
    with open(data_path, "wb") as data:
        for i, (tensor, off) in enumerate(layout):
            if tensor.payload is None:
                continue
            if off is None:
                produced = tensor.payload.produce()
                inline[i] = memoryview(produced).cast("B").tobytes()  # type: ignore[arg-type]  # ndarray is a buffer; numpy's stubs say so from Python 3.12
                if tensor.payload.release is not None:
                    tensor.payload.release()
                continue
            if data.tell() < off:
                data.write(b"\0" * (off - data.tell()))
            _emit(data, tensor.payload)
    for i, raw in inline.items():
        graph.graph.initializer[i].raw_data = raw
    with open(model_path, "wb") as out:
        out.write(graph.SerializeToString())
