"""Real runs for the dashboard and report tests: a small numpy ReLU network with a known fault.

The second hidden layer starts with a bias of -4 while its inputs have a
spread of about 1, so its units almost never fire: a real dead-ReLU layer,
watched through nnhealth's manual API exactly as a user would.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnhealth import Monitor


@dataclass
class RecordedRun:
    logdir: str
    monitor: Monitor
    losses: list
    val_steps: list


def _softmax_ce(logits, y):
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = float(-logp[np.arange(len(y)), y].mean())
    grad = np.exp(logp)
    grad[np.arange(len(y)), y] -= 1.0
    return loss, grad / len(y), float((logits.argmax(1) == y).mean())


def record_run(logdir, steps: int = 30, dead_layer: str = "layer1", every: int = 1, dead_bias: float = -4.0,
               lr: float = 0.05, val_every: int = 5, seed: int = 0, **monitor_options) -> RecordedRun:
    """Train the faulty network for ``steps`` steps with a Monitor writing to ``logdir``."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((512, 8))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    Xv = rng.standard_normal((128, 8))
    yv = (Xv[:, 0] + 0.5 * Xv[:, 1] > 0).astype(int)
    params = {
        "layer0.W": rng.standard_normal((8, 32)) * np.sqrt(2 / 8), "layer0.b": np.zeros(32),
        f"{dead_layer}.W": rng.standard_normal((32, 32)) * np.sqrt(2 / 32), f"{dead_layer}.b": np.full(32, dead_bias),
        "out.W": rng.standard_normal((32, 2)) * 0.1, "out.b": np.zeros(2),
    }
    names = list(params)
    mon = Monitor(logdir=logdir, every=every, num_classes=2, console=False, **monitor_options)
    losses, val_steps = [], []
    for step in range(steps):
        idx = rng.integers(0, len(X), 64)
        xb, yb = X[idx], y[idx]
        mon.observe_input(xb)
        z0 = xb @ params["layer0.W"] + params["layer0.b"]
        h0 = np.maximum(z0, 0)
        z1 = h0 @ params[f"{dead_layer}.W"] + params[f"{dead_layer}.b"]
        h1 = np.maximum(z1, 0)
        mon.observe_activation("layer0", h0, kind="relu")
        mon.observe_activation(dead_layer, h1, kind="relu")
        logits = h1 @ params["out.W"] + params["out.b"]
        loss, dlogits, acc = _softmax_ce(logits, yb)
        dh1 = dlogits @ params["out.W"].T
        dz1 = dh1 * (z1 > 0)
        dh0 = dz1 @ params[f"{dead_layer}.W"].T
        dz0 = dh0 * (z0 > 0)
        grads = dict(zip(names, (xb.T @ dz0, dz0.sum(0), h0.T @ dz1, dz1.sum(0), h1.T @ dlogits, dlogits.sum(0))))
        for name in names:
            mon.observe_parameter(name, params[name])
            mon.observe_gradient(name, grads[name])
            update = -lr * grads[name]
            mon.observe_update(name, update, param=params[name])
            params[name] = params[name] + update
        metrics = {}
        if step % val_every == 0 or step == steps - 1:
            h = np.maximum(np.maximum(Xv @ params["layer0.W"] + params["layer0.b"], 0) @ params[f"{dead_layer}.W"]
                           + params[f"{dead_layer}.b"], 0)
            metrics["val_loss"], _, metrics["val_acc"] = _softmax_ce(h @ params["out.W"] + params["out.b"], yv)
            val_steps.append(step)
        losses.append(loss)
        mon.step(step, loss=loss, train_acc=acc, **metrics)
    mon.close()
    return RecordedRun(str(logdir), mon, losses, val_steps)
