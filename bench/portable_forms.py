"""What the portable QDQ forms of 4-bit blocks (issue 23.6) cost in onnxruntime, beside the
forms they replace and the alternatives considered. Each form is built from quantrs' output (the
same codes, scales and zero points; the outputs are the same), then run in onnxruntime:

Weights whose reduction axis is not a multiple of the block (OpenVINO takes whole blocks only):
- "short last block": the form before: DequantizeLinear of [K, N] codes (ONNX allows the
  short block; OpenVINO refuses it);
- "padded, input padded": codes padded to whole blocks, the MatMul reading them with its input
  padded with zeros (onnxruntime still fuses DequantizeLinear -> MatMul);
- "padded, weight sliced": the padded weight cut back by a Slice before the MatMul (onnxruntime
  then dequantizes the whole weight at every run).
quantrs writes the first for weights of 2^16 values or more, the second for smaller ones
(qdq.PAD_INPUTS_MIN_VALUES): "(now)" marks the one it wrote.

Embedding tables (OpenVINO's blocked DequantizeLinear needs static shapes):
- "gather, blocked DQ": the form before: Gather codes, scales, zero points -> blocked DQ;
- "gather, DQ per block": quantrs now: the gathered codes as [rows * blocks, block], one
  scale each, a per-axis DequantizeLinear, reshaped back;
- "DQ table, then gather": the whole table dequantized at every run, then Gather.

Per form: onnxruntime's CPU time per run (one intra-op thread, so the figure is this thread's
CPU time: robust on a shared machine; the forms of a model take turns in each round, the median
of the rounds' medians); in a process of its own, the RSS the session adds, what its runs add
on top, and the peak; and whether OpenVINO (if installed) compiles it.

    python bench/portable_forms.py     # a synthetic FFN (K = 1000), magika, MiniLM's table alone, MiniLM
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


# --- forms -------------------------------------------------------------------------------------


def _index(model: onnx.ModelProto):
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    return producer, consumers


def _ints(model: onnx.ModelProto, name: str) -> list[int]:
    producer, _ = _index(model)
    node = producer[name]
    return [int(v) for v in numpy_helper.to_array(node.attribute[0].t).reshape(-1)]


def _rebuild(model: onnx.ModelProto, drop: set[str], add: list[onnx.NodeProto]) -> onnx.ModelProto:
    """`model` without the nodes whose first output is in `drop` (or "Slice:" + it, for a Slice
    whose output another node takes over), with `add`, in topological order."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    kept = [
        n for n in model.graph.node if n.output[0] not in drop and not (n.op_type == "Slice" and "Slice:" + n.output[0] in drop)
    ]
    ordered, known = [], {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer} | {""}
    pending = add + kept
    while pending:  # topological order
        rest = []
        for n in pending:
            if all(i in known for i in n.input):
                ordered.append(n)
                known.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise RuntimeError(f"cannot order {[(n.op_type, [i for i in n.input if i not in known]) for n in rest]}")
        pending = rest
    del out.graph.node[:]
    out.graph.node.extend(ordered)
    return out


def padded_weights(model: onnx.ModelProto):
    """(DequantizeLinear of padded codes, weight name, its length K, Pad-reading nodes, Slice or None)."""
    producer, consumers = _index(model)
    for dq in model.graph.node:
        if dq.op_type != "DequantizeLinear" or not any(a.name == "block_size" for a in dq.attribute):
            continue
        readers = consumers.get(dq.output[0], [])
        slices = [r for r in readers if r.op_type == "Slice"]
        direct = [
            r for r in readers if r.op_type in ("MatMul", "Gemm") and getattr(producer.get(r.input[0]), "op_type", "") == "Pad"
        ]
        if not slices and not direct:
            continue  # not padded: its output is the weight itself
        codes = next(t for t in model.graph.initializer if t.name == dq.input[0])
        axis = next(a.i for a in dq.attribute if a.name == "axis")
        if slices:
            name, length = slices[0].output[0], _ints(model, slices[0].input[2])[0]
        else:
            pad = producer[direct[0].input[0]]
            name, length = codes.name.removesuffix("_quantized"), codes.dims[axis] - _ints(model, pad.input[1])[1]
        yield dq, codes, axis, name, length, direct, (slices[0] if slices else None)


