"""Config files (YAML and TOML), precedence, and per-layer control."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from builders import BUILDERS
from typer.testing import CliRunner

import quantrs
from quantrs import QuantizeConfig
from quantrs.cli import app
from quantrs.configfile import jobs_from_config, load_config
from quantrs.errors import ConfigError

runner = CliRunner()

YAML = """
bits: 4
per_channel: true
min_elements: 0
exclude_regex: ["^fc\\\\."]
models:
  - input: models/mlp.onnx
    output: out/mlp_int8.onnx
    bits: 8
    symmetric: true
batch:
  input_dir: "models/conv*.onnx"
  output_dir: out/
  skip_existing: true
  jobs: 2
"""

TOML = """
bits = 4
per_channel = true
min_elements = 0
exclude_regex = ["^fc\\\\."]

[[models]]
input = "models/mlp.onnx"
output = "out/mlp_int8.onnx"
bits = 8
symmetric = true

[batch]
input_dir = "models/conv*.onnx"
output_dir = "out/"
skip_existing = true
jobs = 2
"""


@pytest.fixture
def workspace(tmp_path):
    (tmp_path / "models").mkdir()
    for name in ("mlp", "conv_net", "conv_transpose"):
        onnx.save(BUILDERS[name]()[0], str(tmp_path / "models" / f"{name}.onnx"))
    (tmp_path / "q.yaml").write_text(YAML)
    (tmp_path / "q.toml").write_text(TOML)
    return tmp_path


def test_yaml_and_toml_give_the_same_config(workspace):
    from_yaml, from_toml = load_config(workspace / "q.yaml"), load_config(workspace / "q.toml")
    assert from_yaml == from_toml
    assert from_yaml.bits == 4 and from_yaml.models[0].bits == 8 and from_yaml.batch.jobs == 2
    assert jobs_from_config(from_yaml, workspace) == jobs_from_config(from_toml, workspace)


def test_precedence_flag_over_model_over_file_over_default(workspace):
    config = load_config(workspace / "q.yaml")
    jobs = jobs_from_config(config, workspace, {"symmetric": False})
    by_name = {j.input.name: j for j in jobs}
    mlp, conv = by_name["mlp.onnx"].config, by_name["conv_net.onnx"].config
    assert mlp.bits == 8 and conv.bits == 4  # the model's own setting beats the file's global
    assert mlp.symmetric is False  # the command-line flag beats the model's setting
    assert conv.native_int4 is True  # nobody set it: the default
    assert [j.output for j in jobs] == [
        workspace / "out" / "mlp_int8.onnx",
        workspace / "out" / "conv_net.onnx",
        workspace / "out" / "conv_transpose.onnx",
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ("bits: 3\n", r"q\.yaml: bits: Input should be 4 or 8"),
        ("per_chanel: true\n", r"q\.yaml: per_chanel: unknown key"),
        ("models:\n  - input: a.onnx\n    output: b.onnx\n    bitz: 4\n", r"q\.yaml: models\.0\.bitz: unknown key"),
        ("models:\n  - input: a.onnx\n", r"q\.yaml: models\.0\.output: Field required"),
        ("min_elements: many\n", r"q\.yaml: min_elements: Input should be a valid integer"),
        ("exclude_regex: ['(']\n", r"q\.yaml: \(top level\): exclude_regex '\(' is not a valid regular expression"),
        ("batch:\n  input_dir: nothing/*.onnx\n  output_dir: out\n", r"nothing/\*\.onnx: matches no ONNX model"),
        ("bits: [8\n", r"q\.yaml: not valid YAML"),
        ("- 1\n- 2\n", r"q\.yaml: the top level must be a mapping"),
        ("{}\n", r"q\.yaml: the config names no model"),
        ("bits: 8\n", r"q\.yaml: the config names no model"),
    ],
)
def test_config_errors_name_the_file_and_field(tmp_path, text, message):
    (tmp_path / "q.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        jobs_from_config(load_config(tmp_path / "q.yaml"), tmp_path)
    result = runner.invoke(app, ["config", str(tmp_path / "q.yaml")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_toml_and_unknown_suffix(tmp_path):
    (tmp_path / "q.toml").write_text("bits = \n")
    with pytest.raises(ConfigError, match=r"q\.toml: not valid TOML"):
        load_config(tmp_path / "q.toml")
    (tmp_path / "q.ini").write_text("bits=4\n")
    with pytest.raises(ConfigError, match=r"unknown config format '\.ini'"):
        load_config(tmp_path / "q.ini")


def test_config_command_dry_run_writes_nothing(workspace):
    result = runner.invoke(app, ["config", str(workspace / "q.yaml"), "--dry-run", "--format", "json"])
    assert result.exit_code == 0, result.output
    plans = json.loads(result.stdout)["plans"]  # one JSON object, as every command prints
    assert [p["input"].rsplit("/", 1)[-1] for p in plans] == ["mlp.onnx", "conv_net.onnx", "conv_transpose.onnx"]
    conv = {t["name"]: t for t in plans[1]["tensors"]}
    assert conv["conv1.w"]["bits"] == 4 and conv["conv1.w"]["axis"] == 0
    assert not conv["fc.w"]["quantize"] and "pattern" in conv["fc.w"]["reason"]
    assert {t["bits"] for t in plans[0]["tensors"] if t["quantize"]} == {8}
    assert not (workspace / "out").exists()


def test_config_command_runs_and_flags_override(workspace):
    result = runner.invoke(app, ["config", str(workspace / "q.yaml"), "--bits", "8", "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["summary"]["ok"] == 3 and report["jobs"] == 2
    out = onnx.load(str(workspace / "out" / "conv_net.onnx"))
    storage = {onnx.TensorProto.DataType.Name(t.data_type) for t in out.graph.initializer if t.name.endswith("_quantized")}
    assert storage == {"UINT8"}  # --bits 8 beat the file's bits: 4
    again = runner.invoke(app, ["config", str(workspace / "q.yaml"), "--format", "json"])
    assert json.loads(again.stdout)["summary"]["skipped"] == 3  # batch.skip_existing covers every model of the file


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_config_failures_say_their_cause_as_one_line_on_stderr(workspace, fmt):
    """Issue 23 (messages): the summary table wraps a failure's cause inside its cell; each
    failure is also one line on stderr naming the model, whatever the format of stdout."""
    (workspace / "models" / "conv_net.onnx").write_bytes(b"not an onnx model" * 20)
    result = runner.invoke(app, ["config", str(workspace / "q.yaml"), "--continue-on-error", "--format", fmt])
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "conv_net.onnx" in lines[0] and "not a valid ONNX model" in lines[0], lines
    if fmt == "json":
        assert json.loads(result.stdout)["summary"]["failed"] == 1  # stdout stays one JSON object


def test_exclusions_by_op_type_and_regex(save, tmp_path):
    model, _ = BUILDERS["conv_net"]()
    src = save(model)
    by_op = quantrs.dry_run(src, QuantizeConfig(min_elements=0, exclude_op_types=("Gemm",)))
    reasons = {t.name: t.reason for t in by_op.tensors}
    assert reasons["fc.w"] == "used by an excluded op type (Gemm)"
    assert by_op.quantized_count == 2
    by_regex = quantrs.dry_run(src, QuantizeConfig(min_elements=0, exclude_regex=(r"conv\d\.w",)))
    assert by_regex.quantized_count == 1 and {t.name for t in by_regex.tensors if t.quantize} == {"fc.w"}


def test_layer_bits_mixes_int4_and_int8_in_one_model(save, tmp_path):
    model, feeds = BUILDERS["mlp"]()
    src = save(model)
    config = QuantizeConfig(bits=8, per_channel=True, min_elements=0, layer_bits={"w2": 4})
    report = quantrs.quantize(src, tmp_path / "mixed.onnx", config)
    storage = {t.name: t.storage for t in report.tensors if t.quantized}
    assert storage == {"w1": "UINT8", "w2": "UINT4"}
    assert report.storage == "UINT8+UINT4" and report.opset_after == 21
    ref = ort.InferenceSession(str(src)).run(None, feeds)[0]
    out = ort.InferenceSession(str(tmp_path / "mixed.onnx")).run(None, feeds)[0]
    assert np.abs(out - ref).max() < 0.35 * np.abs(ref).max()


def test_cli_per_layer_flags(save, tmp_path):
    src = save(BUILDERS["conv_net"]()[0])
    result = runner.invoke(
        app,
        [
            "quantize",
            str(src),
            "--dry-run",
            "--format",
            "json",
            "--min-elements",
            "0",
            "--per-channel",
            "--exclude",
            "conv1.w",
            "--exclude-op-type",
            "Gemm",
            "--layer-bits",
            "conv2.w=4",
        ],
    )
    assert result.exit_code == 0, result.output
    tensors = {t["name"]: t for t in json.loads(result.stdout)["tensors"]}  # an object, like a run's report
    assert tensors["conv1.w"]["reason"] == "excluded by the user"
    assert tensors["fc.w"]["reason"].startswith("used by an excluded op type")
    assert tensors["conv2.w"]["bits"] == 4 and tensors["conv2.w"]["axis"] == 0
    bad = runner.invoke(app, ["quantize", str(src), "-o", str(tmp_path / "q.onnx"), "--layer-bits", "conv2.w=5"])
    assert bad.exit_code == 2 and "NAME=4 or NAME=8" in bad.output


def test_config_objects_validate_and_pickle():
    import pickle

    config = QuantizeConfig(layer_bits={"b": 4, "a": 8}, exclude=["x"])
    assert config.layer_bits == (("a", 8), ("b", 4)) and config.exclude == ("x",)
    assert pickle.loads(pickle.dumps(config)) == config
    with pytest.raises(ConfigError, match="layer_bits 'a' must map to 4 or 8"):
        QuantizeConfig(layer_bits={"a": 2})
    with pytest.raises(ConfigError, match="bits must be 4 or 8"):
        QuantizeConfig(bits=16)
