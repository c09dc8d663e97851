"""Tests at the joins: each one fails when a specific, plausible mistake is made at a seam
(report text, metadata, thread policy, file layout, range picking, agreement metrics, batch
threads). bench/test_mutations.py makes each mistake in a copy of the installed package and
checks that the test named for it fails."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import BUILDERS
from typer.testing import CliRunner

import quantrs
from quantrs import QuantizeConfig, kernels
from quantrs.cli import app


def test_report_counts_quantized_and_skipped_apart(save, tmp_path):
    src = save(BUILDERS["mlp"]()[0])  # two weights quantized, one bias left
    result = CliRunner().invoke(app, ["quantize", str(src), "-o", str(tmp_path / "q.onnx"), "--min-elements", "0"])
    assert result.exit_code == 0, result.output
    assert "2 tensors quantized, 1 left as it is" in result.stdout


def test_metadata_says_the_granularity(save, tmp_path):
    src = save(BUILDERS["mlp"]()[0])
    expected = {
        "per-channel": QuantizeConfig(per_channel=True, min_elements=0),
        "per-tensor": QuantizeConfig(per_channel=False, min_elements=0),
    }
    for granularity, config in expected.items():
        quantrs.quantize(src, tmp_path / "q.onnx", config)
        meta = {p.key: p.value for p in onnx.load(str(tmp_path / "q.onnx")).metadata_props}
        assert meta["quantrs.granularity"] == granularity


def test_kernels_use_threads_on_large_tensors():
    if kernels.default_threads() < 2:
        import pytest

        pytest.skip("one CPU: no threads to use")
    assert kernels._threads(None, (1 << 16) - 1) == 1  # below the measured cross-over: one thread
    assert kernels._threads(None, 1 << 18) == kernels.default_threads()  # above it: all of them


def test_external_data_offsets_are_page_aligned(tmp_path):
    from quantrs.synthetic import matmul_stack

    src = matmul_stack(tmp_path / "m.onnx", 3, 100)  # 10,000-byte codes: unaligned if packed end to end
    quantrs.quantize(src, tmp_path / "q.onnx", QuantizeConfig(per_channel=True, min_elements=0, external_data=True))
    model = onnx.load(str(tmp_path / "q.onnx"), load_external_data=False)
    offsets = [int(e.value) for t in model.graph.initializer for e in t.external_data if e.key == "offset"]
    assert len(offsets) >= 3 and all(o % 4096 == 0 for o in offsets)


def test_percentile_clips_only_the_top_of_one_sided_data():
    from quantrs.ranges import HistogramCollector, pick_range

    stats = HistogramCollector("relu_out")
    stats.add(np.abs(np.random.default_rng(0).standard_normal(100_000)).astype(np.float32) + 0.25)
    lo, hi = pick_range(stats, "percentile", percentile=99.0)
    assert lo == stats.lo  # nothing clipped below: the data has no lower tail to clip
    assert hi < stats.hi


def test_top1_agreement_compares_the_largest_logits():
    from quantrs.compare import agreements

    reference = {"logits": [np.array([[0.1, 0.2, 0.7], [0.5, 0.3, 0.2]], np.float32)]}
    got = {"logits": [np.array([[0.2, 0.1, 0.7], [0.6, 0.1, 0.3]], np.float32)]}  # same argmax, other argmin
    assert agreements(reference, got)[0].top1_agreement == 1.0


def test_batch_splits_threads_between_jobs(tmp_path):
    from quantrs._cpus import available_cpus
    from quantrs.batch import Job, _threads_per_job

    job = Job(Path("a.onnx"), tmp_path / "a.onnx", QuantizeConfig())
    assert _threads_per_job(job, 2).config.n_threads == max(1, available_cpus() // 2)
    pinned = dataclasses.replace(job, config=QuantizeConfig(n_threads=3))
    assert _threads_per_job(pinned, 2).config.n_threads == 3  # the user's choice wins


def test_int4_as_int8_flag_reaches_the_config(save, tmp_path):
    src = save(BUILDERS["mlp"]()[0])
    args = [
        "quantize",
        str(src),
        "-o",
        str(tmp_path / "q.onnx"),
        "-b",
        "4",
        "--min-elements",
        "0",
        "--format",
        "json",
        "--int4-as-int8",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["storage"] == "UINT8"


def test_data_in_brackets_is_printed_as_is(tmp_path):
    """rich markup must not eat data: file names, shapes and install hints with brackets."""
    import os
    import subprocess
    import sys

    src = tmp_path / "net[v2].onnx"
    onnx.save(BUILDERS["conv_net"]()[0], str(src))
    env = {**os.environ, "COLUMNS": "200"}
    info = subprocess.run(
        [sys.executable, "-m", "quantrs", "info", str(src)], capture_output=True, text=True, cwd=tmp_path, env=env, check=True
    )
    assert "net[v2].onnx" in info.stdout and "[N, 3, 16, 16]" in info.stdout
    help_text = subprocess.run(
        [sys.executable, "-m", "quantrs", "batch", "-h"], capture_output=True, text=True, cwd=tmp_path, env=env, check=True
    )
    assert "quantrs[dask]" in help_text.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "quantrs", "info", str(tmp_path / "gone[1].onnx")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert bad.returncode == 1 and "gone[1].onnx: no such file" in bad.stderr


def test_long_names_are_whole_not_folded_or_cut(tmp_path):
    """Names are what users copy into --exclude: never cut, nor folded over lines (a name longer
    than the terminal is wide gets a line of its own; tests/test_render_widths.py)."""
    import os
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    name = "encoder.layer.11.attention.output.dense.weight_with_a_long_exported_suffix_0123456789"
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", name], ["y"])],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 64])],
        [onnx.numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), name)],
    )
    src = tmp_path / "m.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)]), str(src))
    out = subprocess.run(
        [sys.executable, "-m", "quantrs", "quantize", str(src), "--dry-run"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "80"},
        check=True,
    )
    assert any(line.strip() == name for line in out.stdout.splitlines()) and "…" not in out.stdout, out.stdout


def test_batch_summary_names_each_output(save, tmp_path):
    src = save(BUILDERS["mlp"]()[0], "one.onnx")
    result = CliRunner().invoke(
        app, ["batch", str(src), "-o", str(tmp_path / "out"), "--min-elements", "0", "-q"], env={"COLUMNS": "300"}
    )
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[0]
    assert "output" in header and "model" in header
    narrow = CliRunner().invoke(
        app, ["batch", str(src), "-o", str(tmp_path / "out2"), "--min-elements", "0", "-q"], env={"COLUMNS": "60"}
    )
    assert any(str(tmp_path / "out2" / "one.onnx") in line for line in narrow.stdout.splitlines()), (
        narrow.stdout
    )  # a row of its own


@pytest.mark.parametrize("name", ["mlp", "conv_net", "embedding"])
@pytest.mark.parametrize(
    "options",
    [
        dict(per_channel=False),
        dict(bits=4, block_size=32),
        dict(bits=4, per_channel=True, symmetric=True),
        dict(bits=4, quant_format="matmulnbits"),
    ],
)
def test_quantized_weight_bytes_are_the_bytes_written(save, tmp_path, name, options):
    """The report's quantized weight bytes: codes, scales and zero points as stored (packed
    codes, float16 scales of float16 weights, MatMulNBits' padded blocks)."""
    model = BUILDERS[name]()[0]
    src = save(model)
    if name != "mlp" and options.get("quant_format") == "matmulnbits":
        options = dict(options, quant_format="qdq", block_size=32)  # no MatMul to write as MatMulNBits
    report = quantrs.quantize(src, tmp_path / "q.onnx", QuantizeConfig(min_elements=0, **options))
    out = onnx.load(str(tmp_path / "q.onnx"))
    written = sum(len(t.raw_data) for t in out.graph.initializer if t.name.endswith(("_quantized", "_scale", "_zero_point")))
    assert report.quantized_weight_bytes == written


