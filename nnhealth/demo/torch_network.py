"""The demo network in PyTorch: the same model, data and faults as :mod:`.network`, watched with two lines.

Where the numpy demo reports every array through the manual API, this one is
an ordinary PyTorch training loop: the monitor is attached with
``mon.watch(model, optimizer)`` and told about each step with
``mon.step(step, loss=loss, ...)``, the loss tensor itself (no ``.item()``).
Faults, their knobs and the synthetic data are those of :data:`.network.FAULTS`,
so ``nnhealth demo --framework torch`` shows the same diagnoses.

Each hidden layer is a :class:`Dense` module that applies its activation as a
function (``F.relu(...)`` inside ``forward``), so nnhealth names it after the
layer: ``layer0.relu``, with weights ``layer0.weight``.
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .network import (
    ACTIVATIONS,
    FAULTS,
    LEAK,
    Dataset,
    Fault,
    FaultSpec,
    StepInfo,
    TrainResult,
    make_data,
    resolve,
    with_changes,
)
from .stopping import last_findings, stop_reason

__all__ = ["FAULTS", "Dense", "TorchMLP", "build", "train", "with_changes"]

_ACTIVATE = {
    "relu": F.relu,
    "leaky_relu": lambda z: F.leaky_relu(z, LEAK),
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
}


class Dense(nn.Linear):
    """A fully-connected layer followed by its activation, applied as a function."""

    def __init__(self, n_in: int, n_out: int, activation: str):
        super().__init__(n_in, n_out)
        if activation not in _ACTIVATE:
            raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")
        self.activation = activation

    def forward(self, x):
        return _ACTIVATE[self.activation](super().forward(x))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation={self.activation}"


def _init_(w: torch.Tensor, rule, const: float, g: torch.Generator) -> None:
    """The numpy demo's initialisation rules, on a ``weight[out, in]``."""
    fan_in = w.shape[1]
    with torch.no_grad():
        if rule == "he":
            w.normal_(0.0, math.sqrt(2.0 / fan_in), generator=g)
        elif rule == "xavier":
            w.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=g)
        elif rule == "zero":
            w.zero_()
        elif rule == "constant":
            w.fill_(float(const))
        elif isinstance(rule, (int, float)) and not isinstance(rule, bool):
            w.normal_(0.0, float(rule), generator=g)
        else:
            raise ValueError(f"unknown init rule {rule!r}")


class TorchMLP(nn.Sequential):
    """Hidden layers ``layer0..`` (:class:`Dense`), then a linear ``out`` layer."""

    def __init__(self, fault: Fault, seed: int = 0):
        sizes = [fault.dim] + [fault.width] * fault.depth
        layers = [(f"layer{i}", Dense(n_in, n_out, fault.activation))
                  for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]))]
        super().__init__(OrderedDict(layers + [("out", nn.Linear(sizes[-1], fault.num_classes))]))
        g = torch.Generator().manual_seed(seed)
        for name, layer in self.named_children():
            _init_(layer.weight, fault.init, fault.init_constant, g)
            if name == "out" and fault.init not in ("zero", "constant"):
                with torch.no_grad():
                    layer.weight.mul_(fault.out_scale)  # small logits: the loss starts near ln(C)
            nn.init.constant_(layer.bias, 0.0 if name == "out" else fault.bias_init)


def build(spec: FaultSpec | Fault | str, seed: int = 0, device="cpu") -> tuple[TorchMLP, Dataset]:
    """The freshly initialised network and the data that ``train`` would use."""
    _, fault = resolve(spec)
    return TorchMLP(fault, seed).to(device), make_data(fault, seed)


def _weights_l2(model: nn.Module) -> torch.Tensor:
    return sum(p.pow(2).sum() for n, p in model.named_parameters() if n.endswith("weight"))


@torch.no_grad()
def evaluate(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(loss, accuracy) on a whole set, in eval mode (which the monitor does not record)."""
    was = model.training
    model.eval()
    logits = model(X)
    model.train(was)
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def train(spec: FaultSpec | Fault | str, observer: Any = None, seed: int = 0, steps: int | None = None,
          callback: Callable[[StepInfo], bool | None] | None = None, device="cpu") -> TrainResult:
    """Train with SGD (+momentum, +L2), watched by ``observer`` (a :class:`nnhealth.Monitor`).

    The observer is attached with ``observer.watch(model, optimizer)`` and
    called once per step with ``observer.step(step, loss=loss, train_acc=acc,
    val_loss=..., val_acc=...)``, loss and accuracy as tensors. Stops when
    ``observer.should_stop`` is set, when the callback returns True, or right
    after a non-finite loss.
    """
    # the small-init fault's activations and gradients shrink into subnormal floats, which a CPU
    # computes many times slower; flushing them to zero changes no result that matters here
    flushed = torch.device(device).type == "cpu" and torch.set_flush_denormal(True)
    try:
        return _train(spec, observer, seed, steps, callback, device)
    finally:
        if flushed:
            torch.set_flush_denormal(False)


def _train(spec, observer, seed, steps, callback, device) -> TrainResult:
    t0 = time.perf_counter()
    name, fault = resolve(spec)
    steps = fault.steps if steps is None else steps
    model, data = build(fault, seed, device)
    X_train = torch.as_tensor(data.X_train, dtype=torch.float32, device=device)
    y_train = torch.as_tensor(data.y_train, dtype=torch.long, device=device)
    X_val = torch.as_tensor(data.X_val, dtype=torch.float32, device=device)
    y_val = torch.as_tensor(data.y_val, dtype=torch.long, device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=fault.lr, momentum=fault.momentum)
    if observer is not None:
        observer.watch(model, optimizer)
    rng = np.random.default_rng([seed, 3])
    n_train, bs = len(data.y_train), min(fault.batch_size, len(data.y_train))
    order, cursor = rng.permutation(n_train), 0
    losses: list[float] = []
    val_history: list[tuple[int, float, float]] = []
    all_findings: list = []
    stopped, step = None, -1

    for step in range(steps):
        if cursor + bs > n_train:
            order, cursor = rng.permutation(n_train), 0
        idx = torch.as_tensor(order[cursor:cursor + bs], device=device)
        cursor += bs
        Xb, yb = X_train[idx], y_train[idx]

        logits = model(Xb)
        loss = F.cross_entropy(logits, yb)
        if fault.l2:
            loss = loss + 0.5 * fault.l2 * _weights_l2(model)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        acc = (logits.detach().argmax(1) == yb).float().mean()

        val: dict[str, float] = {}
        if step % fault.val_every == 0 or step == steps - 1:
            val["val_loss"], val["val_acc"] = evaluate(model, X_val, y_val)
            val_history.append((step, val["val_loss"], val["val_acc"]))
        findings = []
        if observer is not None:
            findings = list(observer.step(step, loss=loss, train_acc=acc, **val) or [])
            all_findings.extend(findings)
        value = loss.item()  # the demo's own bookkeeping; nnhealth took the tensor itself
        losses.append(value)
        info = StepInfo(step, value, float(acc), val.get("val_loss"), val.get("val_acc"), findings)
        stopped = stop_reason(callback, info, value, observer)
        if stopped:
            break
    all_findings.extend(last_findings(observer))

    _, train_acc = evaluate(model, X_train, y_train)
    _, val_acc = evaluate(model, X_val, y_val)
    return TrainResult(name, train_acc, val_acc, losses, step + 1, val_history, stopped,
                       time.perf_counter() - t0, model, data, all_findings)