def short_last_block(model: onnx.ModelProto) -> onnx.ModelProto:
    model = _copy(model)
    drop, add = set(), []
    producer, _ = _index(model)
    for dq, codes, axis, name, length, direct, cut in list(padded_weights(model)):
        values = numpy_helper.to_array(codes)
        codes.CopyFrom(_tensor(np.take(values, range(length), axis=axis), codes.name, codes.data_type))
        dq.output[0] = name
        for reader in direct:
            pad = producer[reader.input[0]]
            reader.input[0], reader.input[1] = pad.input[0], name
            drop.update(i for i in (pad.output[0], pad.input[1], pad.input[3]))  # (its constants too)
        if cut is not None:
            drop.update(["Slice:" + cut.output[0], *cut.input[1:]])
    return _rebuild(model, drop, add)


def weight_sliced(model: onnx.ModelProto) -> onnx.ModelProto:
    model = _copy(model)
    drop, add = set(), []
    producer, _ = _index(model)
    for dq, _codes, axis, name, length, direct, cut in list(padded_weights(model)):
        if cut is None:
            consts = [
                helper.make_node("Constant", [], [f"{name}_{k}"], value=numpy_helper.from_array(np.array([v], np.int64)))
                for k, v in (("s", 0), ("e", length), ("a", axis))
            ]
            add += consts + [helper.make_node("Slice", [dq.output[0], *(c.output[0] for c in consts)], [name])]
        for reader in direct:
            pad = producer[reader.input[0]]
            reader.input[0], reader.input[1] = pad.input[0], name
            drop.update(i for i in (pad.output[0], pad.input[1], pad.input[3]))
    return _rebuild(model, drop, add)


