"""What fuzzing the readers of untrusted bytes found (fuzz/, README "Fuzzing"), each refused now
with a one-line QuantrsError naming the file, in bounded memory.

The inputs in tests/data/fuzz/ are the fuzzers' findings, minimized, as the readers see them.
Before its fix, each escaped as another exception or allocated what a header claims. The cases built here are the same faults made by hand: the
ones the fuzzers had not reached when the fixes for their neighbours went in.
"""

from __future__ import annotations

import re
import shutil
import tracemalloc
from pathlib import Path

import pytest
from onnx import TensorProto, helper

from quantrs.errors import ModelLoadError
from quantrs.model import load_model

DATA = Path(__file__).parent / "data" / "fuzz"
MB = 1 << 20


def refused(read, error: type[Exception], message: str, limit: int = 4 * MB) -> None:
    """`read()` raises `error` with `message`, holding less than `limit` bytes at any time
    (tracemalloc: Python objects and numpy arrays) on the way."""
    tracemalloc.start()
    try:
        with pytest.raises(error, match=re.escape(message)):
            read()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit, f"{peak} bytes held while refusing the input"


def read_model(path: Path) -> None:
    """What fuzz/fuzz_model.py does with its input: load it, read every stored tensor."""
    model = load_model(path)
    for info in list(model.weights):
        model.weights.array(info.name)
        model.weights.file_range(info.name)


@pytest.mark.parametrize(
    "name, message",
    [
        # an initializer of an If branch with data type 0 (UNDEFINED): KeyError from onnx.helper
        ("model-undefined-data-type.onnx", "tensor 'w_then' has data type 0, not an onnx tensor type"),
        # an external-data location that is not UTF-8: protobuf hands it over as bytes, TypeError from pathlib
        ("model-external-location-not-utf8.onnx", "the external data entries of 'w' are not UTF-8 text"),
        # a location holding a NUL: ValueError from os.path.realpath
        ("model-external-location-nul.onnx", r"external data location '\x00eights.bin' holds a NUL character"),
    ],
)
def test_model_findings(tmp_path, name, message):
    path = tmp_path / "model.onnx"
    shutil.copy(DATA / name, path)
    refused(lambda: read_model(path), ModelLoadError, f"{path}: {message}")


def raw_tensor(dims, data: bytes, data_type: int = TensorProto.FLOAT) -> TensorProto:
    tensor = TensorProto(name="w", data_type=data_type, dims=dims)
    tensor.raw_data = data
    return tensor


def one_weight_model(tensor: TensorProto) -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["w"], ["y"])], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [tensor]
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def external(dims, **entries: str) -> TensorProto:
    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=dims, data_location=TensorProto.EXTERNAL)
    for key, value in {"location": "w.bin", **entries}.items():
        tensor.external_data.add(key=key, value=value)
    return tensor


@pytest.mark.parametrize(
    "tensor, message",
    [
        # int64 products wrap to 0, matching an empty payload; reshape then raised ValueError
        pytest.param(raw_tensor([2**32, 2**32], b""), "'w' has the shape [4294967296, 4294967296], not one a tensor can have", id="wrapping-dims"),
        pytest.param(raw_tensor([-2, -2], b"\0" * 16), "'w' has the shape [-2, -2], not one a tensor can have", id="negative-dims"),
        pytest.param(external([2**32, 2**32]), "'w' has the shape [4294967296, 4294967296], not one a tensor can have", id="wrapping-external-dims"),
        # a MemoryError from numpy, for a 4-bit tensor of no values
        pytest.param(raw_tensor([2**40, 2**40, 0], b"", TensorProto.INT4), "'w' has the shape [1099511627776, 1099511627776, 0]", id="int4-no-values"),
        pytest.param(raw_tensor([1], b"\0", TensorProto.STRING), "string tensor 'w' holds raw bytes", id="string-raw"),
        pytest.param(raw_tensor([1], b"\0" * 4, 999), "tensor 'w' has data type 999, not an onnx tensor type", id="unknown-data-type"),
        # int() raised ValueError
        pytest.param(external([4], offset="zero"), "the external data offset of 'w' is 'zero', not a number of bytes", id="offset-not-a-number"),
    ],
)
def test_model_tensors_claiming_what_no_tensor_holds(tmp_path, tensor, message):
    path = tmp_path / "model.onnx"
    path.write_bytes(one_weight_model(tensor))
    (tmp_path / "w.bin").write_bytes(b"\0" * 16)
    refused(lambda: read_model(path), ModelLoadError, f"{path}: {message}")


def test_an_external_location_too_long_for_the_file_system(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(one_weight_model(external([4], location="d/" * 3000 + "w.bin")))
    refused(lambda: read_model(path), ModelLoadError, f"{path}: external data location 'd/d/d/")
