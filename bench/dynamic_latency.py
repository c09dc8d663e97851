"""Which quantized model runs fastest: float, quantrs' weight-only INT8, quantrs `--dynamic`
(plain, and with `--smooth auto`), onnxruntime's `quantize_dynamic`, and 4-bit MatMulNBits, on
all-MiniLM-L6-v2 (built from its packaged checkpoint, tests/minilm.py) and a Llama-shaped
decoder's prefill (bench/llama.py, TinyLlama widths, --layers of them), one thread, batch 8 x 32
tokens, in one run.

    python bench/dynamic_latency.py WORKDIR [--layers 2] [--repeat 30] [--threads 1] [--busy]
        [--norm-outliers G] [--dtype float32|float16] [--decoder-only]

`--smooth auto` calibrates on SMOOTH_SAMPLES other random sequences of 32 tokens (batch 1).
`--norm-outliers G`: the decoder's RMSNorm gains are G on a few channels (bench/llama.py), so
that its MatMul inputs have outlier channels as trained LLMs' do; 0 (the default) is the model
of the earlier measurements.

Each model is run once per round, rounds interleaved (these machines are noisy), and the median
of each is reported with its ratio to float and its cosine to float's outputs (MiniLM's last
hidden state; the decoder's logits), inputs random token ids. Also the time each tool took to
quantize. With --busy, every model is timed again beside one competing CPU-bound process the
script starts and stops (bench/busy_threads.py), ratios to float from that same block. Prints
Markdown tables (for bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import minilm  # noqa: E402
from busy_threads import competing_process  # noqa: E402
from llama import NORM_OUTLIERS, SIZES, Widths, build_decoder  # noqa: E402

import quantrs  # noqa: E402

BATCH, TOKENS = 8, 32
SMOOTH_SAMPLES = 16  # calibration sequences for --smooth auto


def variants(src: Path, folder: Path, calibration: list[dict[str, np.ndarray]]) -> dict[str, tuple[Path, float]]:
    """Each quantized form of `src`: its path and the seconds it took to make (`calibration`:
    the samples of --smooth)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    made: dict[str, tuple[Path, float]] = {"float": (src, 0.0)}
    steps = {
        "quantrs INT8 weight-only": lambda dst: quantrs.quantize(src, dst),
        "quantrs --dynamic": lambda dst: quantrs.quantize(src, dst, quantrs.QuantizeConfig(dynamic=True)),
        "quantrs --dynamic --smooth auto": lambda dst: quantrs.quantize(
            src, dst, quantrs.QuantizeConfig(dynamic=True, smooth="auto"), data=calibration
        ),
        "ort quantize_dynamic": lambda dst: quantize_dynamic(
            src,
            dst,
            weight_type=QuantType.QInt8,
            per_channel=True,
            use_external_data_format=src.with_name(src.name + ".data").exists(),
        ),
        "quantrs 4-bit MatMulNBits": lambda dst: quantrs.quantize(
            src, dst, quantrs.QuantizeConfig(bits=4, quant_format="matmulnbits")
        ),
        "quantrs 4-bit MatMulNBits, --accuracy-level 0": lambda dst: quantrs.quantize(
            src, dst, quantrs.QuantizeConfig(bits=4, quant_format="matmulnbits", accuracy_level=0)
        ),
    }
    for name, make in steps.items():
        dst = folder / (name.replace(" ", "_").replace("-", "") + ".onnx")
        began = time.perf_counter()
        make(dst)
        made[name] = (dst, time.perf_counter() - began)
    return made


def run_interleaved(
    sessions: dict[str, ort.InferenceSession], feeds: dict[str, np.ndarray], repeat: int
) -> tuple[dict[str, np.ndarray], dict[str, list[float]]]:
    """Each session's first output (float64, flat) and `repeat` timed runs, the sessions in turn
    each round (so a slow spell of the machine falls on all of them alike)."""
    outputs = {name: s.run(None, feeds)[0].astype(np.float64).ravel() for name, s in sessions.items()}
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(repeat):
        for name, s in sessions.items():
            began = time.perf_counter()
            s.run(None, feeds)
            times[name].append(time.perf_counter() - began)
    return outputs, times


