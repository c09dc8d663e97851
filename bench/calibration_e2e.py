"""Static calibration end to end, against plain onnxruntime inference of the same model on the
same samples, in one run. Each side runs as its own process; peak RSS from the kernel.

    python bench/calibration_e2e.py WORKDIR [--models conv12 600M-ext] [--samples 8]

- conv12: twelve 3x3 convs whose 25 activations are 33 MB each (the issue's memory case);
- 600M-ext: the 600M-parameter MatMul stack with external data (2.4 GB: over the protobuf limit).

Reports, per model: onnxruntime inference (time, peak RSS), quantrs calibrate (time, peak RSS,
time inside onnxruntime, runs per sample), and the ratios: calibration peak over inference peak,
the statistics' overhead (collecting them, sessions included, minus the time inside
onnxruntime's runs) over inference time, and quantrs' own time (everything but float
inference: loading, statistics, range picks, the rewrite and the streamed output; not the
fidelity check, which runs the quantized model on the last samples and is reported on its
own) over inference time.
Prints a Markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from quantrs.synthetic import layers_for, matmul_stack

HIDDEN = 4096

INFER = """
import json, sys, time
import numpy as np, onnxruntime as ort
model, data = sys.argv[1:3]
samples = np.load(data, mmap_mode="r")
began = time.perf_counter()
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
loaded = time.perf_counter()
for s in samples:
    session.run(None, {session.get_inputs()[0].name: np.array(s)})
done = time.perf_counter()
peak_mb = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024
print(json.dumps({"seconds": done - began, "run_seconds": done - loaded, "peak_mb": peak_mb}))
"""

CALIBRATE = """
import json, sys, time
import quantrs
model, data, out = sys.argv[1:4]
began = time.perf_counter()
report = quantrs.calibrate(model, out, data)
peak_mb = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024
print(json.dumps({"seconds": time.perf_counter() - began, "inference_seconds": report.inference_seconds,
                  "fidelity_seconds": report.fidelity_seconds, "collection_seconds": report.collection_seconds,
                  "groups": report.inference_groups, "peak_mb": peak_mb,
                  "cosine": min(o.cosine for o in report.fidelity)}))
"""


def conv12(folder: Path) -> tuple[Path, tuple[int, ...]]:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(12):
        inits.append(numpy_helper.from_array((rng.standard_normal((32, 32, 3, 3)) * 0.05).astype(np.float32), f"w{i}"))
        nodes += [
            helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
        ]
        prev = f"r{i}"
    nodes.append(helper.make_node("ReduceMean", [prev], ["y"], axes=[2, 3], keepdims=0))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 512, 512])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])
    model = helper.make_model(helper.make_graph(nodes, "conv12", [x], [y], inits), opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = folder / "conv12.onnx"
    onnx.save(model, str(path))
    return path, (1, 32, 512, 512)


def stack(folder: Path, params: float) -> tuple[Path, tuple[int, ...]]:
    path = folder / f"stack{int(params / 1e6)}M.onnx"
    if not path.exists():
        matmul_stack(path, layers_for(params, HIDDEN), HIDDEN, external_data=True)
    return path, (1, HIDDEN)


def write_samples(path: Path, count: int, shape: tuple[int, ...]) -> None:
    """One sample at a time into a mapped .npy: this process stays small, and its children's
    peak RSS (which on Linux starts from the parent's at fork) is their own."""
    rng = np.random.default_rng(1)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(count, *shape))
    for i in range(count):
        out[i] = rng.standard_normal(shape, dtype=np.float32)
    out.flush()
    del out


def run(script: str, *args) -> dict:
    out = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--models", nargs="+", default=["conv12", "600M-ext"])
    parser.add_argument("--samples", type=int, default=8)
    args = parser.parse_args(argv)
    args.folder.mkdir(parents=True, exist_ok=True)
    print(
        "| model | samples | ort inference | ort peak | quantrs calibrate | in ort | runs/sample | quantrs peak | peak ratio "
        "| fidelity check | statistics overhead / inference | own time / inference | cosine |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        src, shape = conv12(args.folder) if name == "conv12" else stack(args.folder, 600e6)
        data = args.folder / f"{name}-samples.npy"
        write_samples(data, args.samples, shape)
        infer = run(INFER, src, data)
        calib = run(CALIBRATE, src, data, args.folder / f"{name}-static.onnx")
        own = calib["seconds"] - calib["inference_seconds"] - calib["fidelity_seconds"]
        print(
            f"| {name} | {args.samples} | {infer['seconds']:.2f} s | {infer['peak_mb']:.0f} MB | {calib['seconds']:.2f} s | "
            f"{calib['inference_seconds']:.2f} s | {calib['groups']} | {calib['peak_mb']:.0f} MB | "
            f"{calib['peak_mb'] / infer['peak_mb']:.2f}x | {calib['fidelity_seconds']:.2f} s | "
            f"{(calib['collection_seconds'] - calib['inference_seconds']) / infer['seconds']:.2f} | "
            f"{own / infer['seconds']:.2f} | {calib['cosine']:.4f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
