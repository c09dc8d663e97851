"""Batch throughput with 1 and 2 local jobs on a set of small models (same group: the table
shows the ratio).

    pytest bench/test_bench_batch.py --benchmark-only
"""

from __future__ import annotations

import shutil

import pytest

import quantrs
from quantrs import QuantizeConfig
from quantrs.synthetic import matmul_stack

SETS = {"40 x 1 MB": (40, 1, 512), "12 x 16 MB": (12, 4, 1024), "6 x 128 MB": (6, 8, 2048)}


@pytest.fixture(scope="module", params=list(SETS))
def model_folder(request, tmp_path_factory):
    count, layers, hidden = SETS[request.param]
    folder = tmp_path_factory.mktemp("batch-models")
    for i in range(count):
        matmul_stack(folder / f"m{i:02d}.onnx", layers, hidden, seed=i)
    return request.param, count, folder


@pytest.mark.parametrize("jobs", [1, 2])
def test_batch_throughput(benchmark, model_folder, tmp_path, jobs):
    name, count, folder = model_folder
    benchmark.group = f"batch {name}"
    benchmark.extra_info["bytes"] = sum(p.stat().st_size for p in folder.iterdir())
    out = tmp_path / "out"

    def fresh():
        shutil.rmtree(out, ignore_errors=True)

    def run():
        report = quantrs.quantize_batch([folder], out, QuantizeConfig(per_channel=True, min_elements=0), jobs=jobs)
        assert report.count("ok") == count

    benchmark.pedantic(run, setup=fresh, rounds=3, iterations=1)
