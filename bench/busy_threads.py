"""Threads on a shared machine: quantrs with its default thread count against `--threads 1`,
on an idle machine and beside one competing CPU-bound process, in one interleaved run.

    python bench/busy_threads.py WORKDIR [--params 400M] [--repeat 5] [--baseline SRC_TREE]
                                 [--args --per-channel]

The competing process is started by this script, spins on one core for at most --busy-limit
seconds, and is stopped after each busy block: nothing is left running. Every quantrs run is its
own process (CLI start-up included), timed by wall clock; the figure that matters is the ratio
default / --threads 1 under the same condition, measured minutes apart, never across runs.
An in-process row times one kernel pass (per-channel min/max of a 4096 x 4096 weight) the same way.

--baseline adds quantrs as built in another source tree (a `git worktree` of an earlier commit,
kernels built in place with `python setup.py build_ext --inplace`), for before/after.

Prints a Markdown table (for bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from quantrs.synthetic import layers_for, matmul_stack, parse_params

HIDDEN = 4096
_SCRIPT = Path(sys.executable).with_name("quantrs")
QUANTRS = [str(_SCRIPT) if _SCRIPT.exists() else (shutil.which("quantrs") or "quantrs")]
# python -c "<run quantrs from this tree>" TREE ...: the tree first on sys.path.
FROM_TREE = [
    sys.executable,
    "-c",
    "import sys; sys.path.insert(0, sys.argv.pop(1)); from quantrs.cli import main; sys.argv[0] = 'quantrs'; main()",
]
# One kernel pass, in-process: the median of 30 per-channel min/max passes over 4096 x 4096.
KERNEL = """
import sys, time, numpy as np
sys.path.insert(0, sys.argv[1]) if sys.argv[1] else None
from quantrs import kernels
x = np.random.default_rng(0).standard_normal((4096, 4096), dtype=np.float32)
threads = int(sys.argv[2]) or None
times = []
for _ in range(31):
    t = time.perf_counter(); kernels.minmax(x, axis=1, n_threads=threads); times.append(time.perf_counter() - t)
print(sorted(times)[15])
"""


@contextmanager
def competing_process(busy: bool, limit: float):
    """One CPU-bound process for the block's duration (never longer than `limit` seconds)."""
    if not busy:
        yield
        return
    spin = f"import time\nend = time.monotonic() + {limit}\nwhile time.monotonic() < end:\n    pass\n"
    proc = subprocess.Popen([sys.executable, "-c", spin])
    try:
        time.sleep(0.3)  # let it take its core
        yield
    finally:
        proc.kill()
        proc.wait()


def wall(cmd: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def kernel_seconds(tree: str, threads: int) -> float:
    out = subprocess.run([sys.executable, "-c", KERNEL, tree, str(threads)], check=True, capture_output=True, text=True)
    return float(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--params", default="400M")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--busy-limit", type=float, default=600.0, help="seconds the competing process may run, at most")
    parser.add_argument("--baseline", type=Path, help="a quantrs source tree with its kernels built in place")
    parser.add_argument("--args", nargs=argparse.REMAINDER, default=["--per-channel"], help="quantize's options (last)")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    src = args.workdir / f"matmul_{args.params}.onnx"
    if not src.exists():
        matmul_stack(src, layers_for(parse_params(args.params), HIDDEN), HIDDEN)
    dst = args.workdir / "q.onnx"
    trees = {"quantrs": ""}
    if args.baseline is not None:
        trees["baseline"] = str(args.baseline.resolve())
    variants = [(name, threads) for name in trees for threads in (0, 1)]  # 0: the default count
    times: dict[tuple[str, int, bool], list[float]] = {}
    kernels: dict[tuple[str, int, bool], list[float]] = {}
    for _ in range(args.repeat):
        for busy in (False, True):
            with competing_process(busy, args.busy_limit):
                for name, threads in variants:
                    base = QUANTRS if not trees[name] else [*FROM_TREE, trees[name]]
                    flags = ["--threads", "1"] if threads == 1 else []
                    times.setdefault((name, threads, busy), []).append(
                        wall([*base, "quantize", str(src), "-o", str(dst), "-q", *flags, *args.args])
                    )
                    kernels.setdefault((name, threads, busy), []).append(kernel_seconds(trees[name], threads))
    print(f"{args.params} MatMul stack, `quantize {' '.join(args.args)}`; median of {args.repeat} interleaved runs\n")
    print(
        "| build | machine | default threads | --threads 1 | default / 1 thread | minmax 4096x4096, default | 1 thread | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in trees:
        for busy in (False, True):
            d, one = (statistics.median(times[(name, t, busy)]) for t in (0, 1))
            kd, k1 = (statistics.median(kernels[(name, t, busy)]) * 1e3 for t in (0, 1))
            print(
                f"| {name} | {'busy (1 competing process)' if busy else 'idle'} | {d:.2f} s | {one:.2f} s | {d / one:.2f}x "
                f"| {kd:.1f} ms | {k1:.1f} ms | {kd / k1:.2f}x |"
            )


if __name__ == "__main__":
    main()
