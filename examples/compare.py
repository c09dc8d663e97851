"""Run a float model and its quantized version in onnxruntime on the same random inputs and
print how closely they agree (top-1 agreement, max abs difference of the outputs).

    python examples/compare.py examples/small_cnn.onnx small_cnn_int8.onnx
"""

import sys

import numpy as np
import onnxruntime as ort


def main(float_path: str, quantized_path: str, batch: int = 64) -> None:
    reference = ort.InferenceSession(float_path, providers=["CPUExecutionProvider"])
    quantized = ort.InferenceSession(quantized_path, providers=["CPUExecutionProvider"])
    feeds = {}
    for i in reference.get_inputs():
        shape = [batch if not isinstance(d, int) else d for d in i.shape]
        feeds[i.name] = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    want = reference.run(None, feeds)[0]
    got = quantized.run(None, feeds)[0]
    agreement = float((want.argmax(-1) == got.argmax(-1)).mean())
    print(
        f"{quantized_path}: runs in onnxruntime; top-1 agreement with the float model "
        f"{agreement:.1%}, max abs output difference {np.abs(want - got).max():.4g}"
    )


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