@pytest.mark.skipif(not kernels.openmp_enabled(), reason="the serial build has no OpenMP runtime")
@pytest.mark.parametrize(("given", "spins"), [(None, "0"), ("active", "30000000000")])
def test_openmp_workers_wait_passively_unless_told_otherwise(given, spins):
    """A waiting kernel thread must sleep, not spin: on a machine where another process holds a
    core, spinning made 2 threads 2.3x slower than one. The policy is read once, when the runtime
    loads, so it must be in place before the first kernel import; the runtime itself says what
    it took (OMP_DISPLAY_ENV=VERBOSE; libgomp shows its spin count: 300000 when no policy is
    set, 0 when passive). A policy the user chose is kept."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["OMP_DISPLAY_ENV"] = "VERBOSE"
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    run = subprocess.run(
        [sys.executable, "-c", "import quantrs.model, quantrs.kernels"], env=env, capture_output=True, text=True, check=True
    )
    assert f"GOMP_SPINCOUNT = '{spins}'" in run.stderr, run.stderr


def test_the_library_never_imports_the_command_line_front_end():
    """Programs calling quantrs pay for no CLI: every library module imports without typer,
    rich or quantrs.cli (a subprocess: this test process has them loaded already)."""
    import subprocess
    import sys

    modules = [
        "quantrs", "quantrs.pipeline", "quantrs.calibration", "quantrs.auto", "quantrs.validation",
        "quantrs.compare", "quantrs.dequantize", "quantrs.benchmarking", "quantrs.batch", "quantrs.configfile",
        "quantrs.dynamic", "quantrs.activations",
    ]  # fmt: skip
    code = (
        f"import importlib, sys\nfor m in {modules!r}:\n    importlib.import_module(m)\n"
        "print(sorted(m for m in ('typer', 'rich', 'click', 'quantrs.cli', 'quantrs.render') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
