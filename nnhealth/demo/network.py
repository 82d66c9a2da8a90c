"""A small fully-connected network in plain numpy, with classic training faults.

This is the patient the doctor practises on: a multi-layer perceptron whose
forward and backward passes are written out by hand, trained with SGD on a
synthetic 10-class problem it makes itself. Each entry of ``FAULTS`` switches
on one of the mistakes from the "Training Neural Networks" lecture (bad
initialisation, a bad learning rate, raw inputs, a dead-ReLU bias, a model
that memorises a tiny training set), so nnhealth's rules can be shown - and
tested - on runs where the pathology is known to be real.

``train`` reports to an *observer* through nnhealth's manual API
(``observe_input``, ``observe_activation``, ``observe_parameter``,
``observe_gradient``, ``observe_update``, ``step``). Any object with those
methods works; ``nnhealth.Monitor`` is the intended one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from .stopping import last_findings, stop_reason

ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid")
LEAK = 0.01  # negative-side slope of leaky_relu


@dataclass(frozen=True)
class Fault:
    """Every knob of a run; the defaults are the healthy recipe from the lecture."""

    depth: int = 2                       # number of hidden layers
    width: int = 128                     # units per hidden layer
    activation: str = "relu"             # one of ACTIVATIONS
    init: str | float = "he"             # "he" | "xavier" | "zero" | "constant" | std of randn
    init_constant: float = 0.05          # every weight's value when init == "constant"
    out_scale: float = 0.3               # random output-layer weights x this: first loss ~ ln(C)
    bias_init: float = 0.0               # every hidden bias (the output bias starts at 0)
    lr: float = 0.02
    momentum: float = 0.9                # 0 gives plain SGD
    l2: float = 1e-4                     # 0.5 * l2 * sum(W**2) added to the loss (weights only)
    input_scale: tuple[float, float] = (1.0, 1.0)  # per-feature scales, log-spaced lo..hi
    input_offset: float = 0.0            # added to every feature after scaling
    n_train: int = 4000
    n_val: int = 1000
    steps: int = 300
    batch_size: int = 128
    dim: int = 32                        # input features
    noise: float = 1.0                   # within-cluster std (cluster centres have std 1)
    num_classes: int = 10
    val_every: int = 10                  # validation loss/accuracy every k steps


@dataclass(frozen=True)
class FaultSpec:
    """A named fault: the knobs, one line saying what is wrong, and what to expect."""

    name: str
    description: str
    symptoms: tuple[str, ...]            # symptom ids of DESIGN.md's catalog
    fault: Fault = field(default_factory=Fault)


FAULTS: dict[str, FaultSpec] = {s.name: s for s in [
    FaultSpec("none",
              "healthy: ReLU, He init, normalised inputs, SGD lr 0.02 + momentum 0.9, light L2",
              (), Fault()),
    FaultSpec("small-init",
              "deep tanh net (8x256), W = 0.01*randn: activations shrink to 0 layer after layer",
              ("vanishing-activations", "vanishing-gradients"),
              Fault(depth=8, width=256, activation="tanh", init=0.01, out_scale=0.1, l2=0.0,
                    steps=150)),
    FaultSpec("large-init",
              "tanh net (4x512), W = 1.0*randn: units pinned at -1 and +1",
              ("saturated-activations",),
              Fault(depth=4, width=512, activation="tanh", init=1.0, out_scale=0.1, l2=0.0, lr=0.01,
                    steps=100)),
    FaultSpec("zero-init",
              "all weights zero (sigmoid): every unit of a layer computes and learns the same",
              ("weights-symmetric",),
              Fault(activation="sigmoid", init="zero", lr=0.5, steps=200)),
    FaultSpec("high-lr",
              "learning rate 5, 250x the healthy 0.02: the loss blows up within a step or two",
              ("loss-exploding", "update-ratio-high"),
              Fault(lr=5.0, steps=100)),
    FaultSpec("low-lr",
              "learning rate 1e-6: the weights barely move, nor does the loss",
              ("loss-not-decreasing", "update-ratio-low"),
              Fault(lr=1e-6, momentum=0.0, steps=200)),
    FaultSpec("dead-relu",
              "ReLU with hidden biases at -5: most units never fire",
              ("dead-relu",),
              Fault(bias_init=-5.0, steps=200)),
    FaultSpec("unnormalized-input",
              "raw features: offset +50, scales 1 to 1000 (lr cut to 1e-5 to stay finite)",
              ("input-not-normalized",),
              Fault(input_scale=(1.0, 1000.0), input_offset=50.0, lr=1e-5, steps=200)),
    FaultSpec("overfit",
              "60 training samples, 2x512 net, no L2: memorises, does not generalise",
              ("overfitting",),
              Fault(width=512, l2=0.0, n_train=60)),
]}


# ---------------------------------------------------------------- data

@dataclass
class Dataset:
    """Train and validation arrays, exactly as the network is fed them."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    num_classes: int


