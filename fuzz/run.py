#!/usr/bin/env python3
"""Run the fuzz targets, each for a bounded time, seeded; exit 1 on any finding.

    PYTHONPATH=<debug build>/src python fuzz/run.py [--seconds 15] [--targets model,npy,npz,pb] [--workdir DIR]

Each target runs in its own process with libFuzzer's limits: -max_total_time (--seconds),
-timeout (--timeout: one input taking longer is a hang) and -rss_limit_mb (--rss-mb). Its seeds
(fuzz/seeds.py) go to WORKDIR/seeds/TARGET, what it learns to WORKDIR/corpus/TARGET (kept and
reused when --workdir is given), and the input of a finding to WORKDIR/findings/TARGET-*;
a finding prints the command that replays it. The kernels must be the bounds-checked build
(QUANTRS_CYTHON_DEBUG=1; fuzz/harness.py refuses any other).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from seeds import TARGETS, write_seeds  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=15, help="fuzzing time per target (default 15)")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated, of " + ", ".join(TARGETS))
    parser.add_argument("--timeout", type=int, default=10, help="seconds one input may take (default 10)")
    parser.add_argument("--rss-mb", type=int, default=2048, help="memory limit of a target process (default 2048)")
    parser.add_argument("--workdir", type=Path, help="keep seeds, corpus and findings here (default: a temporary folder)")
    parser.add_argument("--jobs", type=int, default=1, help="parallel fuzzing processes per target (default 1)")
    args = parser.parse_args()
    targets = [t for t in args.targets.split(",") if t]
    unknown = set(targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown target(s) {', '.join(sorted(unknown))}")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="quantrs-fuzz-run-"))
    failed = []
    began = time.monotonic()
    for target in targets:
        seeds, corpus, findings = work / "seeds" / target, work / "corpus" / target, work / "findings"
        count = write_seeds(target, seeds)
        corpus.mkdir(parents=True, exist_ok=True)
        findings.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            str(HERE / f"fuzz_{target}.py"),
            f"-max_total_time={args.seconds}",
            f"-timeout={args.timeout}",
            f"-rss_limit_mb={args.rss_mb}",
            f"-artifact_prefix={findings}/{target}-",
            "-print_final_stats=1",
        ]
        if args.jobs > 1:
            command += [f"-jobs={args.jobs}", f"-workers={args.jobs}"]
        command += [str(corpus), str(seeds)]
        started = time.monotonic()
        sandboxes = work / "sandboxes"
        sandboxes.mkdir(exist_ok=True)
        env = {**os.environ, "QUANTRS_FUZZ_SANDBOX": str(sandboxes)}
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        took = time.monotonic() - started
        log = result.stdout + result.stderr
        runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log)
        cov = re.findall(r"cov: (\d+) ft: (\d+)", log)
        summary = f"{target}: {count} seeds, {runs[-1] if runs else '?'} inputs in {took:.0f} s"
        if cov:
            summary += f", coverage {cov[-1][0]} edges / {cov[-1][1]} features"
        if result.returncode != 0:
            failed.append(target)
            print(log[-6000:], file=sys.stderr)
            artifacts = re.findall(r"Test unit written to (\S+)", log)
            print(f"{summary}: FINDING (exit {result.returncode})", file=sys.stderr)
            path = f"PYTHONPATH={os.environ['PYTHONPATH']} " if os.environ.get("PYTHONPATH") else ""
            for artifact in artifacts:
                print(f"  replay: {path}python {HERE / f'fuzz_{target}.py'} {artifact}", file=sys.stderr)
        else:
            print(summary, flush=True)
    print(f"fuzzing took {time.monotonic() - began:.0f} s; " + (f"findings in {', '.join(failed)}" if failed else "no findings"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
