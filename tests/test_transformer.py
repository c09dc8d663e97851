"""A real transformer: all-MiniLM-L6-v2 assembled from its pretrained checkpoint (tests/minilm.py),
quantized, its sentence embeddings compared with the float model's on real sentences.

Bars (cosine of each sentence's quantized embedding to its float one, the worst of 32 sentences):
INT8 per channel >= 0.999 (measured 0.9993); 4-bit blocks of 32 >= 0.955 (measured 0.960), where
4-bit per channel collapses (0.896). The issue's bar for 4-bit blocks of 32 is 0.99: rounding to
nearest gives 0.973 over all sentences (blocks of 16: 0.981), --rounding gptq 0.988 (blocks of
16: 0.991, tested below), and the layers' errors add up, no single layer dominates (each alone
costs 0.0005-0.005); bench/minilm_b32.py measures what else was tried. Sizes include the
30522x384 word-embedding table, which the QDQ format stores at one code per byte (Gather has no
4-bit type), so 4-bit files are ~4.3x smaller, not 8x; --quant-format matmulnbits stores it as
packed UINT4 read by com.microsoft.GatherBlockQuantized (and the MatMul weights as
MatMulNBits): 6.17x smaller (measured; 4.35x before the tables were packed), the same cosine.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import minilm
import quantrs
from quantrs import QuantizeConfig

minilm.require()  # or skip: tests/requirements-models.txt installs the checkpoint


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    path = tmp_path_factory.mktemp("minilm") / "minilm.onnx"
    onnx.save(minilm.build_encoder(minilm.weights_dir()), str(path))
    return path


@pytest.fixture(scope="module")
def feeds():
    return minilm.tokenize(minilm.SENTENCES, minilm.weights_dir())


def embed(path, feeds) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return session.run(["sentence_embedding"], {k: v for k, v in feeds.items() if k in names})[0]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize(
    "label, config, min_cosine, min_compression",
    [
        ("int8 per channel", QuantizeConfig(per_channel=True), 0.999, 3.8),
        ("4-bit blocks of 32", QuantizeConfig(bits=4, block_size=32), 0.955, 4.2),
        ("4-bit blocks of 32, matmulnbits", QuantizeConfig(bits=4, block_size=32, quant_format="matmulnbits"), 0.955, 6.0),
    ],
)
def test_sentence_embeddings_survive_quantization(encoder, feeds, tmp_path, label, config, min_cosine, min_compression):
    report = quantrs.quantize(encoder, tmp_path / "q.onnx", config)
    ref, got = embed(encoder, feeds), embed(tmp_path / "q.onnx", feeds)
    cos = cosines(ref, got)
    assert cos.min() >= min_cosine, (label, cos.min())
    assert report.compression >= min_compression, (label, report.compression)
    # What the embeddings are for: every sentence's nearest neighbour is still its paraphrase.
    sims = got @ got.T
    np.fill_diagonal(sims, -1)
    partner = {a: b for a, b in minilm.PARAPHRASES} | {b: a for a, b in minilm.PARAPHRASES}
    assert all(int(np.argmax(sims[i])) == partner[i] for i in range(len(minilm.SENTENCES)))


def test_per_channel_int4_is_what_blocks_fix(encoder, feeds, tmp_path):
    """The reason for blocks, measured: 4-bit per channel (min/max) loses the embeddings."""
    quantrs.quantize(encoder, tmp_path / "pc.onnx", QuantizeConfig(bits=4, per_channel=True, range="minmax"))
    quantrs.quantize(encoder, tmp_path / "b.onnx", QuantizeConfig(bits=4, block_size=32))
    ref = embed(encoder, feeds)
    per_channel = cosines(ref, embed(tmp_path / "pc.onnx", feeds)).min()
    blocks = cosines(ref, embed(tmp_path / "b.onnx", feeds)).min()
    assert per_channel < 0.92 < 0.955 <= blocks, (per_channel, blocks)


@pytest.mark.slow
def test_gptq_lifts_4_bit_blocks_on_sentences_it_never_saw(encoder, feeds, tmp_path):
    """--rounding gptq with the Hessians of 32 sentences of other topics (TUNING_SENTENCES):
    4-bit blocks of 32 in MatMulNBits form, 6.17x smaller. Measured on SENTENCES: the worst
    sentence's cosine 0.981 (rounding to nearest: 0.960), 0.988 over all embeddings (0.973)."""
    tuning = minilm.tokenize(minilm.TUNING_SENTENCES, minilm.weights_dir())
    data = [{k: tuning[k] for k in ("input_ids", "attention_mask")}]
    config = QuantizeConfig(bits=4, block_size=32, quant_format="matmulnbits")
    near = quantrs.quantize(encoder, tmp_path / "near.onnx", config)
    report = quantrs.quantize(encoder, tmp_path / "gptq.onnx", dataclasses.replace(config, rounding="gptq"), data=data)
    assert report.compression >= 6.0 and abs(report.output_bytes - near.output_bytes) < 100  # metadata aside
    ref = embed(encoder, feeds)
    near_cos, gptq_cos = cosines(ref, embed(tmp_path / "near.onnx", feeds)), cosines(ref, embed(tmp_path / "gptq.onnx", feeds))
    assert gptq_cos.min() >= 0.978 and gptq_cos.min() > near_cos.min() + 0.015, (gptq_cos.min(), near_cos.min())
    compensated = [t.name for t in report.tensors if "codes by gptq" in t.reason]
    assert len(compensated) == 36  # every MatMul weight; the tables are looked up, not multiplied


