"""The command line: exit codes, one-line errors without tracebacks, JSON output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import BUILDERS
from typer.testing import CliRunner

from quantrs.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.startswith("quantrs ")


def test_help_lists_commands():
    result = invoke("-h")
    assert result.exit_code == 0
    assert "quantize" in result.stdout and "info" in result.stdout


@pytest.mark.parametrize(
    ("command", "usage"),
    [
        ("quantize", "quantize [OPTIONS] MODEL"),
        ("batch", "batch [OPTIONS] MODELS..."),
        ("validate", "validate [OPTIONS] ORIGINAL QUANTIZED"),
        ("config", "config [OPTIONS] FILE"),
    ],
)
def test_usage_lines_name_arguments_in_capitals(command, usage):
    result = invoke(command, "-h")
    assert result.exit_code == 0 and usage in result.stdout and "{" not in result.stdout.split("\n\n")[0], result.stdout[:300]
    missing = invoke(command)
    assert (
        missing.exit_code == 2 and "Missing argument" in missing.stderr and f"'{usage.split()[2].rstrip('.')}'" in missing.stderr
    )


def test_verbose_is_a_counted_flag_in_the_help():
    """-v, -vv: a count, not an option taking an <int> (`-v2` is not how it is given)."""
    result = invoke("-h")
    line = next(line for line in result.stdout.splitlines() if "--verbose" in line)
    assert "<int>" not in line and "-vv" in result.stdout and "[default: 0]" not in result.stdout


def test_quantize_text(save, tmp_path):
    src = save(BUILDERS["conv_net"]()[0])
    result = invoke("quantize", src, "-o", tmp_path / "q.onnx", "--per-channel", "--min-elements", "0")
    assert result.exit_code == 0, result.output
    assert "Quantized" in result.stdout and "3 tensors quantized" in result.stdout
    onnx.checker.check_model(str(tmp_path / "q.onnx"))


def _one_small_matmul():
    w = onnx.numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4) / 16, "w")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])], [w],
    )  # fmt: skip
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])


def test_reports_count_in_the_singular_and_say_larger_when_larger(save, tmp_path):
    """One tensor is "1 tensor"; a model too small to gain (its scales and DequantizeLinear
    outweigh the saved bytes) is "1.20x larger", not "0.83x smaller"."""
    src = save(_one_small_matmul())
    out = tmp_path / "q.onnx"
    result = invoke("quantize", src, "-o", out, "--min-elements", "0", "-q")
    assert result.exit_code == 0, result.output
    assert "1 tensor quantized, 0 left as they are" in result.stdout, result.stdout
    assert out.stat().st_size > src.stat().st_size and "x larger)" in result.stdout and "smaller" not in result.stdout
    plan = runner.invoke(app, ["quantize", str(src), "--dry-run", "--min-elements", "0"], env={"COLUMNS": "300"})
    assert "1 tensor would be quantized" in plan.stdout, plan.stdout
    assert "float weights: 1 tensor," in invoke("info", src).stdout
    checked = invoke("validate", src, out, "--samples", "1", "-q")
    assert checked.exit_code == 0 and "x larger)" in checked.stdout and "smaller" not in checked.stdout, checked.stdout


def test_storage_names_each_type_once(save, tmp_path):
    src = save(BUILDERS["embedding"]()[0])
    result = invoke(
        "quantize", src, "-o", tmp_path / "q.onnx", "-b", "4", "--quant-format", "matmulnbits", "--min-elements", "0", "-q"
    )
    assert result.exit_code == 0, result.output
    assert "stored as UINT4 (1 of 2 as MatMulNBits)" in result.stdout and "UINT4+UINT4" not in result.stdout, result.stdout


def test_quantize_json(save, tmp_path):
    src = save(BUILDERS["mlp"]()[0])
    result = invoke(
        "quantize", src, "-o", tmp_path / "q.onnx", "-b", "4", "--symmetric", "--min-elements", "0", "--format", "json"
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["bits"] == 4 and data["storage"] == "INT4" and data["quantized_count"] == 2
    assert data["opset_after"] == 21 and data["compression"] > 1
    tensors = {t["name"]: t for t in data["tensors"]}
    assert tensors["w1"]["quantized"] and tensors["w1"]["storage"] == "INT4"
    assert not tensors["b1"]["quantized"] and tensors["b1"]["reason"].startswith("not a weight")


def test_info_json(save):
    src = save(BUILDERS["conv_net"]()[0])
    result = invoke("info", src, "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["opsets"] == {"ai.onnx": 13}
    assert data["op_counts"]["Conv"] == 2 and data["node_count"] == 7
    assert data["inputs"][0] == {"name": "x", "dtype": "FLOAT", "shape": ["N", 3, 16, 16]}
    assert data["float_weight_count"] == 6
    assert data["float_weight_bytes"] == 4 * data["float_weight_elements"]
    assert isinstance(data["build"]["openmp"], bool) and data["build"]["threads"] >= 1


def test_info_text(save):
    result = invoke("info", save(BUILDERS["mlp"]()[0]))
    assert result.exit_code == 0
    assert "MatMul" in result.stdout and "OpenMP" in result.stdout


@pytest.mark.parametrize("command", ["quantize", "info"])
def test_bad_input_is_one_line_exit_1(command, tmp_path):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"\x00\x01garbage" * 50)
    args = [command, bad] + (["-o", tmp_path / "q.onnx"] if command == "quantize" else [])
    result = invoke(*args)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "garbage.onnx" in lines[0] and "not a valid ONNX model" in lines[0]
    assert not (tmp_path / "q.onnx").exists()


def test_missing_file_exit_1(tmp_path):
    result = invoke("quantize", tmp_path / "missing.onnx", "-o", tmp_path / "q.onnx")
    assert result.exit_code == 1
    assert "missing.onnx: no such file" in result.stderr


def test_output_under_a_file_is_one_line_saying_so(save, tmp_path):
    src = save(BUILDERS["mlp"]()[0])
    (tmp_path / "some_file.txt").write_text("x")
    result = invoke("quantize", src, "-o", tmp_path / "some_file.txt" / "q.onnx", "--min-elements", "0")
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "some_file.txt is a file, not a folder" in lines[0], lines


def test_same_output_refused(save):
    src = save(BUILDERS["mlp"]()[0])
    result = invoke("quantize", src, "-o", src, "--min-elements", "0")
    assert result.exit_code == 1 and "the output path is the input model" in result.stderr


@pytest.mark.parametrize(
    ("flags", "flag"),
    [
        (["--bits", "3"], "'--bits'"),
        ([], "-o"),  # -o is required
        (["--format", "xml"], "'--format'"),
        (["--bits", "4", "--block-size", "48"], "'--block-size'"),
        (["--bits", "4", "--quant-format", "matmulnbits", "--accuracy-level", "7"], "'--accuracy-level'"),
        (["--bitz", "4"], "--bitz"),
        (["--exclude-op-type", "Gemmm"], "'--exclude-op-type'"),  # an op type the model lacks
    ],
)
def test_usage_errors_are_one_line_naming_the_flag_exit_2(save, tmp_path, flags, flag):
    src = save(BUILDERS["mlp"]()[0])
    result = invoke("quantize", src, *(["-o", tmp_path / "q.onnx"] if flag != "-o" else []), *flags)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and flag in lines[0], result.stderr
    assert "quantrs quantize -h" in lines[0] and not list(tmp_path.glob("q.onnx*"))


def test_an_op_type_the_model_lacks_is_refused_with_close_matches(save, tmp_path):
    """--exclude-op-type is checked against the model as --exclude is: a typo would otherwise
    leave every weight quantized without a word."""
    src = save(BUILDERS["conv_net"]()[0])
    result = invoke("quantize", src, "-o", tmp_path / "q.onnx", "--exclude-op-type", "Gemmm")
    assert result.exit_code == 2 and "'Gemmm' matches no op type of the model; did you mean 'Gemm'?" in result.stderr, (
        result.stderr
    )
    assert not list(tmp_path.glob("q.onnx*"))
    assert invoke("quantize", src, "-o", tmp_path / "q.onnx", "--exclude-op-type", "Gemm", "-q").exit_code == 0
    # An ONNX op type this model lacks is no typo: a batch's one option list must fit every model.
    assert invoke("quantize", src, "-o", tmp_path / "r.onnx", "--exclude-op-type", "LSTM", "-q").exit_code == 0


@pytest.mark.parametrize("existing", [False, True])
def test_ctrl_c_in_quantize_says_nothing_was_written(tmp_path, existing):
    """SIGINT while the output is being written: one line saying what was interrupted and
    that nothing was written, exit 130, and no partial output or temporary folder left."""
    import signal
    import time

    from quantrs.synthetic import matmul_stack

    src = matmul_stack(tmp_path / "m.onnx", 4, 2048)
    out = tmp_path / "q.onnx"
    if existing:
        out.write_bytes(b"an older file")
    proc = subprocess.Popen(
        [sys.executable, "-m", "quantrs", "quantize", str(src), "-o", str(out), "-q"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".q.onnx.*.tmp")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the model was written before the signal arrived")
    assert proc.returncode == 130 and stdout == "" and "Traceback" not in stderr, stderr
    left = f": {out} is as it was" if existing else f" at {out}"
    assert stderr.strip().splitlines() == [f"error: interrupted while quantizing {src}: nothing written{left}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"] + (["q.onnx"] if existing else [])
    assert not existing or out.read_bytes() == b"an older file"


def test_ctrl_c_in_any_other_command_is_one_line_exit_130(save, monkeypatch):
    import quantrs.info

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(quantrs.info, "inspect_model", interrupted)
    result = invoke("info", save(BUILDERS["mlp"]()[0]))
    assert result.exit_code == 130 and result.stderr.strip().splitlines() == ["error: interrupted: quantrs info stopped"], (
        result.output
    )


def test_usage_error_from_the_console_script_is_one_line(tmp_path):
    # Not through CliRunner: the process's own stderr, as a user or a script sees it.
    bad = subprocess.run(
        [sys.executable, "-m", "quantrs", "quantize", "m.onnx", "-o", "q.onnx", "--bits", "4", "--block-size", "48"],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [
        "error: Invalid value for '--block-size': must be one of 16, 32, 64, 128, 256, not 48 "
        "(see 'python -m quantrs quantize -h')"
    ]


def test_no_arguments_prints_the_help_once():
    result = invoke()
    assert result.exit_code == 2 and result.output.count("Usage: quantrs") == 1 and "error:" not in result.output


def test_python_dash_m_and_console_script(save, tmp_path):
    src = save(BUILDERS["mlp"]()[0])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "quantrs",
            "quantize",
            str(src),
            "-o",
            str(tmp_path / "q.onnx"),
            "--min-elements",
            "0",
            "--format",
            "json",
            "-q",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["quantized_count"] == 2
    bad = subprocess.run(
        [sys.executable, "-m", "quantrs", "info", str(tmp_path / "nope.onnx")],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_version_does_not_import_heavy_modules(tmp_path):
    code = (
        "import sys; sys.argv=['quantrs','--version']\nfrom quantrs.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('numpy','onnx','onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_kernels_and_reference_are_reached_from_the_package_lazily(tmp_path):
    """The README: the kernels are usable "through `quantrs.kernels`", with twins in
    `quantrs.reference`, after a plain `import quantrs`; which itself imports no numpy."""
    code = (
        "import sys, quantrs\nheavy = 'numpy' in sys.modules\n"
        "import numpy as np\nx = np.arange(6, dtype=np.float32).reshape(2, 3)\n"
        "print(heavy, quantrs.kernels.minmax(x, axis=0).lo.tolist(), quantrs.reference.__name__, "
        "'kernels' in dir(quantrs) or 'kernels' in quantrs.__all__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.split() == ["False", "[0.0,", "3.0]", "quantrs.reference", "True"], out.stdout


@pytest.mark.parametrize("command", ["validate", "auto"])
def test_report_without_matplotlib_fails_before_any_work(save, tmp_path, command):
    """The only commands with --report check for matplotlib first: here the quantized model
    (validate) or the samples (auto) do not exist, and the error is still matplotlib's."""
    src = save(BUILDERS["mlp"]()[0])
    missing = tmp_path / "absent.onnx"
    args = (
        [command, str(src), str(missing)]
        if command == "validate"
        else [command, str(src), "-o", str(tmp_path / "q.onnx"), "--data", str(missing), "--min-cosine", "0.9"]
    )
    code = (
        "import sys\nsys.modules['matplotlib'] = None\nfrom quantrs.cli import main\n"
        "sys.argv = ['quantrs', *sys.argv[1:]]\nmain()"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *args, "--report", str(tmp_path / "r.html")], capture_output=True, text=True, cwd=tmp_path
    )
    assert out.returncode == 1 and out.stderr.strip().splitlines() == [
        "error: --report needs matplotlib: pip install 'quantrs[report]'"
    ], out.stderr
    assert not list(tmp_path.glob("r.html*")) and not list(tmp_path.glob("q.onnx*"))


