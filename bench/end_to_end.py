"""End-to-end quantization of generated MatMul-stack models, quantrs beside the other tools and
the I/O floor, all in one run. Each tool runs as its own process; wall time and peak RSS come
from GNU time, so quantrs' figures include CLI start-up.

    python bench/end_to_end.py WORKDIR [--models 100M 400M 600M-ext] [--tools all] [--repeat 3]
                               [--baseline SRC_TREE]

--baseline adds quantrs as built in another source tree (e.g. a `git worktree` of an earlier
commit with its kernels built in place), run with the same interpreter, for before/after ratios
measured in the same run.

Prints Markdown tables (for bench/RESULTS.md). Needs: quantization-rs and onnx_ir installed for
the comparison tools; ~10 GB of free disk in WORKDIR for the 600M model and the outputs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from quantrs.synthetic import layers_for, matmul_stack

HERE = Path(__file__).resolve().parent
HIDDEN = 4096
# The console script of this environment, as the other tools run on sys.executable: a `quantrs`
# found on PATH may be a version manager's shim (pyenv's costs ~50 ms a call, not quantrs' time).
_SCRIPT = Path(sys.executable).with_name("quantrs")
QUANTRS = str(_SCRIPT) if _SCRIPT.exists() else (shutil.which("quantrs") or "quantrs")

TOOLS = {
    "quantrs int8": [QUANTRS, "quantize", "{src}", "-o", "{dst}", "--per-channel", "-q"],
    "quantrs int8 --dynamic": [QUANTRS, "quantize", "{src}", "-o", "{dst}", "--dynamic", "-q"],
    "quantrs int4": [QUANTRS, "quantize", "{src}", "-o", "{dst}", "--per-channel", "--bits", "4", "-q"],
    "quantrs int4 blocks of 32": [QUANTRS, "quantize", "{src}", "-o", "{dst}", "--block-size", "32", "--bits", "4", "-q"],
    "quantrs int4 blocks of 32 (matmulnbits)": [
        QUANTRS,
        "quantize",
        "{src}",
        "-o",
        "{dst}",
        "--block-size",
        "32",
        "--bits",
        "4",
        "--quant-format",
        "matmulnbits",
        "-q",
    ],
    "quantize-rs 0.10 int8": [
        sys.executable,
        "-c",
        "import quantize_rs, sys; quantize_rs.quantize(sys.argv[1], sys.argv[2], bits=8, per_channel=True)",
        "{src}",
        "{dst}",
    ],
    "quantize-rs 0.10 int4": [
        sys.executable,
        "-c",
        "import quantize_rs, sys; quantize_rs.quantize(sys.argv[1], sys.argv[2], bits=4, per_channel=True, native_int4=True)",
        "{src}",
        "{dst}",
    ],
    "ort quantize_dynamic int8": [
        sys.executable,
        "-c",
        "import sys, os; from onnxruntime.quantization import quantize_dynamic, QuantType; "
        "quantize_dynamic(sys.argv[1], sys.argv[2], weight_type=QuantType.QInt8, per_channel=True, "
        "use_external_data_format=os.path.getsize(sys.argv[1]) < 2**20)",
        "{src}",
        "{dst}",
    ],
    "ort MatMulNBits int4 (block 128)": [
        sys.executable,
        "-c",
        "import sys, os, onnx; from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer; "
        "q = MatMulNBitsQuantizer(onnx.load(sys.argv[1]), bits=4, block_size=128, is_symmetric=True); q.process(); "
        "q.model.save_model_to_file(sys.argv[2], use_external_data_format=os.path.getsize(sys.argv[1]) < 2**20)",
        "{src}",
        "{dst}",
    ],
    "ort MatMulNBits int4 (block 32)": [
        sys.executable,
        "-c",
        "import sys, os, onnx; from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer; "
        "q = MatMulNBitsQuantizer(onnx.load(sys.argv[1]), bits=4, block_size=32); q.process(); "
        "q.model.save_model_to_file(sys.argv[2], use_external_data_format=os.path.getsize(sys.argv[1]) < 2**20)",
        "{src}",
        "{dst}",
    ],
    "naive numpy int8": [sys.executable, str(HERE / "naive_numpy.py"), "{src}", "{dst}"],
}


# python -c "<run quantrs from this tree>" TREE quantize ...: the tree first on sys.path.
BASELINE = [
    sys.executable,
    "-c",
    "import sys; sys.path.insert(0, sys.argv.pop(1)); from quantrs.cli import main; sys.argv[0] = 'quantrs'; main()",
]


def model_bytes(src: Path) -> int:
    data = src.with_name(src.name + ".data")
    return src.stat().st_size + (data.stat().st_size if data.exists() else 0)


def clean(dst: Path) -> None:
    for p in dst.parent.glob(dst.name + "*"):
        p.unlink()
    for p in dst.parent.glob("*.onnx_data"):  # ORT's external data name
        p.unlink()


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one process, via GNU time."""
    out = subprocess.run(["/usr/bin/time", "-f", "%e %M", *cmd], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {out.stderr.strip().splitlines()[-3:]}")
    wall, kb = out.stderr.strip().splitlines()[-1].split()
    return float(wall), int(kb) / 1024


def warm_up_memory(gib: int = 6) -> None:
    # On a fresh VM the first touch of guest memory is several times slower than later ones;
    # touch it once so that no tool pays for it alone.
    subprocess.run([sys.executable, "-c", f"import numpy as np; a = np.ones({gib} << 28, np.float32); del a"], check=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--models", nargs="+", default=["100M", "400M", "600M-ext"])
    parser.add_argument("--tools", nargs="+", default=list(TOOLS))
    parser.add_argument("--repeat", type=int, default=3, help="runs of quantrs and the floor (min is kept)")
    parser.add_argument("--baseline", type=Path, help="a quantrs source tree with its kernels built in place")
    args = parser.parse_args()
    if args.baseline is not None:
        for bits in (8, 4):
            name = f"quantrs@baseline int{bits}"
            TOOLS[name] = [*BASELINE, str(args.baseline.resolve()), *TOOLS[f"quantrs int{bits}"][1:]]
            args.tools.insert(args.tools.index(f"quantrs int{bits}") + 1 if f"quantrs int{bits}" in args.tools else 0, name)
    args.workdir.mkdir(parents=True, exist_ok=True)
    warm_up_memory()
    results = {}
    for spec in args.models:
        external = spec.endswith("-ext")
        params = float(spec.removesuffix("-ext").rstrip("M")) * 1e6
        folder = args.workdir / spec
        folder.mkdir(exist_ok=True)
        src = folder / f"matmul_{spec}.onnx"
        if not src.exists():
            matmul_stack(src, layers_for(params, HIDDEN), HIDDEN, external_data=external)
        gb = model_bytes(src) / 1e9
        out_dir = folder / "out"
        out_dir.mkdir(exist_ok=True)
        dst = out_dir / "q.onnx"
        rows = []
        for bits in (8, 4):
            floors = []
            for _ in range(args.repeat):
                clean(dst)
                out_bytes = int(model_bytes(src) / (4 if bits == 8 else 8))
                run = subprocess.run(
                    [sys.executable, str(HERE / "lean_floor.py"), str(src), str(dst), str(out_bytes)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                floors.append(float(run.stdout.strip()))
            rows.append({"tool": f"lean floor (int{bits} output size)", "seconds": min(floors), "rss_mb": None})
        for tool in args.tools:
            repeat = args.repeat if tool.startswith("quantrs") else 1
            best = None
            for _ in range(repeat):
                clean(dst)
                cmd = [c.format(src=src, dst=dst) for c in TOOLS[tool]]
                try:
                    wall, rss = timed(cmd)
                except RuntimeError as exc:
                    print(f"# {spec} {tool}: {exc}", file=sys.stderr)
                    break
                if best is None or wall < best[0]:
                    best = (wall, rss)
            if best is not None:
                rows.append({"tool": tool, "seconds": best[0], "rss_mb": best[1]})
            clean(dst)
        results[spec] = {"gb": gb, "rows": rows}
        print_table(spec, gb, rows)
        sys.stdout.flush()
    (args.workdir / "end_to_end.json").write_text(json.dumps(results, indent=2))


def print_table(spec: str, gb: float, rows: list[dict]) -> None:
    floor = {8: rows[0]["seconds"], 4: rows[1]["seconds"]}
    ours = {r["tool"]: r["seconds"] for r in rows if r["tool"].startswith("quantrs") and "@" not in r["tool"]}
    print(f"\n### {spec}: {gb:.2f} GB of float32 weights\n")
    print("| tool | wall s | s/GB | peak RSS MB | vs lean floor | quantrs is faster by |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        bits = 4 if "int4" in r["tool"] else 8
        mine = ours.get(f"quantrs int{bits}")
        rss = "" if r["rss_mb"] is None else f"{r['rss_mb']:.0f}"
        ours_now = r["tool"].startswith("quantrs") and "@" not in r["tool"]
        faster = "" if ours_now or r["tool"].startswith("lean") or mine is None else f"{r['seconds'] / mine:.2f}x"
        print(
            f"| {r['tool']} | {r['seconds']:.2f} | {r['seconds'] / gb:.2f} | {rss} | "
            f"{r['seconds'] / floor[bits]:.2f}x | {faster} |"
        )


if __name__ == "__main__":
    main()
