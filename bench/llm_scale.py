"""quantrs against onnxruntime's MatMulNBitsQuantizer on Llama-shaped decoders, in one run.

    python bench/llm_scale.py WORKDIR [--models 1.1B-fp16 1.1B-fp32 7B-fp16] [--repeat 1]
                                      [--ort-memory-gb 20] [--skip-ort 7B-fp16] [--busy]
                                      [--baseline OLD_TREE/src]

Models are built once into WORKDIR by bench/llama.py (external data; 1.1B float16 is 2.2 GB,
float32 4.4 GB, 7B float16 13.5 GB: about 40 GB of disk with the outputs). Each tool runs as its
own process; wall time and peak RSS come from GNU time, so quantrs' figures include CLI
start-up. onnxruntime's tool (its default algorithm, block 32, as its docs run it: onnx.load,
process, save with external data) runs under an address-space limit (--ort-memory-gb), so a
model it cannot quantize in this machine's memory ends with MemoryError, reported as such,
instead of bringing the machine down.

Each model's files are read once before its tools run, so every tool starts with them in the
page cache (a 13.5 GB model evicts the others'). Prints a Markdown table (for bench/RESULTS.md):
seconds, seconds per GB of input, peak RSS, and onnxruntime's time over quantrs' for the same
model. --busy runs every tool beside one
competing CPU-bound process the script starts and stops (bench/busy_threads.py). --baseline
adds each quantrs row again for another quantrs (a source tree with its kernels built in place:
`git worktree add OLD COMMIT && cd OLD && python setup.py build_ext --inplace`), before and after
in one run.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from busy_threads import competing_process  # noqa: E402
from llama import SIZES, build_decoder  # noqa: E402

_SCRIPT = Path(sys.executable).with_name("quantrs")
QUANTRS = str(_SCRIPT) if _SCRIPT.exists() else (shutil.which("quantrs") or "quantrs")
_NBITS = [QUANTRS, "quantize", "{src}", "-o", "{dst}", "--bits", "4", "--block-size", "32", "--quant-format", "matmulnbits"]
_QUIET = ["-q", "--format", "json"]
TOOLS = {
    "quantrs 4-bit MatMulNBits (block 32)": [*_NBITS, *_QUIET],
    # onnxruntime's default algorithm is round-to-nearest on each block's min/max: the same work.
    "quantrs 4-bit MatMulNBits (block 32), --range minmax": [*_NBITS, "--range", "minmax", *_QUIET],
    "quantrs INT8 per channel": [QUANTRS, "quantize", "{src}", "-o", "{dst}", "-q", "--format", "json"],
    "quantrs INT8 --dynamic": [QUANTRS, "quantize", "{src}", "-o", "{dst}", "--dynamic", "-q", "--format", "json"],
    "ort MatMulNBitsQuantizer (block 32)": [
        sys.executable,
        "-c",
        "import sys, onnx; from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer; "
        "q = MatMulNBitsQuantizer(onnx.load(sys.argv[1]), bits=4, block_size=32); q.process(); "
        "q.model.save_model_to_file(sys.argv[2], use_external_data_format=True)",
        "{src}",
        "{dst}",
    ],
}


def model_path(workdir: Path, spec: str) -> Path:
    size, dtype = spec.split("-")
    path = workdir / spec / f"llama_{spec}.onnx"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"building {path} ...", file=sys.stderr)
        build_decoder(path, SIZES[size], {"fp16": "float16", "fp32": "float32"}[dtype])
    return path


def input_bytes(src: Path) -> int:
    return sum(p.stat().st_size for p in src.parent.glob(src.name + "*"))


def warm(src: Path) -> None:
    """Read the model's files once, so that every tool starts with them in the page cache (the
    first tool timed would otherwise pay for reading them from disk alone)."""
    for path in src.parent.glob(src.name + "*"):
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass


def clean(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)


def timed(cmd: list[str], memory_gb: float | None) -> tuple[float | None, float | None, str]:
    """(wall seconds, peak RSS MB, '' or why it failed) of one process, via GNU time."""
    prefix = ["prlimit", f"--as={int(memory_gb * 2**30)}"] if memory_gb else []
    out = subprocess.run([*prefix, "/usr/bin/time", "-f", "%e %M", *cmd], capture_output=True, text=True, check=False)
    lines = out.stderr.strip().splitlines()
    if out.returncode != 0:
        why = next((line for line in reversed(lines) if "Error" in line), lines[-2] if len(lines) > 1 else "failed")
        return None, None, why.strip()
    wall, kb = lines[-1].split()
    return float(wall), int(kb) / 1024, ""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--models", nargs="+", default=["1.1B-fp16", "1.1B-fp32", "7B-fp16"])
    parser.add_argument("--tools", nargs="+", default=list(TOOLS))
    parser.add_argument("--repeat", type=int, default=1, help="runs per tool (the fastest is kept)")
    parser.add_argument("--ort-memory-gb", type=float, default=20.0)
    parser.add_argument("--skip-ort", nargs="*", default=[], help="models on which onnxruntime's tool is not run")
    parser.add_argument("--busy", action="store_true", help="beside one competing CPU-bound process")
    parser.add_argument("--baseline", type=Path, help="the src folder of another quantrs tree, run as 'before'")
    args = parser.parse_args()
    if args.baseline is not None:
        before = ["env", f"PYTHONPATH={args.baseline.resolve()}", sys.executable, "-m", "quantrs"]
        for tool in [t for t in args.tools if t.startswith("quantrs")]:
            TOOLS[f"{tool} (before)"] = [*before, *TOOLS[tool][1:]]
            args.tools.insert(args.tools.index(tool), f"{tool} (before)")
    rows = []
    for spec in args.models:
        src = model_path(args.workdir, spec)
        gb = input_bytes(src) / 1e9
        warm(src)
        results: dict[str, tuple[float | None, float | None, str]] = {}
        for tool in args.tools:
            if tool.startswith("ort") and spec in args.skip_ort:
                continue
            best: tuple[float | None, float | None, str] = (None, None, "")
            for _ in range(args.repeat):
                out = args.workdir / spec / "out"
                clean(out)
                cmd = [a.format(src=src, dst=out / "q.onnx") for a in TOOLS[tool]]
                with competing_process(args.busy, limit=1800.0):
                    run = timed(cmd, args.ort_memory_gb if tool.startswith("ort") else None)
                if run[0] is not None and (best[0] is None or run[0] < best[0]):
                    best = run
                elif run[0] is None:
                    best = run
                    break
            results[tool] = best
            shutil.rmtree(args.workdir / spec / "out", ignore_errors=True)
        ort = results.get("ort MatMulNBitsQuantizer (block 32)")
        for tool, (secs, rss, why) in results.items():
            ratio = ""
            if secs is not None and ort and ort[0] is not None and not tool.startswith("ort"):
                ratio = f"{ort[0] / secs:.1f}x" if "MatMulNBits" in tool else ""
            cells = (
                (f"{secs:.2f} s", f"{secs / gb:.2f} s", f"{rss:.0f} MB")
                if secs is not None and rss is not None
                else (why, "", "")
            )
            rows.append(f"| {spec} ({gb:.1f} GB) | {tool} | {' | '.join(cells)} | {ratio} |")
    print("| model | tool | time | per GB | peak RSS | ort / quantrs |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
