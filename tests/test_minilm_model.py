"""The all-MiniLM-L6-v2 encoder that tests/minilm.py assembles from the pretrained checkpoint is
right: onnxruntime's output matches an independent numpy forward pass on the same weights, the
padding mask works, and the embeddings mean what they should (paraphrases close, unrelated
sentences far apart). No torch: the reference below is numpy, written apart from the graph."""

from __future__ import annotations

import hashlib
import json
import math
import struct
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import minilm

WEIGHTS = minilm.require()  # or skip: tests/requirements-models.txt installs the checkpoint


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    """The float encoder, built once for the module, with last_hidden_state as a second output."""
    path = tmp_path_factory.mktemp("minilm") / "all-MiniLM-L6-v2.onnx"
    onnx.save(minilm.build_encoder(WEIGHTS, last_hidden_state=True), str(path))
    return path


@pytest.fixture(scope="module")
def session(model_path) -> ort.InferenceSession:
    return ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def batch() -> dict[str, np.ndarray]:
    return minilm.tokenize(minilm.SENTENCES, WEIGHTS)


@pytest.fixture(scope="module")
def outputs(session, batch) -> tuple[np.ndarray, np.ndarray]:
    embeddings, hidden = session.run(None, {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})
    return embeddings, hidden


# --- An independent numpy forward pass (BertModel + mean pooling + normalize), float64. ---


def read_checkpoint(path: Path) -> dict[str, np.ndarray]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n].decode())
    types = {"F32": "<f4", "I64": "<i8"}
    return {
        k: np.frombuffer(raw, types[v["dtype"]], math.prod(v["shape"]), 8 + n + v["data_offsets"][0]).reshape(v["shape"])
        for k, v in header.items()
        if k != "__metadata__"
    }


def erf(x: np.ndarray) -> np.ndarray:
    """Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): numpy has no erf, math.erf is scalar."""
    t = 1.0 / (1.0 + 0.3275911 * np.abs(x))
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return np.sign(x) * (1.0 - poly * np.exp(-x * x))


