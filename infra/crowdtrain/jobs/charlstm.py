"""The `char-lstm` job template: next-character prediction with stacked LSTMs,
as in JSDoop's experiment (two LSTM(10) layers, one-hot input over 128
characters, sequences of 1024, a softmax over the next character).

Token ids are character codes below 128 (other characters are dropped), so
the one-hot depth is 128 and the alphabet is ASCII, as in the paper. They are
stored one byte each (uint8): the batches are most of what volunteers download.

With `embedding` E > 0 the model reads token ids through an Embedding layer
(128 × E, learned) instead of one-hot vectors: the template for models whose
gradient needs a kernel TF.js's wasm backend lacks (the page's canary then
trains it on another backend).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from crowdtrain.jobs.corpus import TOKEN_DTYPE, token_file, windows
from crowdtrain.jobs.documents import job_document

VOCAB = 128
ALPHABET = "".join(chr(i) if 32 <= i < 127 or chr(i) == "\n" else "\x00" for i in range(VOCAB))


@dataclass(frozen=True)
class CharLSTM:
    units: tuple[int, ...] = (10, 10)
    seq_len: int = 1024
    batch_size: int = 32
    vocab: int = VOCAB
    embedding: int = 0  # E > 0: an Embedding layer of E dimensions reads the token ids

    def topology(self) -> dict[str, Any]:
        layers: list[dict[str, Any]] = []
        if self.embedding:
            layers.append(
                {
                    "class_name": "Embedding",
                    "config": {
                        "name": "embedding",
                        "input_dim": self.vocab,
                        "output_dim": self.embedding,
                        "batch_input_shape": [None, self.seq_len],
                        "input_length": self.seq_len,
                        "mask_zero": False,
                        "embeddings_initializer": {
                            "class_name": "RandomUniform",
                            "config": {"minval": -0.05, "maxval": 0.05, "seed": None},
                        },
                        "dtype": "float32",
                        "trainable": True,
                    },
                }
            )
        for i, units in enumerate(self.units):
            config: dict[str, Any] = {
                "name": f"lstm_{i + 1}",
                "units": units,
                "return_sequences": i < len(self.units) - 1,
                "activation": "tanh",
                "recurrent_activation": "sigmoid",
                "use_bias": True,
                "unit_forget_bias": True,
                "dtype": "float32",
                "trainable": True,
                # glorotUniform, not the default orthogonal: TF.js builds the
                # latter slowly in browsers (see docs/architecture.md).
                "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
                "recurrent_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
                "bias_initializer": {"class_name": "Zeros", "config": {}},
            }
            if i == 0 and not self.embedding:
                config["batch_input_shape"] = [None, self.seq_len, self.vocab]
            layers.append({"class_name": "LSTM", "config": config})
        layers.append(
            {
                "class_name": "Dense",
                "config": {
                    "name": "next_char",
                    "units": self.vocab,
                    "activation": "softmax",
                    "use_bias": True,
                    "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
                    "bias_initializer": {"class_name": "Zeros", "config": {}},
                    "dtype": "float32",
                    "trainable": True,
                },
            }
        )
        return {
            "class_name": "Sequential",
            "config": {"name": "char_lstm", "layers": layers},
            "keras_version": "tfjs-layers 4.22.0",
            "backend": "tensor_flow.js",
        }

    def weight_specs(self) -> list[dict[str, Any]]:
        specs, inputs = [], self.vocab
        if self.embedding:
            specs.append({"name": "embedding/embeddings", "shape": [self.vocab, self.embedding], "dtype": "float32"})
            inputs = self.embedding
        for i, units in enumerate(self.units):
            name = f"lstm_{i + 1}"
            specs += [
                {"name": f"{name}/kernel", "shape": [inputs, 4 * units], "dtype": "float32"},
                {"name": f"{name}/recurrent_kernel", "shape": [units, 4 * units], "dtype": "float32"},
                {"name": f"{name}/bias", "shape": [4 * units], "dtype": "float32"},
            ]
            inputs = units
        specs += [
            {"name": "next_char/kernel", "shape": [inputs, self.vocab], "dtype": "float32"},
            {"name": "next_char/bias", "shape": [self.vocab], "dtype": "float32"},
        ]
        return specs

    def initial_weights(self, seed: int = 0) -> list[np.ndarray]:
        """Glorot-uniform kernels, zero biases with the forget gate's at 1 (Keras's unit_forget_bias),
        embeddings uniform in ±0.05 (Keras's default)."""
        rng = np.random.default_rng(seed)
        out = []
        for spec in self.weight_specs():
            shape = spec["shape"]
            if spec["name"].startswith("embedding/"):
                out.append(rng.uniform(-0.05, 0.05, size=shape).astype(np.float32))
            elif len(shape) == 2:
                limit = np.sqrt(6.0 / (shape[0] + shape[1]))
                out.append(rng.uniform(-limit, limit, size=shape).astype(np.float32))
            else:
                bias = np.zeros(shape, np.float32)
                if spec["name"].startswith("lstm_"):
                    units = shape[0] // 4
                    bias[units : 2 * units] = 1.0
                out.append(bias)
        return out

    def batches(self, text: str, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """`count` batches of (sequence, next character) pairs drawn from the text, as uint8 ids."""
        drawn = windows(text, count, self.batch_size, self.seq_len + 1, seed)
        return drawn[..., :-1], drawn[..., -1]

    batch_file = staticmethod(token_file)  # the sequences, then the next characters

    def job_spec(self, batches: int, micro_batch: int | None = None, **hyper: Any) -> dict[str, Any]:
        """The job: `hyper` are the spec's top-level settings; `micro_batch`
        has volunteers compute each batch that many sequences at a time."""
        x = {"shape": [self.batch_size, self.seq_len], "dtype": TOKEN_DTYPE}
        name = f"char-lstm {'x'.join(map(str, self.units))} seq {self.seq_len}"
        dataset = {
            "batches": batches,
            "encoding": "gzip",  # English text: about 2.7x smaller
            "x": x if self.embedding else {**x, "one_hot": self.vocab},
            "y": {"shape": [self.batch_size], "dtype": TOKEN_DTYPE},
        }
        spec = job_document(name + (f" embedding {self.embedding}" if self.embedding else ""), self, dataset)
        if not self.embedding:  # the page's text sample feeds one-hot characters
            spec["text"] = {"alphabet": ALPHABET}
        if micro_batch:
            spec["dataset"]["micro_batch"] = micro_batch
        spec.update(hyper)
        return spec
