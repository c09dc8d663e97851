"""`quantrs auto` end to end: time, evaluations and sizes.

    python bench/auto_bench.py WORKDIR [--cases mlp100M minilm]

- mlp100M: a generated 100 MB MatMul stack (25M parameters, hidden 1024) with 64 samples of
  batch 8, budget cosine 0.99 (the issue's speed bar: <= 2 minutes on 2 cores);
- minilm: all-MiniLM-L6-v2 built from its packaged checkpoint (tests/minilm.py), tuned on the 48
  calibration sentences of tests/test_static_transformer.py (batches of 4), verified on the 32
  minilm.SENTENCES it never saw, at cosine 0.99 and 0.995.

Prints a Markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from quantrs.auto import AutoConfig, auto  # noqa: E402
from quantrs.synthetic import matmul_stack  # noqa: E402


def row(name: str, budget: float, report, seconds: float) -> str:
    chosen = report.candidates[report.chosen]
    widths = ", ".join(f"{n}x{w}" for w, n in chosen.widths.items())
    measured = min(o.cosine for o in chosen.outputs)
    int8 = report.uniform_int8_weight_bytes
    return (
        f"| {name} | {budget} | {'met' if report.met else 'missed'} | {measured:.4f} | {widths} | "
        f"{report.weight_bytes / 1e6:.2f} MB | {int8 / 1e6 if int8 else float('nan'):.2f} MB | "
        f"{report.narrowest_weight_bytes / 1e6:.2f} MB | {report.input_bytes / report.output_bytes:.2f}x | "
        f"{report.evaluations} | {report.sensitivity_seconds:.1f} s | {seconds:.1f} s |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--cases", nargs="+", default=["mlp100M", "minilm"])
    args = parser.parse_args(argv)
    args.folder.mkdir(parents=True, exist_ok=True)
    print(
        "| model | min cosine | result | measured | widths | weights | uniform 8-bit | uniform 4-bit | file smaller "
        "| evaluations | sensitivity | total |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    if "mlp100M" in args.cases:
        src = matmul_stack(args.folder / "mlp100M.onnx", 24, 1024)
        rng = np.random.default_rng(0)
        samples = [{"x": rng.standard_normal((8, 1024), dtype=np.float32)} for _ in range(64)]
        began = time.perf_counter()
        report = auto(src, args.folder / "mlp100M_auto.onnx", samples, AutoConfig(min_cosine=0.99))
        print(row("100 MB MatMul stack, 64 samples", 0.99, report, time.perf_counter() - began), flush=True)
    if "minilm" in args.cases:
        import minilm
        from test_static_transformer import CALIBRATION_SENTENCES, tokenized

        src = args.folder / "minilm.onnx"
        onnx.save(minilm.build_encoder(minilm.weights_dir()), str(src))
        tuning = [tokenized(CALIBRATION_SENTENCES[i : i + 4]) for i in range(0, len(CALIBRATION_SENTENCES), 4)]
        held_out = [tokenized(minilm.SENTENCES)]
        for budget in (0.99, 0.995):
            began = time.perf_counter()
            report = auto(
                src, args.folder / f"minilm_auto_{budget}.onnx", tuning, AutoConfig(min_cosine=budget), eval_data=held_out
            )
            print(row("all-MiniLM-L6-v2", budget, report, time.perf_counter() - began), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