def input_padded(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every MatMul/Gemm that reads a padded weight sliced back reads it padded instead, its
    input padded with zeros (what quantrs writes for weights of 2^16 values or more)."""
    model = _copy(model)
    drop, add = set(), []
    _, consumers = _index(model)
    for dq, _codes, axis, name, length, _direct, cut in list(padded_weights(model)):
        if cut is None:
            continue
        readers = consumers.get(name, [])
        for k, reader in enumerate(r for r in readers if r.op_type in ("MatMul", "Gemm") and r.input[1] == name):
            pads, axes, widened = f"{name}_pads{k}", f"{name}_axes{k}", f"{name}_input{k}"
            a_axis = 0 if any(a.name == "transA" and a.i for a in reader.attribute) else -1
            add += [
                helper.make_node(
                    "Constant",
                    [],
                    [pads],
                    value=numpy_helper.from_array(np.array([0, dq_length(model, dq, axis) - length], np.int64)),
                ),
                helper.make_node("Constant", [], [axes], value=numpy_helper.from_array(np.array([a_axis], np.int64))),
                helper.make_node("Pad", [reader.input[0], pads, "", axes], [widened]),
            ]
            reader.input[0], reader.input[1] = widened, dq.output[0]
        if all(r.op_type in ("MatMul", "Gemm") and r.input[1] == dq.output[0] for r in readers):
            drop.update([cut.output[0], *cut.input[1:]])
    return _rebuild(model, drop, add)


def dq_length(model: onnx.ModelProto, dq: onnx.NodeProto, axis: int) -> int:
    return next(t.dims[axis] for t in model.graph.initializer if t.name == dq.input[0])


def block_lookups(model: onnx.ModelProto):
    """quantrs' per-block lookups: (nodes, codes, scale, zero point or None, ids, result, block)."""
    producer, consumers = _index(model)
    inits = {t.name: t for t in model.graph.initializer}
    for dq in model.graph.node:
        if dq.op_type != "DequantizeLinear" or any(a.name == "block_size" for a in dq.attribute):
            continue
        reshape = producer.get(dq.input[0])
        gather = producer.get(reshape.input[0]) if reshape is not None and reshape.op_type == "Reshape" else None
        if gather is None or gather.op_type != "Gather" or gather.input[0] not in inits:
            continue
        nodes = [gather, reshape, producer[reshape.input[1]], dq]
        params = []
        for flat in dq.input[1:]:
            r = producer[flat]
            g = producer[r.input[0]]
            nodes += [r, g, producer[r.input[1]]]
            params.append(g.input[0])
        back = consumers[dq.output[0]][0]  # Reshape(deq, Shape(rows))
        nodes += [back, producer[back.input[1]]]
        result = back.output[0]
        after = consumers.get(result, [])
        if len(after) == 1 and after[0].op_type == "Slice":
            nodes += [after[0], *(producer[i] for i in after[0].input[1:])]
            result = after[0].output[0]
        codes = inits[gather.input[0]]
        block = codes.dims[1] // inits[params[0]].dims[1]
        yield nodes, gather.input[0], params[0], (params[1] if len(params) > 1 else None), gather.input[1], result, block


def blocked_lookup(model: onnx.ModelProto) -> onnx.ModelProto:
    model = _copy(model)
    drop, add = set(), []
    for nodes, codes, scale, zero_point, ids, result, block in list(block_lookups(model)):
        drop.update(n.output[0] for n in nodes)
        gathered = [f"{result}_{part}_rows" for part in ("codes", "scales", "zero_points")][: 3 if zero_point else 2]
        add += [helper.make_node("Gather", [src, ids], [dst], axis=0) for src, dst in zip((codes, scale, zero_point), gathered)]
        add.append(helper.make_node("DequantizeLinear", gathered, [result], axis=-1, block_size=block))
        _unpad_table(model, codes, scale, zero_point, block)
    return _rebuild(model, drop, add)


def table_first(model: onnx.ModelProto) -> onnx.ModelProto:
    model = _copy(model)
    drop, add = set(), []
    for nodes, codes, scale, zero_point, ids, result, block in list(block_lookups(model)):
        drop.update(n.output[0] for n in nodes)
        table = f"{codes}_dequantized_table"
        add.append(
            helper.make_node(
                "DequantizeLinear", [codes, scale] + ([zero_point] if zero_point else []), [table], axis=1, block_size=block
            )
        )
        add.append(helper.make_node("Gather", [table, ids], [result], axis=0))
        _unpad_table(model, codes, scale, zero_point, block)
    return _rebuild(model, drop, add)


def _unpad_table(model, codes, scale, zero_point, block) -> None:
    """(The tables benchmarked here have rows of whole blocks: nothing to cut.)"""
    inits = {t.name: t for t in model.graph.initializer}
    assert inits[codes].dims[1] == inits[scale].dims[1] * block


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _tensor(values: np.ndarray, name: str, data_type: int) -> onnx.TensorProto:
    if data_type in (TensorProto.INT4, TensorProto.UINT4):
        return helper.make_tensor(name, data_type, list(values.shape), values.astype(np.int64).reshape(-1).tolist())
    return numpy_helper.from_array(np.ascontiguousarray(values), name)


# --- models --------------------------------------------------------------------------------------


def ffn(k: int = 1000, hidden: int = 4096) -> tuple[onnx.ModelProto, dict[str, dict[str, np.ndarray]]]:
    """x [B, k] -> MatMul [k, hidden] + b -> Gelu (Erf) -> MatMul [hidden, k] + b -> + x: a
    transformer FFN whose model width (k) is not a multiple of 32."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array((rng.standard_normal((k, hidden)) / np.sqrt(k)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal(hidden).astype(np.float32) * 0.1, "b1"),
        numpy_helper.from_array((rng.standard_normal((hidden, k)) / np.sqrt(hidden)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.standard_normal(k).astype(np.float32) * 0.1, "b2"),
        numpy_helper.from_array(np.array(np.sqrt(0.5), np.float32), "c"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Mul", ["hb", "c"], ["hc"]),
        helper.make_node("Erf", ["hc"], ["he"]),
        helper.make_node("Add", ["he", "one"], ["h1"]),
        helper.make_node("Mul", ["hb", "h1"], ["hg"]),
        helper.make_node("Mul", ["hg", "half"], ["g"]),
        helper.make_node("MatMul", ["g", "w2"], ["o"]),
        helper.make_node("Add", ["o", "b2"], ["ob"]),
        helper.make_node("Add", ["ob", "x"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "ffn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", k])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    feeds = {f"batch {b}": {"x": rng.standard_normal((b, k)).astype(np.float32)} for b in (1, 32)}
    return model, feeds


def magika() -> tuple[onnx.ModelProto, dict[str, dict[str, np.ndarray]]] | None:
    from model_packages import package_dir

    folder = package_dir("magika")
    found = sorted(folder.glob("models/*/model.onnx")) if folder is not None else []
    if not found:
        return None
    rng = np.random.default_rng(0)
    return onnx.load(str(found[-1])), {f"batch {b}": {"bytes": rng.integers(0, 257, (b, 2048)).astype(np.int32)} for b in (1, 32)}


def minilm_model() -> tuple[onnx.ModelProto, dict[str, dict[str, np.ndarray]]] | None:
    import minilm

    folder = minilm.weights_dir()
    if folder is None:
        return None
    model = minilm.build_encoder(folder)
    names = [i.name for i in model.graph.input]
    one = minilm.tokenize(minilm.SENTENCES[:1], folder)
    many = minilm.tokenize(minilm.SENTENCES, folder)
    return model, {
        f"1 sentence ({one['input_ids'].shape[1]} tokens)": {k: v for k, v in one.items() if k in names},
        f"{len(minilm.SENTENCES)} sentences (padded to {many['input_ids'].shape[1]})": {
            k: v for k, v in many.items() if k in names
        },
    }


# --- measuring ------------------------------------------------------------------------------------


def _status(field: str) -> float:
    """A /proc/self/status field in MB (VmRSS, VmHWM: not ru_maxrss, which a child started by
    fork + exec inherits from its parent on Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _session(path: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def latency(paths: list[str], feeds_path: str, rounds: int, runs: int) -> list[float]:
    """In this process: each model's CPU time per run (ms; one intra-op thread), the median over
    `rounds` of the median of `runs` runs, the models taking turns in every round."""
    feeds = dict(np.load(feeds_path))
    sessions = [_session(p) for p in paths]
    for session in sessions:
        for _ in range(3):
            session.run(None, feeds)
    medians: list[list[float]] = [[] for _ in paths]
    for _ in range(rounds):
        for k, session in enumerate(sessions):
            times = []
            for _ in range(runs):
                t = time.thread_time()
                session.run(None, feeds)
                times.append(time.thread_time() - t)
            medians[k].append(float(np.median(times)))
    return [1e3 * float(np.median(m)) for m in medians]


def memory(path: str, feeds_path: str, runs: int) -> dict[str, float]:
    """In this process: RSS before the session, after creating it, after `runs` runs, and the peak."""
    feeds = dict(np.load(feeds_path))
    before = _status("VmRSS")
    session = _session(path)
    created = _status("VmRSS")
    for _ in range(runs):
        session.run(None, feeds)
    return {"session_mb": created - before, "runs_mb": _status("VmRSS") - created, "peak_mb": _status("VmHWM")}


def _child(*args: str) -> object:
    run = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def openvino_compiles(path: str) -> str:
    try:
        import openvino
    except ImportError:
        return "(not installed)"
    try:
        openvino.Core().compile_model(path, "CPU")
        return "yes"
    except Exception as exc:  # noqa: BLE001  (OpenVINO raises RuntimeError subclasses with long logs)
        text = str(exc)
        for needle, why in (
            ("cannot be divided by block_size", "short last block"),
            ("dynamic shapes of input X", "blocked DQ of dynamic shape"),
        ):
            if needle in text:
                return f"no ({why})"
        return "no: " + text.splitlines()[0]


def table() -> tuple[onnx.ModelProto, dict[str, dict[str, np.ndarray]]]:
    """Gather alone on MiniLM's word-embedding table (30522 x 384; random values without the
    checkpoint): the lookup's own cost."""
    import minilm

    folder = minilm.weights_dir()
    rng = np.random.default_rng(0)
    if folder is not None:
        values = minilm.load_safetensors(folder / "model.safetensors")["embeddings.word_embeddings.weight"]
    else:
        values = rng.standard_normal((30522, 384)).astype(np.float32) * 0.05
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"], axis=0)],
        "lookup",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["B", "S"])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["B", "S", values.shape[1]])],
        [numpy_helper.from_array(values, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, {
        f"{b} x {s} ids": {"ids": rng.integers(0, values.shape[0], (b, s)).astype(np.int64)} for b, s in ((1, 13), (32, 18))
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--latency":
        print(json.dumps(latency(sys.argv[5:], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--memory":
        print(json.dumps(memory(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--models", nargs="*", default=["ffn", "magika", "table", "minilm"])
    args = parser.parse_args()

    import quantrs
    from quantrs import QuantizeConfig

    work = Path(tempfile.mkdtemp(prefix="portable_forms."))
    config = QuantizeConfig(bits=4, block_size=32)
    builders = {"ffn": ffn, "magika": magika, "table": table, "minilm": minilm_model}
    print("| model | input | form | ms/run | RSS MB: session / runs / peak | OpenVINO compiles |")
    print("|---|---|---|---:|---:|---|")
    for name in args.models:
        built = builders[name]()
        if built is None:
            print(f"| {name} | | not installed | | | |")
            continue
        model, inputs = built
        src, out = work / f"{name}.onnx", work / f"{name}_q.onnx"
        onnx.save(model, str(src))
        quantrs.quantize(src, out, config)
        quantized = onnx.load(str(out))
        if name in ("minilm", "table"):
            forms = {
                "float": model,
                "gather, blocked DQ (before)": blocked_lookup(quantized),
                "gather, DQ per block (now)": quantized,
                "DQ table, then gather": table_first(quantized),
            }
        else:  # quantrs writes one of the two padded forms, by the weights' sizes
            now = any(n.op_type == "Pad" for n in quantized.graph.node)
            forms = {
                "float": model,
                "short last block (before)": short_last_block(quantized),
                "padded, input padded" + (" (now)" if now else ""): input_padded(quantized),
                "padded, weight sliced" + ("" if now else " (now)"): weight_sliced(quantized),
            }
        paths = []
        for k, form in enumerate(forms.values()):
            paths.append(str(work / f"{name}_form{k}.onnx"))
            onnx.save(form, paths[-1])
            onnx.checker.check_model(paths[-1], full_check=True)
        compiles = [openvino_compiles(p) for p in paths]
        for what, feeds in inputs.items():
            feeds_path = str(work / "feeds.npz")
            np.savez(feeds_path, **feeds)
            times = _child("--latency", feeds_path, str(args.rounds), str(args.runs), *paths)
            for label, path, ms, ok in zip(forms, paths, times, compiles):  # type: ignore[call-overload]
                rss = _child("--memory", path, feeds_path, str(args.runs))
                print(
                    f"| {name} | {what} | {label} | {ms:.3f} | "
                    f"{rss['session_mb']:.0f} / {rss['runs_mb']:.0f} / {rss['peak_mb']:.0f} | {ok} |",
                    flush=True,
                )  # type: ignore[index]


if __name__ == "__main__":
    main()