def make_data(fault: Fault, seed: int = 0) -> Dataset:
    """Gaussian clusters, several per class, so that generalising needs data.

    The validation set is drawn before the training set, so it is the same
    for every ``n_train``. Features are standardised with the population's
    own mean and std (not the sample's), then the fault's scale and offset
    are applied: with the defaults the inputs are zero-centred, unit-scale.
    """
    rng = np.random.default_rng([seed, 1])
    per_class = 4
    centres = rng.standard_normal((fault.num_classes * per_class, fault.dim))
    labels = np.arange(len(centres)) % fault.num_classes
    noise = fault.noise
    mean = centres.mean(axis=0)
    std = np.sqrt(centres.var(axis=0) + noise**2)  # of centre + noise, per feature
    scales = np.geomspace(fault.input_scale[0], fault.input_scale[1], fault.dim)
    scales = rng.permutation(scales)  # large and small features interleaved

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        cid = rng.integers(len(centres), size=n)
        X = centres[cid] + noise * rng.standard_normal((n, fault.dim))
        X = (X - mean) / std * scales + fault.input_offset
        return X, labels[cid]

    X_val, y_val = sample(fault.n_val)
    X_train, y_train = sample(fault.n_train)
    return Dataset(X_train, y_train, X_val, y_val, fault.num_classes)


# ---------------------------------------------------------------- network

def _activate(kind: str, z: np.ndarray) -> np.ndarray:
    if kind == "relu":
        return np.maximum(z, 0.0)
    if kind == "leaky_relu":
        return np.where(z > 0, z, LEAK * z)
    if kind == "tanh":
        return np.tanh(z)
    if kind == "sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1/(1+e^-z), without exp overflow
    raise ValueError(f"unknown activation {kind!r}; expected one of {ACTIVATIONS}")


def _activation_grad(kind: str, z: np.ndarray, h: np.ndarray, dh: np.ndarray) -> np.ndarray:
    if kind == "relu":
        return dh * (z > 0)
    if kind == "leaky_relu":
        return dh * np.where(z > 0, 1.0, LEAK)
    if kind == "tanh":
        return dh * (1.0 - h * h)
    return dh * h * (1.0 - h)  # sigmoid


def _init_weight(rule: str | float, fan_in: int, fan_out: int, const: float,
                 rng: np.random.Generator) -> np.ndarray:
    if rule == "he":
        return rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)
    if rule == "xavier":
        return rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)
    if rule == "zero":
        return np.zeros((fan_in, fan_out))
    if rule == "constant":
        return np.full((fan_in, fan_out), float(const))
    if isinstance(rule, (int, float)) and not isinstance(rule, bool):
        return rng.standard_normal((fan_in, fan_out)) * float(rule)
    raise ValueError(f"unknown init rule {rule!r}")


