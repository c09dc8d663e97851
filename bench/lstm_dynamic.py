"""Dynamic INT8 on an LSTM: float, quantrs weight-only, quantrs `--dynamic`
(com.microsoft.DynamicQuantizeLSTM) and onnxruntime's `quantize_dynamic`, in one run.

    python bench/lstm_dynamic.py WORKDIR [--sizes 128x256 512x1024] [--repeat 30] [--busy]

One LSTM layer (W, R, B initializers; inputs x hidden per size), 32 steps, batch 8, one
thread; models run interleaved in rounds, medians; cosine to float's outputs. With --busy every
model is timed again beside one competing CPU-bound process (bench/busy_threads.py). Prints a
Markdown table (for bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from busy_threads import competing_process  # noqa: E402
from dynamic_latency import run_interleaved  # noqa: E402

import quantrs  # noqa: E402

STEPS, BATCH = 32, 8


def build(path: Path, inputs: int, hidden: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((1, 4 * hidden, inputs)) / np.sqrt(inputs)).astype(np.float32)
    r = (rng.standard_normal((1, 4 * hidden, hidden)) / np.sqrt(hidden)).astype(np.float32)
    b = (rng.standard_normal((1, 8 * hidden)) * 0.1).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("LSTM", ["x", "W", "R", "B"], ["y"], hidden_size=hidden)],
        "lstm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [STEPS, BATCH, inputs])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [STEPS, 1, BATCH, hidden])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(r, "R"), numpy_helper.from_array(b, "B")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return {"x": rng.standard_normal((STEPS, BATCH, inputs)).astype(np.float32)}


def variants(src: Path) -> dict[str, Path]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = {"float": src}
    out["quantrs INT8 weight-only"] = src.with_name("weight_only.onnx")
    quantrs.quantize(src, out["quantrs INT8 weight-only"], quantrs.QuantizeConfig(min_elements=0))
    out["quantrs --dynamic"] = src.with_name("dynamic.onnx")
    quantrs.quantize(src, out["quantrs --dynamic"], quantrs.QuantizeConfig(min_elements=0, dynamic=True))
    out["ort quantize_dynamic"] = src.with_name("ort.onnx")
    quantize_dynamic(str(src), str(out["ort quantize_dynamic"]), weight_type=QuantType.QInt8, per_channel=True)
    return out


def measure(models: dict[str, Path], feeds: dict[str, np.ndarray], repeat: int) -> list[tuple[str, float, float]]:
    """(name, median ms, cosine to float) per model."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sessions = {k: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for k, p in models.items()}
    outputs, times = run_interleaved(sessions, feeds, repeat)
    ref = outputs["float"]
    return [
        (k, statistics.median(times[k]) * 1e3, float(ref @ outputs[k] / np.linalg.norm(ref) / np.linalg.norm(outputs[k])))
        for k in sessions
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--sizes", nargs="+", default=["128x256", "512x1024"], help="inputs x hidden")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--busy", action="store_true", help="also time every model beside a competing process")
    args = parser.parse_args(argv)
    print("| LSTM (inputs x hidden) | condition | model | latency | vs float | cosine to float |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        inputs, hidden = (int(v) for v in size.split("x"))
        folder = args.workdir / f"lstm_{size}"
        folder.mkdir(parents=True, exist_ok=True)
        feeds = build(folder / "float.onnx", inputs, hidden)
        models = variants(folder / "float.onnx")
        for busy in (False, True) if args.busy else (False,):
            with competing_process(busy, limit=600.0):
                rows = measure(models, feeds, args.repeat)
            base = rows[0][1]
            for name, ms, cos in rows:
                condition = "busy" if busy else "idle"
                print(f"| {size} | {condition} | {name} | {ms:.3f} ms | {base / ms:.2f}x | {cos:.5f} |")


if __name__ == "__main__":
    main()
