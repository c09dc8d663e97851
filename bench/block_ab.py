"""The block kernel in two (or more) source trees, one thread, CPU time per value, alternating.

    python bench/block_ab.py OLD_TREE/src NEW_TREE/src [--range refit] [--shape 2048 5632]
                             [--rounds 3] [--calls 10]

A float16 MatMul weight [K, N] to 4-bit MatMulNBits blocks of 32 (transposed codes; packed in
the kernel where the tree's kernels.quantize_blocks has `pack`), as `quantize --bits 4
--block-size 32 --quant-format matmulnbits` runs it. Each tree runs in its own process (its
kernels built in place: `python setup.py build_ext --inplace`), the trees in turn for --rounds
rounds; a process reports the least CPU time (time.process_time) of --calls calls. CPU time on
one thread is what moves least on a machine with other work on it; read the ratio.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

CALL = r"""
import inspect, sys, time
import numpy as np
from quantrs import kernels as K
k, n, alphas, calls = int(sys.argv[1]), int(sys.argv[2]), eval(sys.argv[3]), int(sys.argv[4])
x = (np.random.default_rng(0).standard_normal((k, n)) * 0.02).astype(np.float16)
pack = "pack" in inspect.signature(K.quantize_blocks).parameters
out = np.empty(x.size // 2 if pack else x.size, np.uint8)
extra = {"pack": True} if pack else {}
def once():
    K.quantize_blocks(
        x, 0, 32, 0, 15, symmetric=False, half_scale=True, transpose=True, out=out, alphas=alphas, n_threads=1, **extra
    )
once()
best = float("inf")
for _ in range(calls):
    began = time.process_time()
    once()
    best = min(best, time.process_time() - began)
print(best / x.size * 1e9, K.simd_build())
"""

ALPHAS = {"refit": "(1.0,)", "minmax": "()", "search": "K.SEARCH_ALPHAS"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("trees", nargs="+", help="src folders, the first one the baseline")
    parser.add_argument("--range", choices=list(ALPHAS), default="refit")
    parser.add_argument("--shape", nargs=2, type=int, default=[2048, 5632], metavar=("K", "N"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=10)
    args = parser.parse_args()
    alphas = ALPHAS[args.range]
    runs: dict[str, list[float]] = {tree: [] for tree in args.trees}
    builds: dict[str, str] = {}
    for _ in range(args.rounds):
        for tree in args.trees:
            env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), OMP_NUM_THREADS="1")
            argv = [sys.executable, "-c", CALL, *map(str, args.shape), alphas, str(args.calls)]
            ns, build = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout.split()
            runs[tree].append(float(ns))
            builds[tree] = build
    base = min(runs[args.trees[0]])
    print(f"[{args.shape[0]}, {args.shape[1]}] float16, 4-bit blocks of 32, {args.range}, one thread")
    print("| tree | kernels | ns per value (best) | all rounds | against the first |")
    print("|---|---|---|---|---|")
    for tree in args.trees:
        best = min(runs[tree])
        rounds = " ".join(f"{v:.3f}" for v in runs[tree])
        print(f"| {tree} | {builds[tree]} | {best:.3f} | {rounds} | {best / base:.2f}x |")


if __name__ == "__main__":
    main()
