"""Static INT8 on a real BERT-style encoder: all-MiniLM-L6-v2 (tests/minilm.py), calibrated on
48 sentences of its own (CALIBRATION_SENTENCES, in batches of 4 with padding), evaluated on the
32 sentences of minilm.SENTENCES, which it never saw.

Default config (minmax, UINT8 asymmetric activations, INT8 per-channel weights): min cosine
to the float embeddings 0.9938 over the 32 sentences (mean 0.9958), 0.9923 on ~80-token
paragraphs; every sentence's nearest neighbour is still its paraphrase.

Which activations get Q/DQ (quantrs.activations.ort_cpu_selection), measured on this model (min
cosine over the 32 sentences; weight-only INT8 alone gives 0.9993):

    everything QUANTIZED_OPS reads and writes (the former policy)         0.888
    MatMul inputs + MatMul outputs (QLinearMatMul)                        0.924
    weighted MatMul inputs + residual Adds                                0.809
    all MatMul inputs (weighted, Q @ K^T, P @ V)                          0.989
    weighted MatMul inputs only                                           0.990
    all MatMul inputs but the GELU's and the probabilities' (default)     0.994
    the default with INT8 symmetric activations                           0.989

The GELU outputs (the FFN down projections' input) are the worst activations: one channel
reaches 20-25 while the bulk lies in [-0.17, 1], 20-22 dB SQNR at 8 bits per tensor in the
first layers; softmax probabilities lose every weight under 1/510 (long inputs). Both stay
float by default; the MatMuls reading them keep INT8 weights.

Speed (onnxruntime CPU, default optimizations, same threads): the static model runs faster
than float because onnxruntime turns the Q/K/V, output and FFN-up projections (and Q @ K^T)
into MatMulIntegerToFloat; timings are kept out of the tests (never timed assertions): what is
asserted is the structure that makes it faster, in onnxruntime's optimized graph.
"""

from __future__ import annotations


import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import minilm
import quantrs
from quantrs import CalibrationConfig
from quantrs.activations import choose_activations

minilm.require()  # or skip: tests/requirements-models.txt installs the checkpoint

# Calibration text: other topics than minilm.SENTENCES, short and long, questions, exclamations.
CALIBRATION_SENTENCES = [
    "The museum opens at nine in the morning and closes at six.",
    "He forgot his umbrella on the bus again.",
    "Quantum computers use qubits that can be in superposition.",
    "Please remember to water the plants while I am away.",
    "The stock market fell sharply after the earnings report.",
    "A hummingbird can flap its wings more than fifty times per second.",
    "Our team meeting has been moved to Thursday at 3 pm.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Volcanic eruptions can change the climate for several years.",
    "I can't believe how expensive concert tickets have become!",
    "The library is extending its opening hours during exam season.",
    "Mount Everest is the highest mountain above sea level.",
    "She learned to play the violin when she was seven years old.",
    "Traffic on the highway was backed up for miles after the accident.",
    "The software engineer fixed the memory leak in the server.",
    "Bees are essential for pollinating many of the crops we eat.",
    "Why does the moon look bigger near the horizon?",
    "The hotel room had a beautiful view of the harbour.",
    "Regular exercise improves both physical and mental health.",
    "The police are investigating a burglary on Elm Street.",
    "He painted the fence white over the weekend.",
    "The spacecraft entered orbit around Mars after a seven-month journey.",
    "Children under twelve travel free on weekends.",
    "The new smartphone has a larger screen and a better camera.",
    "Photosynthesis converts sunlight, water and carbon dioxide into sugar.",
    "They adopted a puppy from the local animal shelter.",
    "The parliament passed a law banning single-use plastic bags.",
    "Don't forget to back up your files before installing the update.",
    "Coffee prices rose after a poor harvest in Brazil.",
    "The novel tells the story of a family across three generations.",
    "Earthquakes are measured using the moment magnitude scale.",
    "The kids built a sandcastle on the beach.",
    "Our internet connection keeps dropping every evening.",
    "The marathon runners crossed the finish line exhausted but happy.",
    "Vaccines train the immune system to recognize a virus.",
    "The bakery on the corner sells the best croissants in town.",
    "Wind turbines generate electricity without burning fuel.",
    "I would like to book a table for four at eight o'clock, please.",
    "The ancient Egyptians built the pyramids as tombs for pharaohs.",
    "A sudden storm forced the sailors back to the harbour.",
    "The company announced it will hire two hundred new employees.",
    "Learning a second language takes patience and daily practice.",
    "The professor explained the theory of relativity with simple examples.",
    "Ok.",
    "Thanks a lot!",
    "The database query timed out after thirty seconds because the index was missing on the join column.",
    "When the lights went out, everyone in the theatre gasped, and then the orchestra kept playing in the dark.",
    "Honey never spoils if it is stored in a sealed container.",
]
BATCH = 4
HIDDEN = minilm.HIDDEN


