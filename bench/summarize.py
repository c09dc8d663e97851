"""Turn a pytest-benchmark JSON export into the Markdown tables of bench/RESULTS.md:
throughput from the fastest round, and the ratio to the numpy twin and to `copyto` of the same
group (all measured in the same run).

    python bench/summarize.py bench/kernels.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def main(path: str) -> None:
    data = json.load(open(path))
    groups: dict[str, list[dict]] = defaultdict(list)
    for bench in data["benchmarks"]:
        groups[bench["group"]].append(bench)
    print(
        f"machine: {data['machine_info'].get('cpu', {}).get('brand_raw', '?')}, "
        f"{data['machine_info'].get('cpu', {}).get('count', '?')} CPUs; {data['datetime']}\n"
    )
    print("| group | implementation | min time | GB/s | vs numpy | of copyto |")
    print("|---|---|---:|---:|---:|---:|")
    for group, benches in groups.items():
        times = {_impl(b): b["stats"]["min"] for b in benches}
        for b in benches:
            impl, t = _impl(b), b["stats"]["min"]
            gbs = b["extra_info"].get("bytes", 0) / t / 1e9
            vs_numpy = f"{times['numpy'] / t:.1f}x" if "numpy" in times else ""
            of_copy = f"{times['copyto'] / t:.0%}" if "copyto" in times else ""
            print(f"| {group} | {impl} | {t * 1e3:.2f} ms | {gbs:.2f} | {vs_numpy} | {of_copy} |")


def _impl(bench: dict) -> str:
    params = bench.get("params") or {}
    if "impl" in params:
        return params["impl"]
    if "jobs" in params:
        return f"{params['jobs']} job(s)"
    if "method" in params:
        return params["method"]
    if "model" in params:
        return params["model"]
    if "offset" in params:
        return f"offset {params['offset']} B"
    return f"{params.get('n_threads', '?')} thread(s)"


if __name__ == "__main__":
    main(sys.argv[1])
