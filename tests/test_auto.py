"""`quantrs auto`: the smallest model meeting an accuracy budget on held-out samples."""

from __future__ import annotations

import itertools
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from quantrs import QuantizeConfig
from quantrs.auto import AutoConfig, _Search, auto
from quantrs.cli import app
from quantrs.errors import ConfigError
from quantrs.model import load_model
from quantrs.sensitivity import LayerSensitivity, Sensitivity, measure, width_configs

runner = CliRunner()
D = 128


def sensitive_mlp(path, layers: int = 5, sensitive: int = 2, seed: int = 0, d: int = D):
    """MatMul -> Tanh, `layers` times, [d, d] weights; layer `sensitive` has three input rows 30x
    the others (what trained transformers' outlier features do to a weight): 4 bits per channel
    lose it."""
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((d, d)) / np.sqrt(d)).astype(np.float32)
        if i == sensitive:
            w[rng.choice(d, 3, replace=False)] *= 30.0
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [
            helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"], name=f"fc{i}"),
            helper.make_node("Tanh", [f"m{i}"], [f"t{i}"]),
        ]
        prev = f"t{i}"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", d])
    y = helper.make_tensor_value_info(prev, TensorProto.FLOAT, ["N", d])
    model = helper.make_model(helper.make_graph(nodes, "mlp", [x], [y], inits), opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    samples = rng.standard_normal((32, 4, d)).astype(np.float32)
    return path, samples


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_the_result_meets_the_budget_is_smaller_than_int8_and_keeps_the_sensitive_layer(tmp_path):
    src, samples = sensitive_mlp(tmp_path / "m.onnx")
    held_out = np.random.default_rng(7).standard_normal((16, 4, D)).astype(np.float32)
    report = auto(
        src,
        tmp_path / "q.onnx",
        [{"x": s} for s in samples],
        AutoConfig(min_cosine=0.99, block_size=None),
        eval_data=[{"x": s} for s in held_out],
    )
    assert report.met and report.miss == 0
    widths = {layer.name: layer.width for layer in report.layers}
    assert widths["w2"] in ("8", "float"), widths
    assert "4" in widths.values()
    assert report.uniform_int8_weight_bytes is not None and report.weight_bytes < report.uniform_int8_weight_bytes
    sensitive = next(layer for layer in report.layers if layer.name == "w2")
    others = [layer.errors["4"] for layer in report.layers if layer.name != "w2"]
    assert sensitive.errors["4"] > 2 * max(others)  # the measurement sees what makes it sensitive
    # The written model: on held-out inputs it meets the budget in onnxruntime, as reported.
    ref = ort.InferenceSession(str(src)).run(None, {"x": held_out.reshape(-1, D)})[0]
    got = ort.InferenceSession(str(tmp_path / "q.onnx")).run(None, {"x": held_out.reshape(-1, D)})[0]
    assert cosine(ref, got) >= 0.99
    assert report.candidates[report.chosen].met and 1 <= report.evaluations <= 6


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_an_unreachable_budget_leaves_nothing_at_o_writes_the_closest_beside_it_and_exits_1(tmp_path, fmt):
    """Issue 23.5: a missed budget must not leave a model at -o (a make rule or a `set -e` script
    would take the failed run for a success): the closest model goes to q.closest.onnx, which
    stderr (one line), the report and its JSON name; exit 1."""
    src, samples = sensitive_mlp(tmp_path / "m.onnx")
    np.save(tmp_path / "data.npy", samples)
    result = runner.invoke(
        app,
        [
            "auto",
            str(src),
            "-o",
            str(tmp_path / "q.onnx"),
            "--data",
            str(tmp_path / "data.npy"),
            "--min-cosine",
            "0.999999",
            "--choices",
            "4,8",
            "--format",
            fmt,
        ],
    )
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    closest = tmp_path / "q.closest.onnx"
    assert not (tmp_path / "q.onnx").exists() and not (tmp_path / "q.onnx.data").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npy", "m.onnx", "q.closest.onnx"]  # no work folder left
    lines = [line for line in result.stderr.strip().splitlines() if not line.endswith("...")]  # progress in text
    assert len(lines) == 1 and "m.onnx: missed min cosine 0.999999" in lines[0] and str(closest) in lines[0], lines
    assert lines[0].startswith("error: ") and f"nothing written at {tmp_path / 'q.onnx'}" in lines[0]
    x = samples[0]
    assert ort.InferenceSession(str(closest)).run(None, {"x": x})[0].shape == x.shape  # a whole, runnable model
    if fmt == "text":
        assert str(closest) in " ".join(result.stdout.split())
        return
    data = json.loads(result.stdout)
    assert data["met"] is False and data["miss"] > 0
    assert (
        data["closest"] == str(closest) and data["files_written"] == [str(closest)] and data["output"] == str(tmp_path / "q.onnx")
    )
    assert data["output_bytes"] == closest.stat().st_size
    assert all(layer["width"] == "8" for layer in data["layers"])  # the best these widths can do
    assert data["evaluations"] == len(data["candidates"]) >= 1


def test_the_closest_model_keeps_its_external_data_beside_it(tmp_path):
    """An input with external data: the closest model is rebuilt as q.closest.onnx with its own
    q.closest.onnx.data; nothing at -o, and a met budget still writes -o (closest is None)."""
    src, samples = sensitive_mlp(tmp_path / "m.onnx")
    model = onnx.load(str(src))
    onnx.save(model, str(src), save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    feeds = [{"x": s} for s in samples]
    report = auto(src, tmp_path / "q.onnx", feeds, AutoConfig(min_cosine=0.999999, choices=("4", "8")))
    closest = tmp_path / "q.closest.onnx"
    assert not report.met and report.closest == str(closest)
    assert report.files_written == [str(closest), str(tmp_path / "q.closest.onnx.data")]
    assert not (tmp_path / "q.onnx").exists() and not (tmp_path / "q.onnx.data").exists()
    written = onnx.load(str(closest), load_external_data=False)
    locations = {e.value for t in written.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"q.closest.onnx.data"}
    ort.InferenceSession(str(closest)).run(None, {"x": samples[0]})
    met = auto(src, tmp_path / "ok.onnx", feeds, AutoConfig(min_cosine=0.9))
    assert met.met and met.closest is None and (tmp_path / "ok.onnx").exists() and not (tmp_path / "ok.closest.onnx").exists()


@pytest.mark.parametrize("clash", ["model", "data"])
def test_the_closest_model_may_not_overwrite_a_file_the_input_reads(tmp_path, clash):
    """The closest model's name goes through the checks of every output (pipeline.check_output):
    an input named q.closest.onnx, or whose external data is q.closest.onnx.data, is refused
    before any work for -o q.onnx, and left as it was."""
    name = "q.closest.onnx" if clash == "model" else "m.onnx"
    src, samples = sensitive_mlp(tmp_path / name)
    if clash == "data":
        onnx.save(onnx.load(str(src)), str(src), save_as_external_data=True, location="q.closest.onnx.data", size_threshold=0)
    np.save(tmp_path / "data.npy", samples)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    result = runner.invoke(
        app,
        [
            "auto",
            str(src),
            "-o",
            str(tmp_path / "q.onnx"),
            "--data",
            str(tmp_path / "data.npy"),
            "--min-cosine",
            "0.999999",
            "--choices",
            "4,8",
        ],
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "q.closest.onnx" in lines[0] and "closest model" in lines[0], lines
    assert ("is the input model" if clash == "model" else "external data file q.closest.onnx.data") in lines[0]
    assert "evaluating" not in result.output  # refused before the search
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    from quantrs.errors import OutputError

    with pytest.raises(OutputError, match="closest model"):
        auto(src, tmp_path / "q.onnx", [{"x": s} for s in samples], AutoConfig(min_cosine=0.99))


def test_json_and_html_report(tmp_path):
    pytest.importorskip("matplotlib")
    src, samples = sensitive_mlp(tmp_path / "m.onnx")
    np.save(tmp_path / "data.npy", samples)
    common = [
        "auto",
        str(src),
        "-o",
        str(tmp_path / "q.onnx"),
        "--data",
        str(tmp_path / "data.npy"),
        "--format",
        "json",
        "--min-cosine",
        "0.99",
    ]
    result = runner.invoke(app, [*common, "--report", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["budget"] == {"min_cosine": 0.99}
    for layer in data["layers"]:
        assert set(layer["errors"]) == set(layer["bytes"]) == {"4", "8", "float"}
    for c in data["candidates"]:
        assert 0 < c["predicted_cosine"] <= 1 and c["outputs"][0]["cosine"] > 0
    page = (tmp_path / "r.html").read_text()
    assert "data:image/png;base64" in page and "w2" in page
    missed = [*common[:-2], "--min-cosine", "0.999999", "--choices", "4,8"]  # the page names the closest model
    result = runner.invoke(app, [*missed, "--report", str(tmp_path / "r.html")])
    assert result.exit_code == 1 and "q.closest.onnx (the closest model; nothing at" in (tmp_path / "r.html").read_text()
    result = runner.invoke(app, [*missed, "--report", str(tmp_path / "q.closest.onnx")])  # nor may the page be that model
    assert result.exit_code == 1 and "q.closest.onnx: the --report page would" in result.stderr, result.output


def test_static_budget_is_measured_on_the_static_model(tmp_path):
    src, samples = sensitive_mlp(tmp_path / "m.onnx")
    report = auto(src, tmp_path / "q.onnx", [{"x": s} for s in samples], AutoConfig(min_cosine=0.98, static=True))
    model = onnx.load(str(tmp_path / "q.onnx"))
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)  # activations too
    assert report.static and report.met


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--min-cosine", "1.5"], "--min-cosine"),
        (["--min-cosine", "0"], "--min-cosine"),
        (["--max-relative-error", "-1"], "--max-relative-error"),
        (["--min-cosine", "0.9", "--choices", "4,16"], "--choices"),
        (["--min-cosine", "0.9", "--choices", "float"], "--choices"),
        ([], "--min-cosine"),
    ],
)
def test_bad_budgets_and_choices_are_usage_errors_naming_the_flag(tmp_path, args, flag):
    src, samples = sensitive_mlp(tmp_path / "m.onnx")
    np.save(tmp_path / "data.npy", samples)
    result = runner.invoke(app, ["auto", str(src), "-o", str(tmp_path / "q.onnx"), "--data", str(tmp_path / "data.npy"), *args])
    assert result.exit_code == 2 and flag in result.output
    assert not (tmp_path / "q.onnx").exists()


@pytest.mark.parametrize("choices", ["4,8,float", "8,float", "4,8"])
def test_a_cosine_of_1_is_refused_before_any_work_as_only_the_float_model(tmp_path, choices):
    """Issue 23.5: --min-cosine 1.0 allows no error at all (as --max-relative-error 0, refused
    too): only the float model meets it, which auto does not write (it quantizes). Refused at
    once as a usage error naming the flag, before the model or the samples are read, rather
    than searching and exiting 1 with a model that cannot have met it."""
    src, _ = sensitive_mlp(tmp_path / "m.onnx")
    result = runner.invoke(
        app,
        [
            "auto",
            str(src),
            "-o",
            str(tmp_path / "q.onnx"),
            "--data",
            str(tmp_path / "missing.npy"),
            "--min-cosine",
            "1.0",
            "--choices",
            choices,
        ],
    )
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "--min-cosine" in text and "only the float model meets it" in text, text
    assert "Traceback" not in result.output and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    with pytest.raises(ConfigError, match="only the float model"):
        AutoConfig(min_cosine=1.0)
    assert (
        AutoConfig(min_cosine=0.999999).min_cosine == 0.999999
        and AutoConfig(max_relative_error=0.1, min_top1=1.0).min_top1 == 1.0
    )


def test_no_samples_is_a_usage_error_naming_data(tmp_path):
    src, _ = sensitive_mlp(tmp_path / "m.onnx")
    result = runner.invoke(app, ["auto", str(src), "-o", str(tmp_path / "q.onnx"), "--min-cosine", "0.99"])
    assert result.exit_code == 2 and "--data" in result.output


def test_local_errors_are_the_consumers_relative_squared_error(tmp_path):
    """sensitivity.measure against numpy: ||x (W_q - W)||^2 / ||x W||^2 summed over samples,
    with W_q what quantize stores (read back from its output)."""
    src, samples = sensitive_mlp(tmp_path / "m.onnx", layers=2, sensitive=0)
    model = load_model(src)
    feeds = [{"x": s} for s in samples[:4]]
    configs = width_configs(["4", "8"], QuantizeConfig(), 32)
    result = measure(model, configs, feeds, with_float=False)
    import quantrs
    from quantrs.dequantize import dequantized_weights

    quantrs.quantize(src, tmp_path / "q4.onnx", configs["4"])
    w4 = dequantized_weights(load_model(src), load_model(tmp_path / "q4.onnx"))["w0"][1]
    w = np.asarray(model.weights.array("w0"), dtype=np.float64)
    x = np.concatenate([s.reshape(-1, D) for s in samples[:4]]).astype(np.float64)
    want = np.sum((x @ (w4 - w)) ** 2) / np.sum((x @ w) ** 2)
    got = next(layer for layer in result.layers if layer.name == "w0")
    assert got.errors["4"] == pytest.approx(want, rel=1e-4)
    assert got.bytes["4"] < got.bytes["8"] < w.size * 4


@pytest.mark.parametrize("seed", range(8))
def test_the_greedy_is_near_the_smallest_assignment_meeting_the_prediction(seed):
    """Against brute force over every assignment of 6 layers x 3 widths."""
    rng = np.random.default_rng(seed)
    layers = []
    for i in range(6):
        size = int(rng.integers(1, 10)) * 1000
        e4 = float(rng.uniform(1e-3, 2e-2))
        layers.append(
            LayerSensitivity(
                f"w{i}", "MatMul", {"4": e4, "8": e4 / 300, "float": 0.0}, {"4": size // 2, "8": size, "float": 4 * size}
            )
        )
    budget = 0.02
    search = _Search(Sensitivity(layers, [], 8, 0.0), ["4", "8", "float"], budget)
    chosen = search.assign()
    assert search.predicted(chosen) <= budget
    feasible = [
        dict(zip([layer.name for layer in layers], combo))
        for combo in itertools.product(["4", "8", "float"], repeat=len(layers))
        if search.predicted(dict(zip([layer.name for layer in layers], combo))) <= budget
    ]
    optimum = min(search.bytes(a) for a in feasible)
    assert search.bytes(chosen) <= 1.1 * optimum, (search.bytes(chosen), optimum)


def test_eight_bits_are_per_channel_and_constant_weights_are_measured(tmp_path):
    """8-bit weights per channel (what the uniform INT8 figure means: plain per-channel INT8);
    a sensitive weight held in a Constant node is measured and promoted like any other."""
    src, samples = sensitive_mlp(tmp_path / "m.onnx")
    model = onnx.load(str(src))
    w2 = next(t for t in model.graph.initializer if t.name == "w2")
    model.graph.initializer.remove(w2)
    model.graph.node.insert(0, helper.make_node("Constant", [], ["w2"], value=w2))
    onnx.save(model, str(tmp_path / "c.onnx"))
    report = auto(tmp_path / "c.onnx", tmp_path / "q.onnx", [{"x": s} for s in samples], AutoConfig(min_cosine=0.999))
    assert report.met and report.fixed == []
    layers = {layer.name: layer for layer in report.layers}
    assert layers["w2"].width in ("8", "float")
    assert layers["w0"].bytes["8"] == D * D + 4 * D + D  # codes, a float32 scale and a zero point per channel
    written = {t.name: t for t in onnx.load(str(tmp_path / "q.onnx")).graph.initializer}
    for name, layer in layers.items():  # what was measured is what was built
        if layer.width == "8":
            assert list(written[f"{name}_scale"].dims) == [D], name


def test_a_bad_output_path_and_held_out_data_fail_at_once(tmp_path):
    src, samples = sensitive_mlp(tmp_path / "m.onnx")
    np.save(tmp_path / "data.npy", samples)
    np.save(tmp_path / "bad.npy", np.ones((2, 4, D + 1), np.float32))
    common = ["auto", str(src), "--data", str(tmp_path / "data.npy"), "--min-cosine", "0.99"]
    result = runner.invoke(app, [*common, "-o", str(tmp_path / "missing" / "q.onnx")])
    assert result.exit_code == 1 and "does not exist" in result.stderr
    result = runner.invoke(app, [*common, "-o", str(tmp_path / "q.onnx"), "--eval-data", str(tmp_path / "bad.npy")])
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "q.onnx").exists()
    (tmp_path / "notes.txt").write_text("a file")  # a parent that is a file is said to be one
    result = runner.invoke(app, [*common, "-o", str(tmp_path / "notes.txt" / "q.onnx")])
    assert result.exit_code == 1 and "notes.txt is a file, not a folder" in result.stderr, result.output
    result = runner.invoke(app, [*common, "-o", str(tmp_path / "q.onnx"), "--report", str(tmp_path / "notes.txt" / "r.html")])
    assert (
        result.exit_code == 2
        and "--report" in result.output
        and "notes.txt is a file, not a folder" in " ".join(result.output.split())
    )


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("max_evaluations", [1, 3, 6])
def test_the_verification_loop(tmp_path, seed, max_evaluations):
    """_verify against a model whose true gain differs from the prediction: no candidate twice,
    never more than max_evaluations, the smallest that met is chosen, one file left."""
    from quantrs.auto import _verify
    from quantrs.report import OutputAgreement

    rng = np.random.default_rng(seed)
    layers = [
        LayerSensitivity(f"w{i}", "MatMul", {"4": e, "8": e / 200, "float": 0.0}, {"4": 500, "8": 1000, "float": 4000})
        for i, e in enumerate(rng.uniform(2e-3, 2e-2, size=6))
    ]
    config = AutoConfig(min_cosine=0.99, max_evaluations=max_evaluations)
    search = _Search(Sensitivity(layers, [], 8, 0.0), ["4", "8", "float"], config.error_budget)
    true_gain = float(rng.uniform(0.3, 3.0))
    built: list[tuple[str, ...]] = []

    def build(assignment, step):
        built.append(search.key(assignment))
        path = tmp_path / f"c{step}.onnx"
        path.write_text(str(step))
        return path

    def evaluate(path):
        r = true_gain * search.local(dict(zip([layer.name for layer in layers], built[-1])))
        return [OutputAgreement("y", 1 / np.sqrt(1 + r), 0.0, float(np.sqrt(r)), None)]

    outcome = _verify(search, config, build, evaluate)
    assert len(built) == len(set(built)) == len(outcome.candidates) <= max_evaluations
    met = [c for c in outcome.candidates if c.met]
    assert outcome.met == bool(met)
    if met:
        assert outcome.candidates[outcome.step].weight_bytes == min(c.weight_bytes for c in met)
    assert [p.name for p in tmp_path.iterdir()] == [f"c{outcome.step}.onnx"]
    assert search.gain == pytest.approx(true_gain, rel=1e-9)  # refitted to what was measured


def test_weights_only_inside_bodies_give_one_candidate_at_the_widest_width(tmp_path):
    from test_weight_locations import branching_model

    model, feeds = branching_model()
    onnx.save(model, str(tmp_path / "m.onnx"))
    report = auto(tmp_path / "m.onnx", tmp_path / "q.onnx", feeds * 2, AutoConfig(min_cosine=0.99), eval_data=feeds)
    assert report.layers == [] and set(report.fixed) >= {"w_then", "w_else"}
    assert report.met and report.evaluations == 1


def test_exclude_keeps_a_weight_float_and_unknown_names_are_usage_errors(tmp_path):
    src, samples = sensitive_mlp(tmp_path / "m.onnx")
    np.save(tmp_path / "data.npy", samples)
    common = [
        "auto",
        str(src),
        "-o",
        str(tmp_path / "q.onnx"),
        "--data",
        str(tmp_path / "data.npy"),
        "--min-cosine",
        "0.99",
        "--format",
        "json",
    ]
    result = runner.invoke(app, [*common, "--exclude", "w2"])
    assert result.exit_code == 0, result.output
    assert "w2" not in {layer["name"] for layer in json.loads(result.stdout)["layers"]}
    assert "w2" in {t.name for t in onnx.load(str(tmp_path / "q.onnx")).graph.initializer}  # still float
    result = runner.invoke(app, [*common, "--exclude", "w9"])
    assert result.exit_code == 2 and "--exclude" in result.output


@pytest.mark.parametrize("d, block_size", [(128, 32), (200, 64)])  # 200: columns padded to whole blocks
def test_matmulnbits_candidates_are_measured_and_stored_as_matmulnbits_at_4_and_8_bits(tmp_path, d, block_size):
    """--quant-format matmulnbits: every width is a com.microsoft.MatMulNBits in the blocks asked
    for (8-bit weights keep them), and the bytes auto counts are the bytes written."""
    src, samples = sensitive_mlp(tmp_path / "m.onnx", d=d)
    held_out = np.random.default_rng(7).standard_normal((16, 4, d)).astype(np.float32)
    config = AutoConfig(
        min_cosine=0.995, choices=("4", "8"), block_size=block_size, weights=QuantizeConfig(quant_format="matmulnbits")
    )
    report = auto(src, tmp_path / "q.onnx", [{"x": s} for s in samples], config, eval_data=[{"x": s} for s in held_out])
    assert report.met
    model = onnx.load(str(tmp_path / "q.onnx"))
    stored = {t.name: t for t in model.graph.initializer}
    nodes = {n.input[1]: n for n in model.graph.node if n.op_type == "MatMulNBits"}
    assert len(nodes) == len(report.layers) == 5
    widths = {layer.name: layer.width for layer in report.layers}
    assert set(widths.values()) == {"4", "8"}, widths
    for layer in report.layers:
        node = next(n for n in nodes.values() if n.name.startswith(f"fc{layer.name[1:]}"))
        attrs = {a.name: a.i for a in node.attribute}
        assert attrs["bits"] == int(layer.width) and attrs["block_size"] == block_size
        written = sum(len(stored[i].raw_data) for i in node.input[1:] if i)
        assert written == layer.bytes[layer.width], layer.name
    ref = ort.InferenceSession(str(src)).run(None, {"x": held_out.reshape(-1, d)})[0]
    got = ort.InferenceSession(str(tmp_path / "q.onnx")).run(None, {"x": held_out.reshape(-1, d)})[0]
    assert cosine(ref, got) >= 0.995


def test_matmulnbits_is_weight_only(tmp_path):
    src, samples = sensitive_mlp(tmp_path / "m.onnx")
    np.save(tmp_path / "data.npy", samples)
    common = [
        "-o",
        str(tmp_path / "q.onnx"),
        "--data",
        str(tmp_path / "data.npy"),
        "--min-cosine",
        "0.99",
        "--quant-format",
        "matmulnbits",
    ]
    result = runner.invoke(app, ["auto", str(src), *common, "--static"])
    assert result.exit_code == 2 and "--quant-format" in result.output
    result = runner.invoke(app, ["auto", str(src), *common, "--block-size", "0"])
    assert result.exit_code == 2 and "--block-size" in result.output
    model = onnx.load(str(src))
    for node in model.graph.node:
        if node.op_type == "MatMul":
            node.op_type, node.input[:] = "Gemm", list(node.input)  # the same product, not a MatMul
    onnx.save(model, str(tmp_path / "g.onnx"))
    assert not (tmp_path / "q.onnx").exists()
    # No MatMul weight at all: QDQ weights, as quantize writes them (not a usage error).
    result = runner.invoke(app, ["auto", str(tmp_path / "g.onnx"), *common, "--format", "json"])
    assert result.exit_code in (0, 1) and "--quant-format" not in result.output, result.output
    written = json.loads(result.stdout)["files_written"]
    assert written and "MatMulNBits" not in {n.op_type for n in onnx.load(written[0]).graph.node}


def test_gptq_sensitivity_measures_the_compensated_codes(tmp_path):
    """With rounding gptq the sensitivity pass measures what will be built: each weight's codes
    compensated on the Hessian of its cached consumer inputs. On those inputs its local error
    is below nearest rounding's at both widths (measured 0.10-0.55x), for the same bytes."""
    src, samples = sensitive_mlp(tmp_path / "m.onnx")
    model = load_model(src)
    feeds = [{"x": s} for s in samples]
    near = measure(model, width_configs(["4", "8"], QuantizeConfig(), 32), feeds, with_float=False)
    comp = measure(model, width_configs(["4", "8"], QuantizeConfig(rounding="gptq"), 32), feeds, with_float=False)
    for a, b in zip(near.layers, comp.layers, strict=True):
        assert a.bytes == b.bytes
        for width in ("4", "8"):
            assert b.errors[width] < 0.7 * a.errors[width], (a.name, width, a.errors, b.errors)


def test_rows_of_the_dynamic_batch_axis_are_samples_and_one_row_is_an_error_naming_the_data(tmp_path):
    """Issue 23.5: one [128, D] array for the input [N, D] is 128 samples (what a user means),
    not one run of batch 128 that leaves nothing to hold out; a single row is still 1 sample."""
    src, samples = sensitive_mlp(tmp_path / "m.onnx")
    np.save(tmp_path / "rows.npy", samples.reshape(-1, D))  # [128, D]
    common = ["auto", str(src), "-o", str(tmp_path / "q.onnx"), "--min-cosine", "0.99"]
    result = runner.invoke(app, [*common, "--data", str(tmp_path / "rows.npy"), "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["tuning_samples"], data["held_out_samples"]) == (96, 32) and data["met"]
    assert ort.InferenceSession(str(tmp_path / "q.onnx")).run(None, {"x": samples[0]})[0].shape == (4, D)
    np.save(tmp_path / "held.npy", samples[:5].reshape(-1, D))  # --eval-data is read the same way
    report = auto(src, tmp_path / "q.onnx", tmp_path / "rows.npy", AutoConfig(min_cosine=0.99), eval_data=tmp_path / "held.npy")
    assert (report.tuning_samples, report.held_out_samples) == (128, 20)
    (tmp_path / "q.onnx").unlink()
    np.save(tmp_path / "one.npy", samples[0, :1])  # [1, D]: one row
    result = runner.invoke(app, [*common, "--data", str(tmp_path / "one.npy")])
    text = " ".join(result.output.split())
    assert result.exit_code == 1 and "m.onnx: auto needs at least 2 samples" in text and "one.npy gives 1" in text, text
    assert "a sample is a row of the inputs' dynamic first axis" in text
    assert not (tmp_path / "q.onnx").exists()


def test_a_fixed_batch_model_takes_its_rows_as_today(tmp_path):
    """A model whose input has a fixed batch ([4, D]): a [32, D] array is 8 samples of that batch
    (samples.py's rule for a fixed batch, unchanged); a [4, D] one is a single sample."""
    src, samples = sensitive_mlp(tmp_path / "m.onnx")
    model = onnx.load(str(src))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 4
    onnx.save(model, str(tmp_path / "fixed.onnx"))
    np.save(tmp_path / "rows.npy", samples[:8].reshape(-1, D))  # [32, D]
    report = auto(tmp_path / "fixed.onnx", tmp_path / "q.onnx", tmp_path / "rows.npy", AutoConfig(min_cosine=0.99))
    assert (report.tuning_samples, report.held_out_samples) == (6, 2)
    np.save(tmp_path / "one.npy", samples[0])  # [4, D]: the fixed batch itself
    with pytest.raises(ConfigError, match="one.npy gives 1"):
        auto(tmp_path / "fixed.onnx", tmp_path / "q2.onnx", tmp_path / "one.npy", AutoConfig(min_cosine=0.99))


def test_the_report_says_the_format_and_the_rounding(tmp_path):
    src, samples = sensitive_mlp(tmp_path / "m.onnx")
    np.save(tmp_path / "data.npy", samples)
    common = [
        "auto",
        str(src),
        "-o",
        str(tmp_path / "q.onnx"),
        "--data",
        str(tmp_path / "data.npy"),
        "--min-cosine",
        "0.99",
        "--choices",
        "4,8",
    ]
    result = runner.invoke(app, [*common, "--quant-format", "matmulnbits", "--rounding", "gptq", "-q"])
    assert result.exit_code == 0 and "(matmulnbits, gptq codes for 5 of them)" in " ".join(result.output.split()), result.output
    result = runner.invoke(app, [*common])  # progress on stderr, in words
    assert "evaluating candidate 1 (3 at 4 bits, 2 at 8 bits)" in result.output, result.output
    data = json.loads(runner.invoke(app, [*common, "--format", "json"]).stdout)
    assert (data["quant_format"], data["rounding"]) == ("qdq", "nearest")


def test_matmulnbits_auto_weighs_a_gemm_weight_as_it_is_built(tmp_path):
    """A Gemm weight in a MatMulNBits model is QDQ: at 8 bits per channel (layer_bits in a 4-bit
    blocked model), not in blocks; auto measures and weighs each width as it builds it."""
    rng = np.random.default_rng(1)
    k, n = 200, 96
    inits = [numpy_helper.from_array((rng.standard_normal((k, n)) / 14).astype(np.float32), name) for name in ("w_mm", "w_gemm")]
    nodes = [
        helper.make_node("MatMul", ["x", "w_mm"], ["h"]),
        helper.make_node("Gemm", ["x", "w_gemm"], ["g"]),
        helper.make_node("Add", ["h", "g"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "m",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, n])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(tmp_path / "m.onnx"))
    samples = [{"x": rng.standard_normal((8, k)).astype(np.float32)} for _ in range(8)]
    config = AutoConfig(
        min_cosine=0.999999, choices=("4", "8"), weights=QuantizeConfig(quant_format="matmulnbits")
    )  # every weight at 8
    report = auto(tmp_path / "m.onnx", tmp_path / "q.onnx", samples, config)
    out = onnx.load(report.files_written[0])  # q.onnx, or q.closest.onnx if even 8 bits miss
    stored = {t.name: len(t.raw_data) for t in out.graph.initializer}
    written = {w: sum(size for name, size in stored.items() if name.startswith(w + "_")) for w in ("w_mm", "w_gemm")}
    assert {layer.name: layer.width for layer in report.layers} == {"w_mm": "8", "w_gemm": "8"}
    assert {layer.name: layer.bytes["8"] for layer in report.layers} == written
    dq = next(node for node in out.graph.node if node.op_type == "DequantizeLinear")
    assert {a.name: a.i for a in dq.attribute} == {"axis": 1}  # per channel, no block_size