def reference(ids: np.ndarray, mask: np.ndarray, token_types: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = {k: v.astype(np.float64) for k, v in read_checkpoint(WEIGHTS / "model.safetensors").items()}
    config = json.loads((WEIGHTS / "config.json").read_text())
    heads, eps = config["num_attention_heads"], config["layer_norm_eps"]

    def norm(x, p):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * w[p + ".weight"] + w[p + ".bias"]

    def dense(x, p):  # torch.nn.Linear: weight [out, in]
        return x @ w[p + ".weight"].T + w[p + ".bias"]

    b, s = ids.shape
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:s]
    x = x + w["embeddings.token_type_embeddings.weight"][token_types]
    x = norm(x, "embeddings.LayerNorm")
    bias = np.where(mask[:, None, None, :] > 0, 0.0, -1e30)  # padding keys get no weight
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        split = lambda t: t.reshape(b, s, heads, -1).transpose(0, 2, 1, 3)  # noqa: E731
        q, k, v = (split(dense(x, p + "attention.self." + n)) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1]) + bias
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(b, s, -1)
        x = norm(dense(context, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
        h = dense(x, p + "intermediate.dense")
        h = 0.5 * h * (1.0 + erf(h / np.sqrt(2.0)))
        x = norm(dense(h, p + "output.dense") + x, p + "output.LayerNorm")
    m = mask[:, :, None].astype(np.float64)
    pooled = (x * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12), x


# --- Tests ---


def test_checkpoint_is_the_upstream_one():
    assert hashlib.sha256((WEIGHTS / "model.safetensors").read_bytes()).hexdigest() == minilm.CHECKPOINT_SHA256
    assert hashlib.sha256((WEIGHTS / "tokenizer.json").read_bytes()).hexdigest() == minilm.TOKENIZER_SHA256


def test_loader_reads_every_tensor_as_the_reference_does():
    ours, theirs = minilm.load_safetensors(WEIGHTS / "model.safetensors"), read_checkpoint(WEIGHTS / "model.safetensors")
    assert ours.keys() == theirs.keys() and len(ours) == 6 + 16 * minilm.LAYERS + 2  # + position_ids, pooler
    for k in ours:
        assert ours[k].dtype == theirs[k].dtype and np.array_equal(ours[k], theirs[k]), k


def test_tokenizer():
    enc = minilm.tokenize(["Hello world!", "hello"], WEIGHTS)
    assert enc["input_ids"].tolist() == [[101, 7592, 2088, 999, 102], [101, 7592, 102, 0, 0]]  # [CLS] hello world ! [SEP]
    assert enc["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    long = minilm.tokenize(["word " * 300], WEIGHTS)["input_ids"]
    assert long.shape == (1, minilm.MAX_LENGTH) and long[0, -1] == 102
    assert minilm.tokenize(["a"], WEIGHTS, pad_to_max=True)["input_ids"].shape == (1, minilm.MAX_LENGTH)


def test_graph(model_path):
    onnx.checker.check_model(str(model_path), full_check=True)
    model = onnx.load(str(model_path))
    assert model.opset_import[0].version == 17
    assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in model.graph.output] == ["sentence_embedding", "last_hidden_state"]
    inits = {t.name: tuple(t.dims) for t in model.graph.initializer}
    assert inits["encoder.layer.0.attention.self.query.weight"] == (384, 384)
    assert inits["encoder.layer.5.intermediate.dense.weight"] == (384, 1536)  # [in, out]: transposed
    assert inits["encoder.layer.5.output.dense.weight"] == (1536, 384)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("MatMul") == 6 * 8 and ops.count("LayerNormalization") == 13 and ops.count("Erf") == 6
    params = sum(math.prod(d) for n, d in inits.items() if not n.startswith("const."))
    assert 22_500_000 < params < 23_000_000


def test_erf_approximation():
    x = np.linspace(-6, 6, 2001)
    assert np.abs(erf(x) - np.array([math.erf(v) for v in x])).max() < 2e-7


def test_matches_numpy_reference(outputs, batch):
    embeddings, hidden = outputs
    ref_embeddings, ref_hidden = reference(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    valid = batch["attention_mask"].astype(bool)
    assert np.abs(embeddings - ref_embeddings).max() < 1e-4
    assert np.abs(hidden[valid] - ref_hidden[valid]).max() < 1e-4


def test_padding_does_not_change_embeddings(session, outputs):
    """Padded to 128, and one sentence at a time (no padding at all): the same embeddings."""
    embeddings = outputs[0]
    padded = minilm.tokenize(minilm.SENTENCES, WEIGHTS, pad_to_max=True)
    assert padded["input_ids"].shape == (len(minilm.SENTENCES), minilm.MAX_LENGTH)
    long, _ = session.run(None, {"input_ids": padded["input_ids"], "attention_mask": padded["attention_mask"]})
    assert np.abs(long - embeddings).max() < 1e-5
    for i in (0, 7, 31):
        one = minilm.tokenize([minilm.SENTENCES[i]], WEIGHTS)
        assert one["attention_mask"].all()
        alone, _ = session.run(None, {"input_ids": one["input_ids"], "attention_mask": one["attention_mask"]})
        assert np.abs(alone[0] - embeddings[i]).max() < 1e-5


def test_token_type_ids_input(model_path, batch, outputs):
    model = minilm.build_encoder(WEIGHTS, token_type_ids=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (embeddings,) = sess.run(None, {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
    assert np.abs(embeddings - outputs[0]).max() < 1e-6


def test_embeddings_are_unit_norm(outputs):
    assert outputs[0].shape == (len(minilm.SENTENCES), 384) and outputs[0].dtype == np.float32
    assert np.abs(np.linalg.norm(outputs[0], axis=1) - 1).max() < 1e-5


def test_paraphrases_are_closer_than_unrelated_sentences(outputs):
    # Measured: paraphrases 0.819 on average (min 0.665), unrelated pairs 0.040 (max 0.258);
    # every sentence's nearest neighbour is its paraphrase.
    cos = outputs[0].astype(np.float64) @ outputs[0].T.astype(np.float64)
    para = np.array([cos[i, j] for i, j in minilm.PARAPHRASES])
    pairs = {tuple(p) for p in minilm.PARAPHRASES}
    n = len(minilm.SENTENCES)
    unrelated = np.array([cos[i, j] for i in range(n) for j in range(i + 1, n) if (i, j) not in pairs])
    assert para.mean() > unrelated.mean() + 0.6
    assert para.min() > unrelated.max() + 0.2
    np.fill_diagonal(cos, -np.inf)
    partner = {i: j for p in minilm.PARAPHRASES for i, j in (p, p[::-1])}
    assert all(cos[i].argmax() == partner[i] for i in range(n))
