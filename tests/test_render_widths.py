"""Names and paths are never split, at any terminal width: they are what users copy into
--exclude, shells and scripts. A table too wide for the terminal drops or shortens its less
important columns, and when even that does not fit, shows each row's name on a line of its
own; the suggested --exclude list is one line that a shell parses back into the names."""

from __future__ import annotations

import json
import re
import shlex

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from quantrs.cli import app

WIDTHS = [40, 60, 80, 100, 200]
LONG = "model.layers.1.self_attn.o_proj.bias_of_a_long_exported_name_0123456789"


def transformer_like(path):
    """Weights and nodes named as exporters name them (model.layers.0.self_attn.q_proj.weight,
    /model/layers.0/self_attn/q_proj/MatMul), and one name longer than a narrow terminal."""
    rng = np.random.default_rng(0)
    nodes, weights, names = [], [], []
    x = "input_embeds"
    for i in range(2):
        for p in "qkvo":
            w = f"model.layers.{i}.self_attn.{p}_proj.weight"
            weights.append(numpy_helper.from_array((rng.standard_normal((64, 64)) * 0.1).astype(np.float32), w))
            y = f"/model/layers.{i}/self_attn/{p}_proj/MatMul_output_0"
            nodes.append(helper.make_node("MatMul", [x, w], [y], name=f"/model/layers.{i}/self_attn/{p}_proj/MatMul"))
            names += [w, nodes[-1].name]
            x = y
    weights.append(numpy_helper.from_array(np.full(64, 0.5, np.float32), LONG))
    nodes.append(helper.make_node("Add", [x, LONG], ["last_hidden_state"], name="/model/final_layer_norm/Add"))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input_embeds", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", 64])], weights,
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return [*names, LONG]


def assert_whole(output: str, names: list[str], optional: list[str] = ()) -> None:  # type: ignore[assignment]
    """Every name is on one line of `output`, and no line holds a piece of one of them or of the
    `optional` ones (in columns a narrow terminal may drop): a name split over lines, or cut."""
    lines = output.splitlines()
    for name in names:
        assert any(name in line for line in lines), f"{name!r} is on no line whole:\n{output}"
    names = [*names, *optional]
    for line in lines:
        for token in re.split(r"[\s│┃,:'\"]+", line):
            broken = [n for n in names if len(token) >= 12 and token in n and token != n and not any(token == m for m in names)]
            assert not broken, f"a piece of {broken[0]!r} ({token!r}) in:\n{output}"
    assert "…" not in output


def run(width: int, *args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": str(width)})
    assert result.exit_code in (0, 1), result.output
    return result.stdout


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exported_transformer_models")
    names = transformer_like(folder / "encoder_model_exported_for_onnxruntime.onnx")
    return folder / "encoder_model_exported_for_onnxruntime.onnx", names


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize(
    "flags", [[], ["-b", "4", "--block-size", "32"], ["-b", "4", "--block-size", "32", "--range", "search"], ["--dry-run"]]
)
def test_quantize_tables_keep_names_and_paths_whole(model, tmp_path, width, flags):
    src, names = model
    out = tmp_path / "quantized_encoder_model_for_onnxruntime.onnx"
    text = run(width, "quantize", src, *([] if "--dry-run" in flags else ["-o", out]), "--min-elements", "0", *flags)
    weights = [n for n in names if not n.startswith("/")]
    assert_whole(
        text, weights + [str(src)] + ([] if "--dry-run" in flags else [str(out)]), [n for n in names if n.startswith("/")]
    )
    if width >= 100 and "--dry-run" not in flags:  # room for a table: the blocks said in the axis column
        assert ("(blocks of 32)" in text) == ("--block-size" in flags), text


@pytest.mark.parametrize("width", WIDTHS)
def test_validate_detailed_and_its_suggestion(model, tmp_path, width):
    src, names = model
    out = tmp_path / "q.onnx"
    assert CliRunner().invoke(app, ["quantize", str(src), "-o", str(out), "-b", "4", "--block-size", "32", "-q"]).exit_code == 0
    args = ["validate", src, out, "--detailed", "--min-cosine", "0.99999"]
    suggested = json.loads(run(width, *args, "--format", "json"))["suggested_exclude"]
    assert suggested, "the model should need a suggestion"
    text = run(width, *args)
    weights = [n for n in names if n.endswith(".weight")]
    assert_whole(text, weights, [n for n in names if n not in weights])  # nodes: the consumer column
    if width == 200:
        assert_whole(text, [n for n in names if n != LONG])
    lines = [line for line in text.splitlines() if "--exclude" in line]
    assert len(lines) == 1 and lines[0].startswith("--exclude "), text  # one line, outside any table
    words = shlex.split(lines[0])  # pasted into a shell
    assert words[0::2] == ["--exclude"] * len(suggested) and words[1::2] == suggested


@pytest.mark.parametrize("width", WIDTHS)
def test_batch_and_config_tables_keep_paths_whole(model, tmp_path, width):
    src, _ = model
    folder = tmp_path / "models_to_quantize_for_the_edge_devices"
    folder.mkdir()
    inputs = [folder / "encoder_model_exported_for_onnxruntime_v2.onnx", folder / "tiny.onnx"]
    for path in inputs:
        path.write_bytes(src.read_bytes())
    broken = folder / "a_broken_model_file_from_a_failed_export.onnx"
    broken.write_bytes(b"not a model" * 10)
    out = tmp_path / "quantized_models_for_the_edge_devices"
    text = run(width, "batch", folder, "-o", out, "--continue-on-error")
    assert_whole(text, [str(p) for p in (*inputs, broken)] + [str(out / p.name) for p in (*inputs, broken)])
    (tmp_path / "q.yaml").write_text(
        "".join(f"  - input: {p}\n    output: {tmp_path / 'from_config' / p.name}\n" for p in inputs).join(["models:\n", ""])
    )
    (tmp_path / "from_config").mkdir()
    for extra in ([], ["--dry-run"]):
        text = run(width, "config", tmp_path / "q.yaml", *extra)
        assert_whole(text, [str(p) for p in inputs] + [str(tmp_path / "from_config" / p.name) for p in inputs])


@pytest.mark.parametrize("width", WIDTHS)
def test_info_keeps_names_whole(model, width):
    src, _ = model
    assert_whole(run(width, "info", src), [str(src), "input_embeds", "last_hidden_state"])


def test_a_narrow_terminal_drops_and_shortens_columns_before_it_stacks(model, tmp_path):
    """At 80 columns the quantize table keeps its names whole by dropping "max abs err" and
    shortening the axis column ("0", the heading saying "blocks of 32"), still a table; at 200
    it shows every column."""
    src, _ = model
    args = ["quantize", src, "-o", tmp_path / "q.onnx", "-b", "4", "--block-size", "32"]
    wide, narrow = run(200, *args), run(80, *args)
    header = next(line for line in wide.splitlines() if "┃" in line and "tensor" in line)
    assert "max abs err" in header and "(blocks of 32)" in wide
    header = next(line for line in narrow.splitlines() if "┃" in line and "tensor" in line)
    assert "shape" in header and "axis" in header and "max abs err" not in header and "(blocks of 32)" not in narrow, narrow
    assert "4-bit blocks of 32" in narrow
    assert all(len(line.rstrip()) <= 80 for line in narrow.splitlines() if "┃" in line or "│" in line)
