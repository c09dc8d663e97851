"""What fuzzing the readers of untrusted bytes found (fuzz/, README "Fuzzing"), each refused now
with a one-line QuantrsError naming the file, in bounded memory.

The inputs in tests/data/fuzz/ are the fuzzers' findings, minimized, as the readers see them
(the sample targets' selector byte is dropped: every one of them was found with the input
"x" of a dynamic batch, X below). Before its fix, each escaped as another exception or
allocated what a header claims. The cases built here are the same faults made by hand: the
ones the fuzzers had not reached when the fixes for their neighbours went in.
"""

from __future__ import annotations

import io
import re
import shutil
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from quantrs.errors import ConfigError, ModelLoadError
from quantrs.model import load_model
from quantrs.samples import InputSpec, load_samples

DATA = Path(__file__).parent / "data" / "fuzz"
X = [InputSpec("x", np.dtype(np.float32), ("N", 4))]
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


def sample_source(tmp_path: Path, name: str, data: bytes) -> Path:
    """The file as the sample targets lay it out: data.npy / data.npz, or a test data set
    folder holding input_0.pb."""
    if name.endswith(".pb"):
        (tmp_path / "input_0.pb").write_bytes(data)
        return tmp_path
    path = tmp_path / ("data" + Path(name).suffix)
    path.write_bytes(data)
    return path


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


@pytest.mark.parametrize(
    "name, message",
    [
        # a 2.0 header whose length field says 352 MB: numpy read that much before checking it
        ("npy-header-length.npy", "the .npy header claims 369104500 bytes, the file holds 0 after it"),
        # an archive member that is not an .npy: numpy hands its bytes over, AttributeError in the splitting
        ("npz-member-not-an-array.npz", "x.npy: not a .npy array (the magic string is not correct"),
        # dims [8, 2**63 - 1, 0] of UINT2: MemoryError from numpy for a tensor of no values
        ("pb-shape-overflow.pb", "cannot read the tensor (its shape [8, 9223372036854775807, 0] is not one an array can have)"),
    ],
)
def test_sample_findings(tmp_path, name, message):
    source = sample_source(tmp_path, name, (DATA / name).read_bytes())
    where = source / "input_0.pb" if source.is_dir() else source
    refused(lambda: load_samples(source, X), ConfigError, f"{where}: {message}")


def npy(shape, data: bytes = b"", descr: str = "<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


def npz(member: bytes, compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as archive:
        archive.writestr("x.npy", member)
    return buf.getvalue()


@pytest.mark.parametrize(
    "name, data, message",
    [
        # a sample row the header claims (1 GB) was allocated before reading the 16 bytes there are
        ("row.npy", npy((1, 2**28, 4), b"\0" * 16), "the file is shorter than its header says (shape (1, 268435456, 4)"),
        # a member claiming 1.6 GB: numpy allocated it, then found 64 bytes
        ("claim.npz", npz(npy((100000, 1000, 4), b"\0" * 64)), "x.npy: the file is shorter than its header says"),
        # a 255-byte bzip2 member inflating to 16 MB (to gigabytes as easily): numpy writes no such thing
        ("bzip2.npz", npz(npy((10**6, 4), b"\0" * 16 * 10**6), zipfile.ZIP_BZIP2), "the archive's members claim 16000128 bytes"),
        # (5, 2**62, 2**62, 0) holds no values, but numpy cannot reshape into it: ValueError
        ("overflow.npy", npy((5, 2**62, 2**62, 0)), "the .npy header gives the shape (5, 4611686018427387904"),
        # 10**12 samples of shape (0, 4) in a 128-byte file: read one by one, for ever
        (
            "empty.npy",
            npy((10**12, 0, 4)),
            "input 'x' has shape (1000000000000, 0, 4): 1000000000000 samples that hold no values",
        ),
    ],
)
def test_sample_files_claiming_more_than_they_hold(tmp_path, name, data, message):
    source = sample_source(tmp_path, name, data)
    refused(lambda: load_samples(source, X), ConfigError, f"{source}: {message}")


def test_a_deflated_npz_still_reads_what_it_holds(tmp_path):
    """The bound on an archive's claims is deflate's own (1032 to 1): 16 MB of zeros in 16 KB
    is an honest archive, and is read."""
    data = npz(npy((10**6, 4), b"\0" * 16 * 10**6), zipfile.ZIP_DEFLATED)
    assert len(data) < 20_000
    (sample,) = load_samples(sample_source(tmp_path, "zeros.npz", data), X)
    assert sample["x"].shape == (10**6, 4) and not sample["x"].any()


def raw_tensor(dims, data: bytes, data_type: int = TensorProto.FLOAT) -> TensorProto:
    tensor = TensorProto(name="w", data_type=data_type, dims=dims)
    tensor.raw_data = data
    return tensor


def one_weight_model(tensor: TensorProto) -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["w"], ["y"])],
        "g",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [tensor],
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
        pytest.param(
            raw_tensor([2**32, 2**32], b""),
            "'w' has the shape [4294967296, 4294967296], not one a tensor can have",
            id="wrapping-dims",
        ),
        pytest.param(
            raw_tensor([-2, -2], b"\0" * 16), "'w' has the shape [-2, -2], not one a tensor can have", id="negative-dims"
        ),
        pytest.param(
            external([2**32, 2**32]),
            "'w' has the shape [4294967296, 4294967296], not one a tensor can have",
            id="wrapping-external-dims",
        ),
        # a MemoryError from numpy, for a 4-bit tensor of no values
        pytest.param(
            raw_tensor([2**40, 2**40, 0], b"", TensorProto.INT4),
            "'w' has the shape [1099511627776, 1099511627776, 0]",
            id="int4-no-values",
        ),
        pytest.param(raw_tensor([1], b"\0", TensorProto.STRING), "string tensor 'w' holds raw bytes", id="string-raw"),
        pytest.param(
            raw_tensor([1], b"\0" * 4, 999), "tensor 'w' has data type 999, not an onnx tensor type", id="unknown-data-type"
        ),
        # int() raised ValueError
        pytest.param(
            external([4], offset="zero"),
            "the external data offset of 'w' is 'zero', not a number of bytes",
            id="offset-not-a-number",
        ),
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
