"""Does writing one weight's codes while the next is quantized pay on this machine? INT8 per
channel over every weight of a model, in-process: the kernels on `--threads` threads, and the
codes written either right after each weight (serial, as quantrs does) or by a writer thread
while the next weight is quantized (two code buffers, each reused once its write is done; the
input's pages released after the write, as quantrs does). Prints the best and median seconds
of each way, interleaved over `--repeat` runs.

    python bench/write_overlap.py MODEL.onnx [--threads 2] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from quantrs import kernels
from quantrs.model import load_model


def run(model_path: str, out_path: str, *, overlap: bool, threads: int) -> float:
    began = time.perf_counter()
    model = load_model(model_path)
    names = [w.name for w in model.weights if w.nbytes >= 1 << 20 and len(w.shape) == 2]
    largest = max(model.weights.info(n).size for n in names)
    buffers = [np.empty(largest, np.uint8) for _ in range(2)]
    pending: list[Future | None] = [None, None]
    with open(out_path, "wb") as out, ThreadPoolExecutor(1) as writer:

        def write(codes: np.ndarray, name: str) -> None:
            out.write(memoryview(codes))
            model.weights.release(name)

        for i, name in enumerate(names):
            x = model.weights.array(name)
            scale, zero_point = kernels.scales(kernels.minmax(x, 1, n_threads=threads), 0, 255, symmetric=False)
            slot = i % 2
            if pending[slot] is not None:
                pending[slot].result()  # the write that last used this buffer
            codes = buffers[slot][: x.size]
            kernels.quantize_with_error(x, scale, zero_point, 0, 255, 1, out=codes, n_threads=threads)
            if overlap:
                pending[slot] = writer.submit(write, codes, name)
            else:
                write(codes, name)
        for job in pending:
            if job is not None:
                job.result()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"serial": [], "writer thread": []}
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(args.model))) as folder:
        out = os.path.join(folder, "codes.bin")
        for _ in range(args.repeat):
            for way in times:
                if os.path.exists(out):
                    os.unlink(out)
                times[way].append(run(args.model, out, overlap=way != "serial", threads=args.threads))
    for way, seconds in times.items():
        print(
            f"{way:14s} kernel threads {args.threads}: "
            f"best {min(seconds):.3f} s, median {sorted(seconds)[len(seconds) // 2]:.3f} s"
        )


if __name__ == "__main__":
    main()