class MLP:
    """Affine + activation hidden layers ``layer0..``, then a linear ``out`` layer.

    Parameters live in ``params`` (``"layer0.W"``, ``"layer0.b"``, ...,
    ``"out.b"``, in forward order) and are replaced, never modified in place,
    so an array handed to an observer keeps the value it had.
    """

    def __init__(self, fault: Fault, rng: np.random.Generator):
        if fault.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {fault.activation!r}")
        self.activation = fault.activation
        sizes = [fault.dim] + [fault.width] * fault.depth + [fault.num_classes]
        self.layers = [f"layer{i}" for i in range(fault.depth)] + ["out"]
        self.params: dict[str, np.ndarray] = {}
        for name, n_in, n_out in zip(self.layers, sizes[:-1], sizes[1:]):
            W = _init_weight(fault.init, n_in, n_out, fault.init_constant, rng)
            if name == "out" and fault.init not in ("zero", "constant"):
                W *= fault.out_scale  # small logits: the loss starts near ln(C)
            self.params[f"{name}.W"] = W
            bias = 0.0 if name == "out" else fault.bias_init
            self.params[f"{name}.b"] = np.full(n_out, float(bias))

    def forward(self, X: np.ndarray) -> tuple[np.ndarray, list]:
        """Logits, and the cache backward needs: (layer input, pre-activation, output)."""
        cache, h = [], X
        for name in self.layers[:-1]:
            z = h @ self.params[f"{name}.W"] + self.params[f"{name}.b"]
            out = _activate(self.activation, z)
            cache.append((h, z, out))
            h = out
        cache.append((h, None, None))
        return h @ self.params["out.W"] + self.params["out.b"], cache

    def hidden(self, X: np.ndarray) -> list[np.ndarray]:
        """The activation output of every hidden layer, first to last."""
        return [out for _, _, out in self.forward(X)[1][:-1]]

    def backward(self, cache: list, dlogits: np.ndarray) -> dict[str, np.ndarray]:
        """Gradients of the data loss for every parameter, keyed like ``params``."""
        grads: dict[str, np.ndarray] = {}
        h_in = cache[-1][0]
        grads["out.W"] = h_in.T @ dlogits
        grads["out.b"] = dlogits.sum(axis=0)
        dh = dlogits @ self.params["out.W"].T
        for name, (h_in, z, out) in zip(reversed(self.layers[:-1]), reversed(cache[:-1])):
            dz = _activation_grad(self.activation, z, out, dh)
            grads[f"{name}.W"] = h_in.T @ dz
            grads[f"{name}.b"] = dz.sum(axis=0)
            dh = dz @ self.params[f"{name}.W"].T
        return {k: grads[k] for k in self.params}  # forward order


def softmax_cross_entropy(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray, float]:
    """Mean cross-entropy, its gradient w.r.t. the logits, and the accuracy."""
    n = len(y)
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = float(-logp[np.arange(n), y].mean())
    dlogits = np.exp(logp)
    dlogits[np.arange(n), y] -= 1.0
    acc = float((logits.argmax(axis=1) == y).mean())
    return loss, dlogits / n, acc


