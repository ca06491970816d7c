"""The `digits-cnn` job template: Conv2D → MaxPooling2D → Dense on
scikit-learn's bundled 8×8 handwritten digits (1,797 images, shipped inside
the package: no download). It is the maintained example of a convolutional
model: TF.js's wasm backend has no kernel for Conv2D's weight gradient, so
the page's canary trains it on webgl or cpu.

The images are split once by a seeded permutation: the last HELD_OUT are
never trained on and serve as the held-out set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from crowdtrain.jobs.documents import job_document

HELD_OUT = 297  # of 1,797 images; 1,500 left to train on
CLASSES = 10


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The images (n, 8, 8, 1) scaled to [0, 1] and their labels."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise SystemExit("the digits-cnn template needs scikit-learn: .venv/bin/pip install -e '.[digits]'")
    digits = sklearn_digits()
    return (digits.data / 16.0).astype(np.float32).reshape(-1, 8, 8, 1), digits.target.astype(np.int64)


@dataclass(frozen=True)
class DigitsCNN:
    filters: int = 16
    batch_size: int = 32

    def topology(self) -> dict[str, Any]:
        glorot = {"class_name": "GlorotUniform", "config": {"seed": None}}
        zeros = {"class_name": "Zeros", "config": {}}
        layers = [
            {
                "class_name": "Conv2D",
                "config": {
                    "name": "conv",
                    "filters": self.filters,
                    "kernel_size": [3, 3],
                    "strides": [1, 1],
                    "padding": "same",
                    "data_format": "channels_last",
                    "dilation_rate": [1, 1],
                    "activation": "relu",
                    "use_bias": True,
                    "kernel_initializer": glorot,
                    "bias_initializer": zeros,
                    "batch_input_shape": [None, 8, 8, 1],
                    "dtype": "float32",
                    "trainable": True,
                },
            },
            {
                "class_name": "MaxPooling2D",
                "config": {
                    "name": "pool",
                    "pool_size": [2, 2],
                    "strides": [2, 2],
                    "padding": "valid",
                    "data_format": "channels_last",
                    "trainable": True,
                },
            },
            {"class_name": "Flatten", "config": {"name": "flatten", "trainable": True}},
            {
                "class_name": "Dense",
                "config": {
                    "name": "digit",
                    "units": CLASSES,
                    "activation": "softmax",
                    "use_bias": True,
                    "kernel_initializer": glorot,
                    "bias_initializer": zeros,
                    "dtype": "float32",
                    "trainable": True,
                },
            },
        ]
        return {
            "class_name": "Sequential",
            "config": {"name": "digits_cnn", "layers": layers},
            "keras_version": "tfjs-layers 4.22.0",
            "backend": "tensor_flow.js",
        }

    def weight_specs(self) -> list[dict[str, Any]]:
        f = self.filters
        return [
            {"name": "conv/kernel", "shape": [3, 3, 1, f], "dtype": "float32"},
            {"name": "conv/bias", "shape": [f], "dtype": "float32"},
            {"name": "digit/kernel", "shape": [4 * 4 * f, CLASSES], "dtype": "float32"},
            {"name": "digit/bias", "shape": [CLASSES], "dtype": "float32"},
        ]

    def initial_weights(self, seed: int = 0) -> list[np.ndarray]:
        """Glorot-uniform kernels (a convolution's fans count its window), zero biases."""
        rng = np.random.default_rng(seed)
        out = []
        for spec in self.weight_specs():
            shape = spec["shape"]
            if len(shape) == 1:
                out.append(np.zeros(shape, np.float32))
                continue
            window = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
            limit = np.sqrt(6.0 / (window * (shape[-2] + shape[-1])))
            out.append(rng.uniform(-limit, limit, size=shape).astype(np.float32))
        return out

    @staticmethod
    def split(seed: int = 0) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """(training images, labels) and (held-out images, labels)."""
        x, y = load_digits()
        order = np.random.default_rng(seed).permutation(len(x))
        train, held = order[:-HELD_OUT], order[-HELD_OUT:]
        return (x[train], y[train]), (x[held], y[held])

    def batches(self, x: np.ndarray, y: np.ndarray, count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Whole batches of the images in order (`count` of them, at most all)."""
        count = min(count or len(x) // self.batch_size, len(x) // self.batch_size)
        n = count * self.batch_size
        return x[:n].reshape(count, self.batch_size, 8, 8, 1), y[:n].reshape(count, self.batch_size)

    @staticmethod
    def batch_file(x: np.ndarray, y: np.ndarray) -> bytes:
        """One batch's file as job_spec describes it: float32 images, then uint8 labels."""
        return x.astype("<f4").tobytes() + y.astype(np.uint8).tobytes()

    def job_spec(self, batches: int, **hyper: Any) -> dict[str, Any]:
        dataset = {
            "batches": batches,
            "x": {"shape": [self.batch_size, 8, 8, 1], "dtype": "float32"},
            "y": {"shape": [self.batch_size], "dtype": "uint8"},
        }
        return {**job_document(f"digits-cnn {self.filters} filters", self, dataset), **hyper}
