"""The `char-transformer` job template: a small causal transformer over KJV
characters, the char-lstm template's task with attention instead of
recurrence. Each sequence is trained on the next character at every
position (a language model's loss), so a batch teaches T times what a
char-lstm batch does.

The model, as Keras would build it: Embedding -> a causal Conv1D of 4 steps
(what tells the blocks where a character stands; attention alone is blind to
order) -> `blocks` times [x + MultiHeadAttention(LN(x), causal), x +
Dense(ReLU(Dense(LN(x))))] -> LN -> Dense softmax. Attention runs in the
page's own MultiHeadAttention (frontend/src/layers.js), with Keras 3's
weights, so a downloaded version exports to Keras (`crowdtrain export-keras`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from crowdtrain.jobs.charlstm import VOCAB
from crowdtrain.jobs.corpus import TOKEN_DTYPE, token_file, windows
from crowdtrain.jobs.documents import job_document

GLOROT = {"class_name": "GlorotUniform", "config": {"seed": None}}
ZEROS = {"class_name": "Zeros", "config": {}}
ONES = {"class_name": "Ones", "config": {}}
CONV_STEPS = 4


def _layer(kind: str, name: str, inputs: list[str], **config: Any) -> dict[str, Any]:
    """A layer of a functional TF.js topology (Keras 2's form), called on `inputs`' first outputs."""
    node = [[source, 0, 0, {}] for source in inputs]
    return {
        "class_name": kind,
        "name": name,
        "config": {"name": name, "trainable": True, "dtype": "float32", **config},
        "inbound_nodes": [node] if node else [],
    }


@dataclass(frozen=True)
class CharTransformer:
    seq_len: int = 40
    batch_size: int = 32
    width: int = 64
    heads: int = 4
    blocks: int = 2
    vocab: int = VOCAB

    def topology(self) -> dict[str, Any]:
        w = self.width
        layers = [
            {
                "class_name": "InputLayer",
                "name": "tokens",
                "config": {"name": "tokens", "batch_input_shape": [None, self.seq_len], "dtype": "int32"},
                "inbound_nodes": [],
            },
            _layer("Embedding", "embedding", ["tokens"], input_dim=self.vocab, output_dim=w, mask_zero=False,
                   embeddings_initializer={"class_name": "RandomUniform",
                                           "config": {"minval": -0.05, "maxval": 0.05, "seed": None}}),
            _layer("Conv1D", "steps", ["embedding"], filters=w, kernel_size=[CONV_STEPS], strides=[1],
                   padding="causal", dilation_rate=[1], data_format="channels_last", activation="linear",
                   use_bias=True, kernel_initializer=GLOROT, bias_initializer=ZEROS),
        ]  # fmt: skip
        x = "steps"
        norm: dict[str, Any] = {"axis": -1, "epsilon": 1e-3, "center": True, "scale": True}
        norm |= {"beta_initializer": ZEROS, "gamma_initializer": ONES}
        dense = {"use_bias": True, "kernel_initializer": GLOROT, "bias_initializer": ZEROS}
        for b in range(1, self.blocks + 1):
            layers += [
                _layer("LayerNormalization", f"norm_{b}a", [x], **norm),
                _layer("MultiHeadAttention", f"attention_{b}", [f"norm_{b}a", f"norm_{b}a"], num_heads=self.heads,
                       key_dim=w // self.heads, value_dim=w // self.heads, dropout=0.0, use_bias=True,
                       use_causal_mask=True, kernel_initializer=GLOROT, bias_initializer=ZEROS),
                _layer("Add", f"mixed_{b}", [x, f"attention_{b}"]),
                _layer("LayerNormalization", f"norm_{b}b", [f"mixed_{b}"], **norm),
                _layer("Dense", f"wide_{b}", [f"norm_{b}b"], units=2 * w, activation="relu", **dense),
                _layer("Dense", f"narrow_{b}", [f"wide_{b}"], units=w, activation="linear", **dense),
                _layer("Add", f"block_{b}", [f"mixed_{b}", f"narrow_{b}"]),
            ]  # fmt: skip
            x = f"block_{b}"
        layers += [
            _layer("LayerNormalization", "norm_out", [x], **norm),
            _layer("Dense", "next_char", ["norm_out"], units=self.vocab, activation="softmax", **dense),
        ]
        return {
            "class_name": "Model",
            "config": {
                "name": "char_transformer",
                "layers": layers,
                "input_layers": [["tokens", 0, 0]],
                "output_layers": [["next_char", 0, 0]],
            },
            "keras_version": "tfjs-layers 4.22.0",
            "backend": "tensor_flow.js",
        }

    def weight_specs(self) -> list[dict[str, Any]]:
        w, heads, size = self.width, self.heads, self.width // self.heads
        specs = [("embedding/embeddings", [self.vocab, w]), ("steps/kernel", [CONV_STEPS, w, w]), ("steps/bias", [w])]
        for b in range(1, self.blocks + 1):
            specs += [(f"norm_{b}a/gamma", [w]), (f"norm_{b}a/beta", [w])]
            for part in ("query", "key", "value"):
                specs += [
                    (f"attention_{b}/{part}/kernel", [w, heads, size]),
                    (f"attention_{b}/{part}/bias", [heads, size]),
                ]
            specs += [
                (f"attention_{b}/attention_output/kernel", [heads, size, w]),
                (f"attention_{b}/attention_output/bias", [w]),
            ]
            specs += [(f"norm_{b}b/gamma", [w]), (f"norm_{b}b/beta", [w])]
            specs += [(f"wide_{b}/kernel", [w, 2 * w]), (f"wide_{b}/bias", [2 * w])]
            specs += [(f"narrow_{b}/kernel", [2 * w, w]), (f"narrow_{b}/bias", [w])]
        specs += [("norm_out/gamma", [w]), ("norm_out/beta", [w])]
        specs += [("next_char/kernel", [w, self.vocab]), ("next_char/bias", [self.vocab])]
        return [{"name": name, "shape": shape, "dtype": "float32"} for name, shape in specs]  # fmt: skip

    def initial_weights(self, seed: int = 0) -> list[np.ndarray]:
        """Keras's defaults: Glorot-uniform kernels (fans as Keras counts them: a convolution's
        window and an attention kernel's heads are part of them), zero biases and betas, unit
        gammas, embeddings uniform in ±0.05."""
        rng = np.random.default_rng(seed)
        out = []
        for spec in self.weight_specs():
            name, shape = spec["name"], spec["shape"]
            if name.startswith("embedding/"):
                out.append(rng.uniform(-0.05, 0.05, size=shape))
            elif name.endswith("/kernel"):
                if name.startswith("steps/"):
                    fan_in, fan_out = shape[0] * shape[1], shape[0] * shape[2]
                elif name.endswith("attention_output/kernel"):
                    fan_in, fan_out = shape[0] * shape[1], shape[2]
                elif "/attention_" not in name and len(shape) == 3:
                    fan_in, fan_out = shape[0], shape[1] * shape[2]
                else:
                    fan_in, fan_out = shape
                limit = np.sqrt(6.0 / (fan_in + fan_out))
                out.append(rng.uniform(-limit, limit, size=shape))
            else:
                out.append(np.ones(shape) if name.endswith("/gamma") else np.zeros(shape))
        return [w.astype(np.float32) for w in out]

    def batches(self, text: str, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """`count` batches of sequences and, at each position, the character that follows."""
        drawn = windows(text, count, self.batch_size, self.seq_len + 1, seed)
        return drawn[..., :-1], drawn[..., 1:]

    batch_file = staticmethod(token_file)  # the sequences, then each position's next character

    def job_spec(self, batches: int, micro_batch: int | None = None, **hyper: Any) -> dict[str, Any]:
        shape = [self.batch_size, self.seq_len]
        dataset: dict[str, Any] = {
            "batches": batches,
            "encoding": "gzip",
            "x": {"shape": shape, "dtype": TOKEN_DTYPE},
            "y": {"shape": shape, "dtype": TOKEN_DTYPE},
        }
        if micro_batch:
            dataset["micro_batch"] = micro_batch
        return {
            **job_document(f"char-transformer {self.blocks}x{self.width} seq {self.seq_len}", self, dataset),
            **hyper,
        }