def evaluate(net: MLP, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(loss, accuracy) on a whole set, without regularisation."""
    with np.errstate(all="ignore"):
        loss, _, acc = softmax_cross_entropy(net.forward(X)[0], y)
    return loss, acc


# ---------------------------------------------------------------- training

@dataclass(frozen=True)
class StepInfo:
    """What ``train`` passes to its callback after every step."""

    step: int
    loss: float
    train_acc: float
    val_loss: float | None
    val_acc: float | None
    findings: list


@dataclass
class TrainResult:
    """What a run did, with the trained network and its data for measuring it afterwards."""

    fault: str
    train_acc: float                     # on the whole training set, after the run
    val_acc: float
    losses: list[float]                  # training loss of every step run (with the L2 term)
    steps: int                           # steps actually run
    val_history: list[tuple[int, float, float]]  # (step, val_loss, val_acc)
    stopped: str | None                  # None, "observer", "callback" or "non-finite loss"
    seconds: float
    net: MLP
    data: Dataset
    findings: list = field(default_factory=list)


def resolve(spec: FaultSpec | Fault | str) -> tuple[str, Fault]:
    """Accept a FAULTS name, a FaultSpec or a bare Fault."""
    if isinstance(spec, str):
        spec = FAULTS[spec]
    if isinstance(spec, FaultSpec):
        return spec.name, spec.fault
    return "custom", spec


def build(spec: FaultSpec | Fault | str, seed: int = 0) -> tuple[MLP, Dataset]:
    """The freshly initialised network and the data that ``train`` would use."""
    _, fault = resolve(spec)
    return MLP(fault, np.random.default_rng([seed, 2])), make_data(fault, seed)


def train(spec: FaultSpec | Fault | str, observer: Any = None, seed: int = 0,
          steps: int | None = None,
          callback: Callable[[StepInfo], bool | None] | None = None) -> TrainResult:
    """Train with SGD (+momentum, +L2), reporting everything to ``observer``.

    Per step: ``observe_input`` always; then, if the observer wants layer
    statistics this step (``wants_layer_stats(step)``, assumed True when the
    method is missing), the parameters before the update (also always on
    step 0, for the init checks), the hidden activations in forward order,
    the gradients in forward order and the updates applied; finally
    ``observer.step``. Stops when ``observer.should_stop`` is set, when the
    callback returns True, or right after a non-finite loss was reported
    (parameters are NaN from then on, so further steps teach nothing).
    """
    t0 = time.perf_counter()
    name, fault = resolve(spec)
    steps = fault.steps if steps is None else steps
    net, data = build(fault, seed)
    rng = np.random.default_rng([seed, 3])
    wants = getattr(observer, "wants_layer_stats", None) if observer is not None else None
    velocity = {k: np.zeros_like(p) for k, p in net.params.items()}
    n_train, bs = len(data.y_train), min(fault.batch_size, len(data.y_train))
    order, cursor = rng.permutation(n_train), 0
    losses: list[float] = []
    val_history: list[tuple[int, float, float]] = []
    all_findings: list = []
    stopped, step = None, -1

    with np.errstate(all="ignore"):
        for step in range(steps):
            if cursor + bs > n_train:
                order, cursor = rng.permutation(n_train), 0
            idx = order[cursor:cursor + bs]
            cursor += bs
            Xb, yb = data.X_train[idx], data.y_train[idx]

            layer_stats = observer is not None and (wants is None or bool(wants(step)))
            if observer is not None:
                observer.observe_input(Xb)
            if layer_stats or (observer is not None and step == 0):
                for k, p in net.params.items():
                    observer.observe_parameter(k, p)

            logits, cache = net.forward(Xb)
            if layer_stats:
                for i, (_, _, h) in enumerate(cache[:-1]):
                    observer.observe_activation(f"layer{i}", h, kind=fault.activation)
            loss, dlogits, acc = softmax_cross_entropy(logits, yb)
            grads = net.backward(cache, dlogits)
            if fault.l2:
                loss += 0.5 * fault.l2 * float(sum((p * p).sum() for k, p in net.params.items()
                                                   if k.endswith(".W")))
                grads = {k: g + fault.l2 * net.params[k] if k.endswith(".W") else g
                         for k, g in grads.items()}
            if layer_stats:
                for k, g in grads.items():
                    observer.observe_gradient(k, g)
            for k, g in grads.items():
                velocity[k] = fault.momentum * velocity[k] - fault.lr * g
                if layer_stats:
                    observer.observe_update(k, velocity[k], param=net.params[k])
                net.params[k] = net.params[k] + velocity[k]
            losses.append(float(loss))

            val: dict[str, float] = {}
            if step % fault.val_every == 0 or step == steps - 1:
                val["val_loss"], val["val_acc"] = evaluate(net, data.X_val, data.y_val)
                val_history.append((step, val["val_loss"], val["val_acc"]))
            findings = []
            if observer is not None:
                findings = list(observer.step(step, loss=float(loss), train_acc=acc, **val) or [])
                all_findings.extend(findings)
            info = StepInfo(step, float(loss), acc, val.get("val_loss"), val.get("val_acc"),
                            findings)
            stopped = stop_reason(callback, info, float(loss), observer)
            if stopped:
                break
    all_findings.extend(last_findings(observer))

    _, train_acc = evaluate(net, data.X_train, data.y_train)
    _, val_acc = evaluate(net, data.X_val, data.y_val)
    return TrainResult(name, train_acc, val_acc, losses, step + 1, val_history, stopped,
                       time.perf_counter() - t0, net, data, all_findings)


def with_changes(spec: FaultSpec | str, **knobs: Any) -> FaultSpec:
    """A copy of a fault spec with some knobs changed, e.g. ``with_changes("none", lr=0.1)``."""
    spec = FAULTS[spec] if isinstance(spec, str) else spec
    return replace(spec, fault=replace(spec.fault, **knobs))