@pytest.mark.slow
def test_4_bit_blocks_of_16_with_gptq_keep_cosine_099_at_5x_smaller(encoder, feeds, tmp_path):
    """Every weight 4-bit: blocks of 16, gptq (Hessians of TUNING_SENTENCES), MatMulNBits and
    GatherBlockQuantized. Measured: 5.07x smaller; on SENTENCES, unseen, cosine 0.991 over all
    embeddings, 0.985 for the worst sentence (nearest: 0.981 and 0.973)."""
    tuning = minilm.tokenize(minilm.TUNING_SENTENCES, minilm.weights_dir())
    data = [{k: tuning[k] for k in ("input_ids", "attention_mask")}]
    config = QuantizeConfig(bits=4, block_size=16, quant_format="matmulnbits", rounding="gptq")
    report = quantrs.quantize(encoder, tmp_path / "q.onnx", config, data=data)
    assert report.compression >= 5.0, report.compression
    ref, got = embed(encoder, feeds), embed(tmp_path / "q.onnx", feeds)
    overall = float(np.sum(ref * got) / (np.linalg.norm(ref) * np.linalg.norm(got)))
    assert overall >= 0.99 and cosines(ref, got).min() >= 0.98, (overall, cosines(ref, got).min())


@pytest.mark.slow
def test_auto_mixes_4_and_8_bit_matmulnbits_to_a_budget_at_5x_smaller(encoder, tmp_path):
    """`auto --quant-format matmulnbits --min-cosine 0.99`, tuned and verified on sentences of
    other topics (minilm.TUNING_SENTENCES, HELD_OUT_SENTENCES), measured on SENTENCES, unseen.
    Measured: 12 weights at 4 bits, 26 at 8, 5.28x smaller; on SENTENCES cosine 0.990 over all
    embeddings together (as auto measures its budget), 0.985 for the worst sentence. Uniform
    4-bit blocks give 0.960 for the worst sentence (test above)."""
    from quantrs.auto import AutoConfig, auto

    def samples(sentences):
        feeds = minilm.tokenize(sentences, minilm.weights_dir())
        return [{k: feeds[k] for k in ("input_ids", "attention_mask")}]

    config = AutoConfig(min_cosine=0.99, choices=("4", "8"), weights=QuantizeConfig(quant_format="matmulnbits"))
    report = auto(
        encoder, tmp_path / "q.onnx", samples(minilm.TUNING_SENTENCES), config, eval_data=samples(minilm.HELD_OUT_SENTENCES)
    )
    assert report.met
    assert report.input_bytes / report.output_bytes >= 5.0, report.output_bytes
    widths = {layer.name: layer.width for layer in report.layers}
    assert set(widths.values()) == {"4", "8"}, widths
    model = onnx.load(str(tmp_path / "q.onnx"))
    stored = {t.name: t for t in model.graph.initializer}
    lookup = next(n for n in model.graph.node if n.op_type == "GatherBlockQuantized" and "word_embeddings" in n.input[0])
    table = next(layer for layer in report.layers if layer.name == "embeddings.word_embeddings.weight")
    written = sum(len(stored[i].raw_data) for i in (lookup.input[0], *lookup.input[2:]) if i)  # as stored: 4-bit packed
    assert written == table.bytes[table.width]  # the bytes auto weighed are the bytes written
    feeds = minilm.tokenize(minilm.SENTENCES, minilm.weights_dir())
    ref, got = embed(encoder, feeds), embed(tmp_path / "q.onnx", feeds)
    overall = float(np.sum(ref * got) / (np.linalg.norm(ref) * np.linalg.norm(got)))
    assert overall >= 0.985 and cosines(ref, got).min() >= 0.975, (overall, cosines(ref, got).min())
    sims = got @ got.T
    np.fill_diagonal(sims, -1)
    partner = {a: b for a, b in minilm.PARAPHRASES} | {b: a for a, b in minilm.PARAPHRASES}
    assert all(int(np.argmax(sims[i])) == partner[i] for i in range(len(minilm.SENTENCES)))


@pytest.mark.slow
def test_auto_with_gptq_reaches_the_budget_at_a_smaller_size(encoder, tmp_path):
    """The same search with --rounding gptq (the sensitivities and every candidate's codes
    compensated on the tuning sentences). Measured: 33 weights at 4 bits, 5 at 8, 6.00x smaller
    (15.0 MB; 5.28x without gptq); held-out cosine 0.991; on SENTENCES, unseen, 0.990 over all
    embeddings and 0.984 for the worst sentence."""
    from quantrs.auto import AutoConfig, auto

    def samples(sentences):
        feeds = minilm.tokenize(sentences, minilm.weights_dir())
        return [{k: feeds[k] for k in ("input_ids", "attention_mask")}]

    weights = QuantizeConfig(quant_format="matmulnbits", rounding="gptq")
    config = AutoConfig(min_cosine=0.99, choices=("4", "8"), weights=weights)
    report = auto(
        encoder, tmp_path / "q.onnx", samples(minilm.TUNING_SENTENCES), config, eval_data=samples(minilm.HELD_OUT_SENTENCES)
    )
    assert report.met and report.input_bytes / report.output_bytes >= 5.7, report.output_bytes
    feeds = minilm.tokenize(minilm.SENTENCES, minilm.weights_dir())
    ref, got = embed(encoder, feeds), embed(tmp_path / "q.onnx", feeds)
    overall = float(np.sum(ref * got) / (np.linalg.norm(ref) * np.linalg.norm(got)))
    assert overall >= 0.985 and cosines(ref, got).min() >= 0.98, (overall, cosines(ref, got).min())
