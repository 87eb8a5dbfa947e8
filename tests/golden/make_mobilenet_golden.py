"""Writes tests/golden/mobilenet_v1.pt: activations of Keras' own MobileNet v1 (alpha 0.25) with the Keras ImageNet
weights file, on a fixed 64x96 input. `tests/test_features.py` checks the PyTorch port against them, so a regression
in the port (kernel layout, padding, batch-norm epsilon, input scaling) is caught without Keras installed.

Run once, where Keras 3 can be installed (the torch backend is enough, no TensorFlow):

    pip install keras
    KERAS_BACKEND=torch python tests/golden/make_mobilenet_golden.py /path/to/mobilenet_2_5_224_tf_no_top.h5

The sizes are multiples of 32: Keras 3 pads stride-2 convolutions by one row and column after the image, which is
TensorFlow's SAME padding (what the weights were trained with) only for even sides.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

LAYERS = ["conv1_relu", "conv_dw_2_relu", "conv_pw_5_relu", "conv_pw_13_relu"]
HEIGHT, WIDTH = 64, 96


def golden_input() -> np.ndarray:
    """(1, H, W, 3) float32 in [-1, 1]: smooth waves and a checkerboard (non-square, so a transposed axis shows)."""
    yy, xx = np.meshgrid(np.arange(HEIGHT), np.arange(WIDTH), indexing="ij")
    image = np.stack([np.sin(xx / 7.0 + yy / 11.0), np.cos(yy / 5.0) * np.sin(xx / 13.0),
                      ((xx // 4 + yy // 4) % 2) * 1.6 - 0.8], -1)
    return image.astype(np.float32)[None]


def main(weights: str) -> None:
    model = keras.applications.MobileNet(input_shape=(HEIGHT, WIDTH, 3), alpha=0.25, include_top=False, weights=None)
    model.load_weights(weights)
    probe = keras.Model(model.input, [model.get_layer(name).output for name in LAYERS])
    image = golden_input()
    outputs = probe(image)
    nchw = {name: torch.as_tensor(np.asarray(keras.ops.convert_to_numpy(out))).permute(0, 3, 1, 2).contiguous()
            for name, out in zip(LAYERS, outputs)}
    torch.save({"input": torch.from_numpy(image).permute(0, 3, 1, 2).contiguous(), "activations": nchw,
                "keras_version": keras.__version__}, Path(__file__).with_name("mobilenet_v1.pt"))


if __name__ == "__main__":
    main(sys.argv[1])
