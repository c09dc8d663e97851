"""The seed inputs of the fuzz targets, written fresh into a folder per target.

Models: the test models of tests/builders.py (whole, and with their weights cut to a few
values, so that mutations reach the graph), examples/small_cnn.onnx's graph with tiny weights,
and the weight layouts quantrs reads (Constant nodes, If bodies, float16, int4, typed fields,
external data inside and outside the folder). Samples: small .npy/.npz files as numpy writes
them and onnx TensorProto files as onnxruntime's test_data_set folders hold them, each behind
the selector byte the sample targets read first (fuzz/harness.py, SPECS).

    python fuzz/seeds.py OUT_DIR        # OUT_DIR/{model,npy,npz,pb}/
"""

from __future__ import annotations

import hashlib
import io
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("model", "npy", "npz", "pb")


def _tiny(model: onnx.ModelProto, keep: int = 4) -> onnx.ModelProto:
    """The model with every initializer cut to its first `keep` values (dims [keep])."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        values = numpy_helper.to_array(t).reshape(-1)[:keep]
        t.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(values), t.name))
    return out


def _graph(nodes, inits, inputs=None, outputs=None) -> onnx.GraphProto:
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])]
    outputs = outputs or [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])]
    return helper.make_graph(nodes, "g", inputs, outputs, inits)


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _external(name: str, location: str, dims: list[int], offset: int = 0, length: int | None = None) -> TensorProto:
    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=dims, data_location=TensorProto.EXTERNAL)
    entries = {"location": location, "offset": str(offset)}
    if length is not None:
        entries["length"] = str(length)
    for key, value in entries.items():
        t.external_data.add(key=key, value=value)
    return t


def model_seeds() -> Iterator[bytes]:
    sys.path.insert(0, str(ROOT / "tests"))
    from builders import BUILDERS

    for name, build in BUILDERS.items():
        model, _ = build()
        if name in ("mlp", "embedding"):  # two whole ones (up to 40 KB); the rest cut down
            yield model.SerializeToString()
        yield _tiny(model).SerializeToString()
    yield _tiny(onnx.load(str(ROOT / "examples" / "small_cnn.onnx"))).SerializeToString()

    w = np.arange(16, dtype=np.float32).reshape(4, 4)
    mm = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
    yield _model(_graph([mm], [numpy_helper.from_array(w, "w")])).SerializeToString()
    # float16, int4 and typed (not raw) payloads; a scalar; no dims at all
    yield _model(_graph([mm], [numpy_helper.from_array(w.astype(np.float16), "w")])).SerializeToString()
    yield _model(_graph([mm], [helper.make_tensor("w", TensorProto.INT4, [4, 4], [1, -2, 3, -4] * 4)])).SerializeToString()
    yield _model(_graph([mm], [helper.make_tensor("w", TensorProto.FLOAT, [4, 4], w.reshape(-1).tolist())])).SerializeToString()
    yield _model(
        _graph(
            [mm],
            [helper.make_tensor("w", TensorProto.INT64, [2], [1, 2]), helper.make_tensor("s", TensorProto.STRING, [1], [b"a"])],
        )
    ).SerializeToString()
    # a Constant node's value, and an If whose branches hold their own weights
    const = helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w, "w"))
    yield _model(_graph([const, mm], [])).SerializeToString()
    branch = {
        side: helper.make_graph(
            [helper.make_node("MatMul", ["x", f"w_{side}"], [f"y_{side}"])],
            side,
            [],
            [helper.make_tensor_value_info(f"y_{side}", TensorProto.FLOAT, ["N", 4])],
            [numpy_helper.from_array(w * (i + 1), f"w_{side}")],
        )
        for i, side in enumerate(("then", "else"))
    }
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    node = helper.make_node("If", ["c"], ["y"], then_branch=branch["then"], else_branch=branch["else"], name="pick")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    yield _model(_graph([node], [], [x, cond])).SerializeToString()
    # external data: in the folder (fuzz_model writes weights.bin), out of it, through a link
    for location, offset, length in (
        ("weights.bin", 0, None),
        ("weights.bin", 64, 64),
        ("../secret.bin", 0, None),
        ("link.bin", 0, 64),
    ):
        yield _model(_graph([mm], [_external("w", location, [4, 4], offset, length)])).SerializeToString()
    # the graph field given twice (protobuf merges them; load_model parses it all)
    once = _model(_graph([mm], [numpy_helper.from_array(w, "w")])).SerializeToString()
    yield once + b"\x3a\x00"


def _npy(array: np.ndarray, **kwargs) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=False, **kwargs)
    return buf.getvalue()


def npy_seeds() -> Iterator[bytes]:
    rng = np.random.default_rng(0)
    f = rng.standard_normal((3, 2, 4)).astype(np.float32)
    files = [
        (0, _npy(f[0])),  # (2, 4) one sample of a dynamic batch
        (0x80, _npy(f[0])),  # the same, split per row
        (0, _npy(f)),  # stacked on a new axis 0
        (1, _npy(f.reshape(6, 4))),  # rows of the fixed batch 2
        (2, _npy(f[:, :1])),
        (3, _npy(np.float32(2.5))),
        (3, _npy(f[0, 0])),
        (4, _npy(np.arange(12, dtype=np.int64).reshape(3, 4))),
        (5, _npy(f[:, :, :3].astype(np.float16))),
        (0, _npy(np.asfortranarray(f[0]))),
        (0, _npy(f[0].astype(">f4"))),
        (0, _npy(f[0], version=(2, 0))),
        (0, _npy(np.zeros((0, 4), np.float32))),
        (0, _npy(f[0])[:-5]),  # truncated
        (2, _npy(np.ones((1, 1, 4), np.float32))),
    ]
    structured = np.zeros(2, dtype=[("a", "<f4"), ("b", "<i8")])
    files.append((0, _npy(structured)))
    for selector, data in files:
        yield bytes([selector]) + data


def _npz(arrays: dict[str, np.ndarray], compressed: bool = False) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def npz_seeds() -> Iterator[bytes]:
    rng = np.random.default_rng(0)
    f = rng.standard_normal((3, 2, 4)).astype(np.float32)
    ids = rng.integers(0, 10, size=(3, 1, 3)).astype(np.int64)
    feats = rng.standard_normal((3, 5, 2)).astype(np.float32)
    files = [
        (0, _npz({"x": f[0]})),
        (0x80, _npz({"x": f[0]}, compressed=True)),
        (1, _npz({"x": f.reshape(6, 4)})),
        (6, _npz({"ids": ids, "feats": feats})),
        (6, _npz({"ids": ids[0], "feats": feats[0]}, compressed=True)),
        (7, _npz({"x": f, "sr": np.array(16000, np.int64)})),
        (0, _npz({"y": f[0]})),
    ]
    stored = io.BytesIO()  # a member that is not an .npy
    with zipfile.ZipFile(stored, "w") as z:
        z.writestr("x.npy", b"not an array")
    files.append((0, stored.getvalue()))
    for selector, data in files:
        yield bytes([selector]) + data


def pb_seeds() -> Iterator[bytes]:
    rng = np.random.default_rng(0)
    f = rng.standard_normal((2, 4)).astype(np.float32)
    tensors = [
        (0, numpy_helper.from_array(f, "x")),
        (0x80, numpy_helper.from_array(f)),  # unnamed: feeds input 0
        (1, numpy_helper.from_array(f, "x")),
        (3, numpy_helper.from_array(np.float32(1.5), "x")),
        (4, numpy_helper.from_array(np.arange(6, dtype=np.int64).reshape(2, 3), "x")),
        (5, numpy_helper.from_array(f[:, :3].astype(np.float16), "x")),
        (6, numpy_helper.from_array(rng.integers(0, 10, size=(1, 3)).astype(np.int64), "ids")),
        (0, helper.make_tensor("x", TensorProto.FLOAT, [2, 4], f.reshape(-1).tolist())),  # float_data
        (0, helper.make_tensor("x", TensorProto.BFLOAT16, [2, 4], f.reshape(-1).tolist())),
        (0, helper.make_tensor("x", TensorProto.INT4, [2, 4], [1, 2, 3, 4, -1, -2, -3, -4])),
        (0, helper.make_tensor("x", TensorProto.STRING, [2], [b"a", b"b"])),
        (0, helper.make_tensor("x", TensorProto.FLOAT8E4M3FN, [2, 4], f.reshape(-1).tolist())),
    ]
    # external data: in the set folder (fuzz_pb writes data.bin), out of it, through a link
    for location, offset, length in (
        ("data.bin", 0, None),
        ("data.bin", 32, 32),
        ("../secret.bin", 0, None),
        ("link.bin", 0, 32),
    ):
        tensors.append((0, _external("x", location, [2, 4], offset, length)))
    for selector, tensor in tensors:
        yield bytes([selector]) + tensor.SerializeToString()


SEEDS = {"model": model_seeds, "npy": npy_seeds, "npz": npz_seeds, "pb": pb_seeds}


def write_seeds(target: str, folder: Path) -> int:
    """Write the target's seeds into `folder` (named by content, as libFuzzer names its own)."""
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for data in SEEDS[target]():
        (folder / hashlib.sha1(data).hexdigest()).write_bytes(data)
        count += 1
    return count


if __name__ == "__main__":
    out = Path(sys.argv[1])
    for target in TARGETS:
        print(target, write_seeds(target, out / target))
