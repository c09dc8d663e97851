"""Nothing lost: no command writes over a file its input is read from (the model, its external
data), whether the output names it directly, through a symbolic link or a hard link, or through
the `.data` file written beside the output. Each refusal leaves every input byte as it was."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from builders import BUILDERS
from typer.testing import CliRunner

from quantrs.cli import app

runner = CliRunner()


@pytest.fixture
def external(tmp_path):
    """An MLP whose weights live in in/model.onnx.data: (model path, every input file's bytes)."""
    folder = tmp_path / "in"
    folder.mkdir()
    src = folder / "model.onnx"
    onnx.save_model(BUILDERS["mlp"]()[0], str(src), save_as_external_data=True, location="model.onnx.data", size_threshold=0)
    return src, _snapshot(folder)


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _refused(result, src, before, *phrases):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr
    assert _snapshot(src.parent) == before  # nothing replaced, nothing left behind
    onnx.checker.check_model(str(src), full_check=True)  # the input still loads, data and all


def _samples(tmp_path):
    path = tmp_path / "data.npy"
    np.save(path, np.random.default_rng(0).standard_normal((8, 4, 64)).astype(np.float32))
    return path


def test_output_that_is_the_inputs_data_file_is_refused(external):
    """The issue's case: `-o in/model.onnx.data` exited 0 and left an input that no longer loads."""
    src, before = external
    result = runner.invoke(app, ["quantize", str(src), "-o", str(src.parent / "model.onnx.data"), "--min-elements", "0"])
    _refused(result, src, before, "model.onnx.data", "is the input's external data file model.onnx.data", "destroy the input")


def test_output_through_a_symbolic_link_to_the_data_is_refused(external, tmp_path):
    src, before = external
    link = tmp_path / "link.onnx"
    link.symlink_to(src.parent / "model.onnx.data")
    result = runner.invoke(app, ["quantize", str(src), "-o", str(link), "--min-elements", "0"])
    _refused(result, src, before, "is the input's external data file")
    assert link.is_symlink()


def test_output_that_is_a_hard_link_to_the_model_is_refused(external, tmp_path):
    src, before = external
    twin = tmp_path / "twin.onnx"
    os.link(src, twin)
    result = runner.invoke(app, ["quantize", str(src), "-o", str(twin), "--min-elements", "0"])
    _refused(result, src, before, "the output path is the input model")


def test_output_whose_sidecar_is_a_link_to_the_data_is_refused(external, tmp_path):
    """`-o q.onnx` writes q.onnx.data beside it when the input has external data."""
    src, before = external
    (tmp_path / "q.onnx.data").symlink_to(src.parent / "model.onnx.data")
    result = runner.invoke(app, ["quantize", str(src), "-o", str(tmp_path / "q.onnx"), "--min-elements", "0"])
    _refused(result, src, before, "its external data file q.onnx.data is the input's external data file")


def test_calibrate_refuses_the_inputs_data_file(external, tmp_path):
    src, before = external
    out = src.parent / "model.onnx.data"
    result = runner.invoke(app, ["calibrate", str(src), "--data", str(_samples(tmp_path)), "-o", str(out)])
    _refused(result, src, before, "is the input's external data file")


def test_auto_refuses_the_inputs_data_file(external, tmp_path):
    src, before = external
    out = src.parent / "model.onnx.data"
    result = runner.invoke(app, ["auto", str(src), "--data", str(_samples(tmp_path)), "-o", str(out), "--min-cosine", "0.9"])
    _refused(result, src, before, "is the input's external data file")


def test_config_job_that_writes_another_jobs_input_is_refused(tmp_path):
    """Job 0 would replace b.onnx before job 1 reads it: refused before anything runs."""
    for name in ("a", "b"):
        onnx.save(BUILDERS["mlp"]()[0], str(tmp_path / f"{name}.onnx"))
    before = _snapshot(tmp_path)
    (tmp_path / "q.yaml").write_text(
        "min_elements: 0\nmodels:\n  - input: a.onnx\n    output: b.onnx\n  - input: b.onnx\n    output: c.onnx\n"
    )
    result = runner.invoke(app, ["config", str(tmp_path / "q.yaml")])
    assert result.exit_code == 1, result.output
    assert "b.onnx" in result.stderr and "which" in result.stderr and "reads" in result.stderr
    after = _snapshot(tmp_path)
    after.pop("q.yaml")
    assert after == before


def test_batch_into_the_folder_holding_another_models_data_is_refused(tmp_path):
    """a.onnx's output a.onnx.data beside it would replace the file b.onnx reads its weights from."""
    models, out = tmp_path / "models", tmp_path / "out"
    models.mkdir()
    out.mkdir()
    onnx.save(BUILDERS["mlp"]()[0], str(models / "a.onnx"))
    onnx.save_model(
        BUILDERS["mlp"]()[0], str(out / "b.onnx"), save_as_external_data=True, location="a.onnx.data", size_threshold=0
    )
    before = _snapshot(out)
    result = runner.invoke(
        app, ["batch", str(models / "a.onnx"), str(out / "b.onnx"), "-o", str(out), "--external-data", "--min-elements", "0"]
    )
    assert result.exit_code == 1, result.output
    assert "a.onnx.data" in result.stderr and "b.onnx reads" in result.stderr
    assert _snapshot(out) == before


@pytest.mark.parametrize("target", ["model.onnx", "model.onnx.data"])
def test_validate_report_may_not_overwrite_a_model_file(external, target):
    pytest.importorskip("matplotlib")
    src, before = external
    result = runner.invoke(app, ["validate", str(src), str(src), "--report", str(src.parent / target)])
    _refused(result, src, before, "--report page would overwrite")