def tokenized(sentences: list[str]) -> dict[str, np.ndarray]:
    feeds = minilm.tokenize(sentences, minilm.weights_dir())
    return {k: feeds[k] for k in ("input_ids", "attention_mask")}  # the encoder makes its token types


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("minilm_static")
    src, dst = folder / "minilm.onnx", folder / "minilm_static.onnx"
    onnx.save(minilm.build_encoder(minilm.weights_dir()), str(src))
    samples = [tokenized(CALIBRATION_SENTENCES[i : i + BATCH]) for i in range(0, len(CALIBRATION_SENTENCES), BATCH)]
    report = quantrs.calibrate(src, dst, samples, CalibrationConfig())
    return src, dst, report


def embed(path, feeds) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["sentence_embedding"], feeds)[0]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_static_int8_keeps_the_sentence_embeddings(models):
    """Measured: min cosine 0.9938, mean 0.9958 (the issue's bar: 0.99)."""
    src, dst, report = models
    feeds = tokenized(minilm.SENTENCES)
    ref, got = embed(src, feeds), embed(dst, feeds)
    cos = cosines(ref, got)
    assert cos.min() >= 0.99, cos.min()
    sims = got @ got.T
    np.fill_diagonal(sims, -1)
    partner = {a: b for a, b in minilm.PARAPHRASES} | {b: a for a, b in minilm.PARAPHRASES}
    assert all(int(np.argmax(sims[i])) == partner[i] for i in range(len(minilm.SENTENCES)))
    assert report.samples == len(CALIBRATION_SENTENCES) // BATCH and report.left_float == []  # no mask is a candidate
    assert len(report.quantized_weights) >= 6 * 6  # every Linear of the 6 layers


def test_the_activations_quantized_are_the_matmul_inputs_but_gelu_and_probabilities(models):
    """What the policy picks, read from the graph: the LayerNorm outputs the projections read,
    the attention context, Q and K^T; never a residual/bias Add, a Softmax, the GELU, a Gather.
    In the written model, the residual Adds, the FFN down projections and P @ V read float."""
    src, dst, report = models
    graph = onnx.load(str(src), load_external_data=False).graph
    producers = {o: n for n in graph.node for o in n.output}
    kinds = sorted({producers[a.name].op_type for a in report.activations})
    assert kinds == ["LayerNormalization", "Reshape", "Transpose"], kinds
    layers = minilm.LAYERS
    # embeddings LN + per layer the attention LN + every output LN but the last (pooling reads it),
    # the context, and Q and K^T.
    assert len(report.activations) == (1 + layers + layers - 1) + layers + 2 * layers

    model = onnx.load(str(dst), load_external_data=False)
    made = {o: n for n in model.graph.node for o in n.output}

    def dequantized(name: str) -> bool:
        return name in made and made[name].op_type == "DequantizeLinear"

    matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
    integer = [n for n in matmuls if all(dequantized(i) for i in n.input)]
    float_input = [n for n in matmuls if not dequantized(n.input[0])]
    assert len(integer) == 5 * layers + layers  # Q, K, V, output, FFN up; Q @ K^T
    assert len(float_input) == 2 * layers  # FFN down (reads the GELU), P @ V (reads probabilities)
    assert all(made[n.input[0]].op_type in ("Mul", "Softmax") for n in float_input)
    adds = [n for n in model.graph.node if n.op_type == "Add"]
    assert not any(dequantized(i) for n in adds for i in n.input)


