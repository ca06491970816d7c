"""Numpy optimizers that reproduce TF.js's `tf.train.*` update rules.

Same formulas, operation order, float32 arithmetic, epsilon placement and
defaults as @tensorflow/tfjs-core 4.x, so a job trained through crowdtrain
follows the trajectory a single TF.js page would (tests/test_optimizer_parity
checks this against TF.js under Node). Updates are pure: they return new
arrays and a new state and never modify their inputs, so a fold that crashes
and is retried computes the same version again.

TF.js defaults epsilon to the backend's float32 epsilon (1e-7); the server has
no backend, so that value is the default here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chalicelib.domain.named import Named, choose
from chalicelib.domain.validate import FLAG, Range

F32 = np.float32
BACKEND_EPSILON = 1e-7
LEARNING_RATE = Range(0, 1e3, low_open=True)
UNIT = Range(0, 1)


@dataclass
class OptimizerState:
    """What an optimizer carries from one update to the next."""

    step: int = 0
    scalars: dict[str, float] = field(default_factory=dict)
    slots: dict[str, list[np.ndarray]] = field(default_factory=dict)


class Optimizer(Named):
    """An update rule: weights, gradients and state in; new weights and state out."""

    def slot_count(self) -> int:
        """Weight-sized arrays of state the rule keeps (the fold's memory check)."""
        return len(self.initial_state([np.zeros(1, F32)]).slots)

    def initial_state(self, weights: list[np.ndarray]) -> OptimizerState:
        return OptimizerState()

    def apply(
        self, weights: list[np.ndarray], grads: list[np.ndarray], state: OptimizerState
    ) -> tuple[list[np.ndarray], OptimizerState]:
        raise NotImplementedError


def _zeros(weights: list[np.ndarray]) -> list[np.ndarray]:
    return [np.zeros_like(w, dtype=F32) for w in weights]


class SGD(Optimizer):
    """tf.train.sgd(learningRate): w - lr * g."""

    name = "sgd"
    limits = {"learning_rate": LEARNING_RATE}

    def __init__(self, learning_rate: float):
        self.learning_rate = learning_rate

    def apply(self, weights, grads, state):
        lr = F32(self.learning_rate)
        new = [(w - lr * g).astype(F32) for w, g in zip(weights, grads)]
        return new, OptimizerState(step=state.step + 1)


class Momentum(Optimizer):
    """tf.train.momentum(learningRate, momentum, useNesterov)."""

    name = "momentum"
    limits = {"learning_rate": LEARNING_RATE, "momentum": UNIT, "use_nesterov": FLAG}

    def __init__(self, learning_rate: float, momentum: float, use_nesterov: bool = False):
        self.learning_rate, self.momentum, self.use_nesterov = learning_rate, momentum, use_nesterov

    def initial_state(self, weights):
        return OptimizerState(slots={"momentum": _zeros(weights)})

    def apply(self, weights, grads, state):
        m, c = F32(self.momentum), F32(-self.learning_rate)
        new_weights, new_acc = [], []
        for w, g, acc in zip(weights, grads, state.slots["momentum"]):
            acc = m * acc + g
            step = g + acc * m if self.use_nesterov else acc
            new_weights.append((c * step + w).astype(F32))
            new_acc.append(acc.astype(F32))
        return new_weights, OptimizerState(step=state.step + 1, slots={"momentum": new_acc})


class Adam(Optimizer):
    """tf.train.adam(learningRate=0.001, beta1=0.9, beta2=0.999, epsilon).

    Bias correction divides by (1 - accBeta), where accBeta starts at beta and
    is multiplied by beta after each step in float32, as TF.js does.
    """

    name = "adam"
    limits = {"learning_rate": LEARNING_RATE, "beta1": UNIT, "beta2": UNIT, "epsilon": UNIT}

    def __init__(
        self, learning_rate: float = 0.001, beta1: float = 0.9, beta2: float = 0.999, epsilon: float = BACKEND_EPSILON
    ):
        self.learning_rate, self.beta1, self.beta2, self.epsilon = learning_rate, beta1, beta2, epsilon

    def initial_state(self, weights):
        return OptimizerState(
            scalars={"acc_beta1": float(F32(self.beta1)), "acc_beta2": float(F32(self.beta2))},
            slots={"m": _zeros(weights), "v": _zeros(weights)},
        )

    def apply(self, weights, grads, state):
        b1, b2 = F32(self.beta1), F32(self.beta2)
        acc1, acc2 = F32(state.scalars["acc_beta1"]), F32(state.scalars["acc_beta2"])
        one_minus_acc1, one_minus_acc2 = F32(1) - acc1, F32(1) - acc2
        c1, c2 = F32(1 - self.beta1), F32(1 - self.beta2)
        eps, neg_lr = F32(self.epsilon), F32(-self.learning_rate)
        new_w, new_m, new_v = [], [], []
        for w, g, m, v in zip(weights, grads, state.slots["m"], state.slots["v"]):
            m = m * b1 + g * c1
            v = v * b2 + np.square(g) * c2
            m_hat, v_hat = m / one_minus_acc1, v / one_minus_acc2
            new_w.append(((m_hat / (np.sqrt(v_hat) + eps)) * neg_lr + w).astype(F32))
            new_m.append(m.astype(F32))
            new_v.append(v.astype(F32))
        scalars = {"acc_beta1": float(acc1 * b1), "acc_beta2": float(acc2 * b2)}
        return new_w, OptimizerState(step=state.step + 1, scalars=scalars, slots={"m": new_m, "v": new_v})


class RMSProp(Optimizer):
    """tf.train.rmsprop(learningRate, decay=0.9, momentum=0, epsilon, centered=false).

    Note TF.js puts epsilon inside the square root.
    """

    name = "rmsprop"
    limits = {"learning_rate": LEARNING_RATE, "decay": UNIT, "momentum": UNIT, "epsilon": UNIT, "centered": FLAG}

    def __init__(
        self,
        learning_rate: float,
        decay: float = 0.9,
        momentum: float = 0.0,
        epsilon: float = BACKEND_EPSILON,
        centered: bool = False,
    ):
        self.learning_rate, self.decay, self.momentum = learning_rate, decay, momentum
        self.epsilon, self.centered = epsilon, centered

    def initial_state(self, weights):
        slots = {"rms": _zeros(weights), "momentum": _zeros(weights)}
        if self.centered:
            slots["mg"] = _zeros(weights)
        return OptimizerState(slots=slots)

    def apply(self, weights, grads, state):
        decay, rest = F32(self.decay), F32(1 - self.decay)
        lr, mom, eps = F32(self.learning_rate), F32(self.momentum), F32(self.epsilon)
        slots: dict[str, list[np.ndarray]] = {key: [] for key in state.slots}
        new_w = []
        for i, (w, g) in enumerate(zip(weights, grads)):
            ms = state.slots["rms"][i] * decay + np.square(g) * rest
            if self.centered:
                mg = state.slots["mg"][i] * decay + g * rest
                denom = np.sqrt(ms - (np.square(mg) + eps))
                slots["mg"].append(mg.astype(F32))
            else:
                denom = np.sqrt(ms + eps)
            moment = state.slots["momentum"][i] * mom + (g * lr) / denom
            slots["rms"].append(ms.astype(F32))
            slots["momentum"].append(moment.astype(F32))
            new_w.append((w - moment).astype(F32))
        return new_w, OptimizerState(step=state.step + 1, slots=slots)


OPTIMIZERS: dict[str, type[Optimizer]] = {c.name: c for c in (SGD, Momentum, Adam, RMSProp)}


def make_optimizer(raw: Any) -> Optimizer:
    """The optimizer a job's `optimizer` object names, its settings checked (400 on mistakes)."""
    return choose(OPTIMIZERS, raw, "optimizer")
