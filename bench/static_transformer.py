"""Static INT8 on all-MiniLM-L6-v2 (built from its packaged checkpoint, tests/minilm.py) against
the float encoder, in onnxruntime on the CPU, interleaved in one run: each round times float
then static, batch 32 (all of minilm.SENTENCES at once) then batch 1 (each sentence alone).
Reports per-model minimum and median and the median per-round ratio static / float.

    python bench/static_transformer.py WORKDIR [--rounds 21] [--threads 2] [--cpu-time]

Needs the test extras (the MiniLM weights package and tokenizers).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import minilm  # noqa: E402
from test_static_transformer import CALIBRATION_SENTENCES, tokenized  # noqa: E402

import quantrs  # noqa: E402
from quantrs._ort import session  # noqa: E402


def batches(sentences: list[str], size: int) -> list[dict[str, np.ndarray]]:
    return [tokenized(sentences[i : i + size]) for i in range(0, len(sentences), size)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cpu-time", action="store_true", help="Process CPU time instead of wall time.")
    args = parser.parse_args(argv)
    args.folder.mkdir(parents=True, exist_ok=True)
    src, dst = args.folder / "minilm.onnx", args.folder / "minilm_static.onnx"
    onnx.save(minilm.build_encoder(minilm.weights_dir()), str(src))
    report = quantrs.calibrate(src, dst, batches(CALIBRATION_SENTENCES, 4))
    models = {"float": session(src, threads=args.threads), "static int8": session(dst, threads=args.threads)}
    whole = tokenized(minilm.SENTENCES)
    singles = batches(minilm.SENTENCES, 1)
    clock = time.process_time if args.cpu_time else time.perf_counter
    for s in models.values():  # warm-up
        for _ in range(3):
            s.run(None, whole)
        for f in singles:
            s.run(None, f)
    b32: dict[str, list[float]] = {m: [] for m in models}
    b1: dict[str, list[float]] = {m: [] for m in models}
    for _ in range(args.rounds):
        for name, s in models.items():
            began = clock()
            s.run(None, whole)
            b32[name].append((clock() - began) * 1e3)
            began = clock()
            for f in singles:
                s.run(None, f)
            b1[name].append((clock() - began) / len(singles) * 1e3)
    med = statistics.median
    print(
        f"calibrated on {report.samples} batches; "
        f"fidelity {min(o.cosine for o in report.fidelity):.4f} (cosine, calibration batches)"
    )
    print(f"threads {args.threads}, {'CPU' if args.cpu_time else 'wall'} time, {args.rounds} rounds\n")
    print("| model | batch 1 min | batch 1 median | ratio | batch 32 min | batch 32 median | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in models:
        r1 = med([b1[name][k] / b1["float"][k] for k in range(args.rounds)])
        r32 = med([b32[name][k] / b32["float"][k] for k in range(args.rounds)])
        print(
            f"| {name} | {min(b1[name]):.2f} ms | {med(b1[name]):.2f} ms | {r1:.2f} | {min(b32[name]):.1f} ms | "
            f"{med(b32[name]):.1f} ms | {r32:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