def test_onnxruntime_runs_the_projections_in_integers(models, tmp_path):
    """Why the static model is faster than float (timings: tests leave them out): in
    onnxruntime's optimized graph (CPU, default optimizations) every projection the policy
    quantizes is a MatMulIntegerToFloat (u8 activations x s8 weights), and no float MatMul,
    FusedMatMul or Gemm reads a big weight, except the FFN down projections the policy keeps
    float, which recent onnxruntime (1.32 here) fuses with their INT8 weights into MatMulNBits."""
    _, dst, _ = models
    optimized = tmp_path / "optimized.onnx"
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.optimized_model_filepath = str(optimized)
    ort.InferenceSession(str(dst), options, providers=["CPUExecutionProvider"])
    graph = onnx.load(str(optimized), load_external_data=False).graph
    ops = [n.op_type for n in graph.node]
    layers = minilm.LAYERS
    assert ops.count("MatMulIntegerToFloat") == 5 * layers + layers  # the projections; Q @ K^T

    sizes = {t.name: int(np.prod(t.dims)) for t in graph.initializer}
    made = {o: n for n in graph.node for o in n.output}

    def weight(name: str) -> bool:  # an initializer, or one read through a DequantizeLinear
        if name in made and made[name].op_type == "DequantizeLinear":
            name = made[name].input[0]
        return sizes.get(name, 0) >= HIDDEN * HIDDEN

    matmuls = [n for n in graph.node if n.op_type in ("MatMul", "FusedMatMul", "Gemm")]
    float_on_weights = [n for n in matmuls if any(weight(i) for i in n.input)]
    assert all(made[n.input[0]].op_type in ("BiasGelu", "Gelu", "Mul") for n in float_on_weights)
    assert len(float_on_weights) + ops.count("MatMulNBits") == layers  # the FFN down projections


def _mlp(activation: str) -> onnx.ModelProto:
    """x -> MatMul -> activation -> MatMul -> y, the activation written as exporters do."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((8, 8)) / 3).astype(np.float32), w) for w in ("w1", "w2")]
    inits.append(numpy_helper.from_array(np.array(0.5, np.float32), "half"))
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"])]
    if activation == "silu":
        nodes += [helper.make_node("Sigmoid", ["h"], ["s"]), helper.make_node("Mul", ["h", "s"], ["a"])]
    elif activation == "tanh_gelu":  # 0.5 * h * (1 + tanh(h)) (constants simplified)
        nodes += [
            helper.make_node("Tanh", ["h"], ["t"]), helper.make_node("Add", ["t", "half"], ["t1"]),
            helper.make_node("Mul", ["h", "t1"], ["m"]), helper.make_node("Mul", ["m", "half"], ["a"]),
        ]  # fmt: skip
    else:  # Relu, Tanh: bounded below or on both sides, quantized
        nodes += [helper.make_node(activation, ["h"], ["a"])]
    nodes.append(helper.make_node("MatMul", ["a", "w2"], ["y"]))
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("activation, quantized", [("silu", False), ("tanh_gelu", False), ("Relu", True), ("Tanh", True)])
def test_gated_activations_are_recognised_by_structure(activation, quantized):
    chosen = choose_activations(_mlp(activation).graph, set(), "ort-cpu")
    assert ("a" in chosen) == quantized and "x" in chosen and "h" not in chosen
