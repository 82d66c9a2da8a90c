"""Independent checks for the numpy cases: plain numpy on the demo network's own arrays.

Each measures the mechanism a fault is named after (activations that shrink,
units that never fire, rows that stay identical...) on the network exactly
as the run built it (:func:`nnhealth.demo.network.build` with the run's seed
makes the same initial weights and data), or on what the run produced.
"""
from __future__ import annotations

import numpy as np

from nnhealth.demo.network import MLP, Dataset, FaultSpec, TrainResult, build, softmax_cross_entropy

from .case import Proof

#: training inputs the initial-state checks look at
PROBE = 512


def initial(spec: FaultSpec, seed: int) -> tuple[MLP, Dataset, np.ndarray]:
    net, data = build(spec, seed)
    return net, data, data.X_train[:PROBE]


def layer_stds(spec: FaultSpec, seed: int) -> np.ndarray:
    """Std of every hidden layer's output at initialisation, first to last."""
    net, _, X = initial(spec, seed)
    return np.array([h.std() for h in net.hidden(X)])


def gradient_norms(spec: FaultSpec, seed: int) -> dict[str, float]:
    """Norm of each weight matrix's gradient at initialisation, on one probe batch."""
    net, data, X = initial(spec, seed)
    logits, cache = net.forward(X)
    _, dlogits, _ = softmax_cross_entropy(logits, data.y_train[:PROBE])
    grads = net.backward(cache, dlogits)
    return {k: float(np.linalg.norm(g)) for k, g in grads.items() if k.endswith(".W")}


def learned(result: TrainResult, min_val_acc: float) -> Proof:
    """A healthy run learned: its loss fell by half and it generalises."""
    start, end = np.mean(result.losses[:5]), np.mean(result.losses[-10:])
    ok = end < 0.5 * start and result.val_acc >= min_val_acc
    return Proof(ok, f"loss {start:.2f} -> {end:.2f}, val acc {result.val_acc:.2f}")


def identical_units(result: TrainResult, layer: str = "layer0") -> Proof:
    """After training, every unit of ``layer`` still has the same incoming weights."""
    W = result.net.params[f"{layer}.W"]  # [fan_in, units]
    spread = float(np.ptp(W, axis=1).max())
    return Proof(spread < 1e-9, f"{layer}: {W.shape[1]} units, largest spread across units {spread:.1g} "
                                f"after {result.steps} steps")


def never_fired(spec: FaultSpec, seed: int) -> Proof:
    """ReLU units that output 0 for every probe input at initialisation."""
    net, _, X = initial(spec, seed)
    dead = [float(np.mean((h > 0).mean(axis=0) == 0)) for h in net.hidden(X)]
    return Proof(min(dead) > 0.5, "units that never fire at init: " + ", ".join(f"{100 * d:.0f}%" for d in dead))


def saturated(spec: FaultSpec, seed: int) -> Proof:
    """tanh outputs beyond |0.99| at initialisation, per hidden layer."""
    net, _, X = initial(spec, seed)
    fractions = [float(np.mean(np.abs(h) > 0.99)) for h in net.hidden(X)]
    return Proof(np.median(fractions) > 0.5,
                 "outputs with |tanh| > 0.99 at init: " + ", ".join(f"{100 * f:.0f}%" for f in fractions))


def inputs(spec: FaultSpec, seed: int) -> np.ndarray:
    """The training inputs exactly as the network receives them."""
    return build(spec, seed)[1].X_train


def weights_moved(spec: FaultSpec, seed: int, result: TrainResult) -> float:
    """The largest ||W_end - W_init|| / ||W_init|| over the weight matrices: how far training took them."""
    start, _ = build(spec, seed)
    return max(float(np.linalg.norm(result.net.params[k] - w) / np.linalg.norm(w))
               for k, w in start.params.items() if k.endswith(".W"))