def measure(models: dict[str, tuple[Path, float]], feeds: dict[str, np.ndarray], repeat: int, threads: int) -> list[str]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    sessions, failed = {}, {}
    for name, (path, _) in models.items():
        try:
            sessions[name] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # quantize_dynamic's output of a float16 model does not load (onnxruntime 1.32)
            failed[name] = str(exc).split(":")[-1].strip()[:120]
    outputs, times = run_interleaved(sessions, feeds, repeat)
    ref = outputs["float"]
    base = statistics.median(times["float"])
    rows = []
    for name in sessions:
        got = outputs[name]
        cosine = float(ref @ got / np.linalg.norm(ref) / np.linalg.norm(got))
        ms = statistics.median(times[name]) * 1e3
        made = models[name][1]
        rows.append(
            f"| {name} | {ms:.1f} ms | {base * 1e3 / ms:.2f}x | {cosine:.4f} | {made:.2f} s |"
            if name != "float"
            else f"| float | {ms:.1f} ms | 1.00x | 1 | |"
        )
    return rows + [f"| {name} | does not load: {why} | | | {models[name][1]:.2f} s |" for name, why in failed.items()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--busy", action="store_true", help="also time every model beside a competing process")
    parser.add_argument("--norm-outliers", type=float, default=0.0, help="the decoder's outlier RMSNorm gain (0: none)")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="the decoder's weights")
    parser.add_argument("--decoder-only", action="store_true", help="skip MiniLM")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    calibration = np.random.default_rng(1)  # other sequences than the timed ones
    header = "| model | latency | vs float | cosine to float | quantizing |\n|---|---|---|---|---|"

    if not args.decoder_only:
        folder = args.workdir / "minilm"
        folder.mkdir(parents=True, exist_ok=True)
        src = folder / "minilm.onnx"
        onnx.save(minilm.build_encoder(minilm.weights_dir(), last_hidden_state=True), str(src))
        ids = rng.integers(1000, 30000, (BATCH, TOKENS)).astype(np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        samples = []
        for _ in range(SMOOTH_SAMPLES):
            sample = calibration.integers(1000, 30000, (1, TOKENS)).astype(np.int64)
            samples.append({"input_ids": sample, "attention_mask": np.ones_like(sample)})
        print(f"all-MiniLM-L6-v2, batch {BATCH} x {TOKENS} tokens, {args.threads} thread(s), median of {args.repeat}")
        report(variants(src, folder, samples), feeds, args, header)
    else:
        rng.integers(1000, 30000, (BATCH, TOKENS))  # the decoder's tokens as in a full run
        calibration.integers(1000, 30000, (SMOOTH_SAMPLES, TOKENS))

    size = SIZES["1.1B"]
    widths = Widths(size.hidden, size.intermediate, args.layers, size.heads, size.kv_heads, size.vocab)
    name = (
        f"decoder{args.layers}"
        + ("_fp16" if args.dtype == "float16" else "")
        + (f"_g{args.norm_outliers:g}" if args.norm_outliers else "")
    )
    folder = args.workdir / name
    folder.mkdir(parents=True, exist_ok=True)
    src = build_decoder(folder / "decoder.onnx", widths, args.dtype, norm_outliers=args.norm_outliers)
    feeds = {"input_ids": rng.integers(0, widths.vocab, (BATCH, TOKENS)).astype(np.int64)}
    samples = [{"input_ids": calibration.integers(0, widths.vocab, (1, TOKENS)).astype(np.int64)} for _ in range(SMOOTH_SAMPLES)]
    outliers = f", RMSNorm gains {args.norm_outliers:g} on {NORM_OUTLIERS} channels" if args.norm_outliers else ""
    print(f"\nLlama-shaped decoder, TinyLlama widths, {args.layers} layers, {args.dtype}{outliers}, prefill {BATCH} x {TOKENS}")
    report(variants(src, folder, samples), feeds, args, header)


def report(models: dict[str, tuple[Path, float]], feeds: dict[str, np.ndarray], args: argparse.Namespace, header: str) -> None:
    for busy in (False, True) if args.busy else (False,):
        with competing_process(busy, limit=600.0):
            rows = measure(models, feeds, args.repeat, args.threads)
        print(f"\n{'busy (1 competing process)' if busy else 'idle'}\n\n{header}\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