def test_quantize_imports_only_what_it_uses(tmp_path):
    """Start-up is a large share of quantizing a small model: `quantize` must not pull in
    onnxruntime (it does not run the model) or pydantic (typer >= 0.29 coerces options through
    it, ~70 ms a command; pyproject caps typer below 0.29 for that reason)."""
    model = tmp_path / "m.onnx"
    onnx.save(BUILDERS["mlp"]()[0], model)
    assert (
        _imported_by(
            tmp_path, ["quantize", str(model), "-o", str(tmp_path / "q.onnx"), "-q"], {"onnxruntime", "pydantic", "matplotlib"}
        )
        == []
    )
    assert (tmp_path / "q.onnx").exists()


def _imported_by(folder, argv: list[str], heavy: set[str]) -> list[str]:
    """Which of the `heavy` top-level packages a successful `quantrs *argv` run has imported
    (in a fresh interpreter, so nothing is loaded before it)."""
    code = (
        "import json, sys\nfrom quantrs.cli import main\n"
        f"sys.argv = ['quantrs', *{argv!r}]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(heavy)!r}))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=folder)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_info_on_the_example_imports_only_what_it_uses(tmp_path):
    """`quantrs info` on the bundled model reads one file: no runtime, no config or report
    libraries at start-up (a fresh install's start-up is most of this command's time)."""
    example = Path(__file__).resolve().parents[1] / "examples" / "small_cnn.onnx"
    heavy = {"onnxruntime", "pydantic", "yaml", "matplotlib", "distributed", "scipy", "tokenizers"}
    assert _imported_by(tmp_path, ["info", str(example)], heavy) == []


def test_ml_dtypes_is_a_release_that_imports_fast():
    """Every `import onnx` imports ml_dtypes; 0.7.0's took ~0.5 s, most of each command's start-up
    from a fresh install. pyproject caps it below 0.7: a resolve that ignores the cap fails here."""
    from importlib.metadata import requires, version

    assert any(r.replace(" ", "").startswith("ml_dtypes<0.7") for r in requires("quantrs") or [])
    major, minor = (int(p) for p in version("ml_dtypes").split(".")[:2])
    assert (major, minor) < (0, 7), version("ml_dtypes")


def test_verbose_logs_each_stage_and_vv_each_tensor(save, tmp_path):
    src = save(BUILDERS["conv_net"]()[0])
    code = "import sys\nfrom quantrs.cli import main\nsys.argv = ['quantrs', *sys.argv[1:]]\nmain()"
    base = [sys.executable, "-c", code]
    one = subprocess.run(
        [*base, "-v", "quantize", str(src), "-o", str(tmp_path / "q.onnx"), "--per-channel", "--min-elements", "0"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**__import__("os").environ, "COLUMNS": "300"},
    )
    assert one.returncode == 0, one.stderr
    for stage in ("loaded", "plan: 3 of 6 tensors quantized", "opset 13 kept", "wrote"):
        assert stage in one.stderr, stage
    assert "conv1.b" not in one.stderr  # per-tensor lines are -vv
    two = subprocess.run(
        [*base, "-vv", "quantize", str(src), "-o", str(tmp_path / "q.onnx"), "--per-channel", "--min-elements", "0"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**__import__("os").environ, "COLUMNS": "300"},
    )
    assert "conv1.b" in two.stderr and "quantized conv1.w" in two.stderr


def test_works_from_the_repository_root():
    """The README leaves a newcomer in the clone's root: `python -m quantrs` and `import quantrs`
    must find the installed package there (src layout), not a source folder without kernels."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if not (root / "examples" / "small_cnn.onnx").exists():
        pytest.skip("needs the source tree")
    out = subprocess.run(
        [sys.executable, "-m", "quantrs", "info", "examples/small_cnn.onnx", "--format", "json"],
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["build"]["threads"] >= 1
    code = "import quantrs, quantrs.kernels; print(quantrs.inspect_model('examples/small_cnn.onnx').node_count)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True).stdout.strip() == "17"
    )
