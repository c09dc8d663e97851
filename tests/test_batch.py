"""Bulk quantization: local processes, failures, interruption and resume, and a Dask cluster."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import onnx
import pytest
from builders import BUILDERS
from typer.testing import CliRunner

import quantrs
from quantrs import QuantizeConfig
from quantrs.batch import expand_inputs
from quantrs.cli import app
from quantrs.errors import ConfigError
from quantrs.synthetic import matmul_stack

runner = CliRunner()
SMALL = QuantizeConfig(min_elements=0, per_channel=True)


@pytest.fixture
def models(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    for name, build in BUILDERS.items():
        onnx.save(build()[0], str(folder / f"{name}.onnx"))
    return folder


def break_one(folder, name="a_broken.onnx"):
    (folder / name).write_bytes(b"not an onnx model" * 20)


def valid_outputs(folder) -> list[str]:
    names = []
    for path in sorted(folder.iterdir()):
        assert not path.name.startswith("."), f"temporary left behind: {path}"
        onnx.checker.check_model(str(path))
        names.append(path.name)
    return names


def test_inputs_from_files_folders_and_globs(models):
    from_folder = expand_inputs([models])
    from_glob = expand_inputs([str(models / "*.onnx")])
    assert from_folder == from_glob and len(from_folder) == len(BUILDERS)
    assert expand_inputs([models / "mlp.onnx", str(models / "m*.onnx")]) == [models / "mlp.onnx"]  # no duplicates
    with pytest.raises(ConfigError, match=r"nothing\*\.onnx: matches no ONNX model"):
        expand_inputs([str(models / "nothing*.onnx")])


@pytest.mark.parametrize("jobs", [1, 2])
def test_continue_on_error_reports_the_failure_and_finishes_the_rest(models, tmp_path, jobs):
    break_one(models)
    report = quantrs.quantize_batch([models], tmp_path / "out", SMALL, jobs=jobs, continue_on_error=True)
    status = {r.input.rsplit("/", 1)[-1]: r for r in report.results}
    assert status["a_broken.onnx"].status == "failed" and "not a valid ONNX model" in status["a_broken.onnx"].error
    assert report.count("ok") == len(BUILDERS) and not report.ok
    assert valid_outputs(tmp_path / "out") == sorted(f"{n}.onnx" for n in BUILDERS)


def test_first_failure_stops_the_batch_then_skip_existing_finishes_it(models, tmp_path):
    break_one(models, "d_broken.onnx")  # sorted after conv_*.onnx, before the rest
    out = tmp_path / "out"
    result = runner.invoke(app, ["batch", str(models), "-o", str(out), "--min-elements", "0", "--format", "json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["summary"] == {"ok": 2, "failed": 1, "skipped": 0, "cancelled": len(BUILDERS) - 2}
    lines = result.stderr.strip().splitlines()  # the cause, as one line (as config says it)
    assert len(lines) == 1 and "d_broken.onnx" in lines[0] and "not a valid ONNX model" in lines[0], lines
    assert valid_outputs(out) == ["conv_net.onnx", "conv_transpose.onnx"]
    (models / "d_broken.onnx").unlink()
    again = runner.invoke(
        app, ["batch", str(models), "-o", str(out), "--min-elements", "0", "--skip-existing", "--format", "json"]
    )
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["summary"] == {"ok": len(BUILDERS) - 2, "failed": 0, "skipped": 2, "cancelled": 0}
    assert len(valid_outputs(out)) == len(BUILDERS)


def test_a_batch_killed_mid_run_resumes_with_skip_existing(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    for i in range(6):
        matmul_stack(folder / f"m{i}.onnx", 4, 1024, seed=i)  # 16 MB each
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "quantrs", "batch", str(folder), "-o", str(out), "-q", "--threads", "1"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out.exists() and any(p.suffix == ".onnx" for p in out.iterdir())):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert 1 <= len(done) < 6, done  # killed part-way
    for name in done:
        onnx.checker.check_model(str(out / name))  # whatever is there is complete
    resumed = subprocess.run(
        cmd + ["--skip-existing", "--format", "json"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)["summary"]
    assert summary["skipped"] == len(done) and summary["ok"] == 6 - len(done)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [f"m{i}.onnx" for i in range(6)]


def test_same_file_name_from_two_folders_is_refused(models, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    onnx.save(BUILDERS["mlp"]()[0], str(other / "mlp.onnx"))
    with pytest.raises(ConfigError, match="would both be written to"):
        quantrs.quantize_batch([models, other], tmp_path / "out", SMALL)


def test_unreachable_scheduler_is_one_line(models, tmp_path):
    pytest.importorskip("distributed")
    result = runner.invoke(app, ["batch", str(models), "-o", str(tmp_path / "out"), "--scheduler", "tcp://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_batch_on_a_local_dask_cluster(models, tmp_path):
    distributed = pytest.importorskip("distributed")
    break_one(models)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        report = quantrs.quantize_batch(
            [models], tmp_path / "out", SMALL, scheduler=cluster.scheduler_address, continue_on_error=True
        )
    assert report.scheduler == cluster.scheduler_address
    assert report.count("ok") == len(BUILDERS) and report.count("failed") == 1
    failed = next(r for r in report.results if r.status == "failed")
    assert failed.input.endswith("a_broken.onnx") and "not a valid ONNX model" in failed.error
    assert len(valid_outputs(tmp_path / "out")) == len(BUILDERS)


def test_ctrl_c_says_what_is_done_and_how_to_finish(tmp_path):
    """SIGINT in the middle of a batch: one line saying how many models are done and how to
    finish, exit 130, and every output that exists is complete."""
    from quantrs.synthetic import matmul_stack

    folder = tmp_path / "models"
    folder.mkdir()
    first = matmul_stack(folder / "m00.onnx", 2, 1024)
    for i in range(1, 40):
        (folder / f"m{i:02d}.onnx").write_bytes(first.read_bytes())
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "quantrs", "batch", str(folder), "-o", str(out), "-q"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (out.exists() and any(out.glob("*.onnx"))) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    done = sorted(out.glob("*.onnx"))
    if proc.returncode == 0:
        pytest.skip("the batch finished before the signal arrived")
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    line = stderr.strip().splitlines()[-1]
    # The count is of models reported done; one may have been renamed into place just before.
    assert any(
        f"interrupted: {n} done, {40 - n} not finished; rerun with --skip-existing" in line for n in (len(done), len(done) - 1)
    ), line
    for path in done:
        onnx.checker.check_model(str(path))  # complete, not partial


def test_cpu_count_honours_a_cgroup_quota(tmp_path):
    from quantrs._cpus import cgroup_cpu_limit

    (tmp_path / "cpu.max").write_text("200000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 2.0
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("150000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(tmp_path) is None


@pytest.mark.parametrize("jobs", [1, 2])
def test_progress_counts_bytes_before_the_first_model_finishes(tmp_path, jobs):
    """The bar's totals are known at once, and a model under way counts the share of its
    weights written (it read "0/0 MB" until the first model finished)."""
    import multiprocessing

    from quantrs.batch import _run_job_sharing, _share_into, make_jobs, run_batch

    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("a", "b"):
        matmul_stack(folder / f"{name}.onnx", 3, 256, seed=ord(name))
    work = make_jobs(expand_inputs([folder]), tmp_path / "out", SMALL)
    total = sum(j.input.stat().st_size for j in work)
    calls: list[tuple[int, int, int, int]] = []
    report = run_batch(work, n_jobs=jobs, progress=lambda *a: calls.append(a))
    assert report.ok and calls[0] == (0, 2, 0, total) and calls[-1] == (2, 2, total, total)
    if jobs == 1:  # in this process every tensor is heard of: the bytes grow while the first model runs
        under_way = [c for c in calls if c[0] == 0 and 0 < c[2] < total]
        assert len(under_way) >= 2 and under_way == sorted(under_way), calls
    else:  # on worker processes, each writes its model's share where the batch reads it
        shares = multiprocessing.get_context("spawn").Array("d", 2, lock=False)
        _share_into(shares)
        assert _run_job_sharing(work[1], 1).status == "ok" and list(shares) == [0.0, 1.0]
