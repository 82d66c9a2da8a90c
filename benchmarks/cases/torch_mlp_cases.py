"""PyTorch MLP cases, watched with ``mon.watch(model, optimizer)``.

Three healthy recipes (a 2-layer ReLU MLP with Adam, a 6-layer ReLU MLP
with SGD + momentum, the same with Adam) and faults injected into them: bad
initial scales, a learning rate far too high, NaN in the data, a loss on
the wrong scale.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import data as datasets
from . import torch_checks as check
from .case import Proof, case
from .torch_loop import fit
from .torch_models import MLP


def adam(model, lr=1e-3):
    return torch.optim.Adam(model.parameters(), lr=lr)


def sgd(model, lr=0.02):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)


# -- healthy twins ------------------------------------------------------------------------------

@case("torch/mlp-adam", framework="torch", steps=200, classes=10, fast=True,
      about="healthy: ReLU 2x128, He init, Adam 1e-3")
def mlp_adam(mon, seed, steps):
    model = MLP()
    return check.learned(fit(mon, model, adam(model), datasets.vectors(seed), steps=steps, seed=seed), 0.8)


@case("torch/deep-mlp-sgd", framework="torch", steps=300, classes=10,
      about="healthy: ReLU 6x128, He init, SGD 0.02 + momentum, weight decay 1e-4")
def deep_mlp_sgd(mon, seed, steps):
    model = MLP(depth=6)
    return check.learned(fit(mon, model, sgd(model), datasets.vectors(seed, n_train=5000), steps=steps,
                             seed=seed), 0.8)


@case("torch/deep-mlp-adam", framework="torch", steps=200, classes=10,
      about="healthy: ReLU 6x128, He init, Adam 1e-3")
def deep_mlp_adam(mon, seed, steps):
    model = MLP(depth=6)
    return check.learned(fit(mon, model, adam(model), datasets.vectors(seed, n_train=5000), steps=steps,
                             seed=seed), 0.8)


# -- faults -------------------------------------------------------------------------------------

def _activation_growth(model: MLP, x) -> tuple[float, float]:
    stds = [h.std().item() for h in check.outputs(model, x, (torch.nn.ReLU,))]
    return stds[0], stds[-1]


@case("torch/large-init-sgd", framework="torch", steps=300, classes=10, twin="torch/deep-mlp-sgd", init=True,
      expected=("exploding-activations", "initial-loss-unexpected"),
      also=("loss-nan", "loss-exploding", "non-finite-values", "exploding-gradients", "update-ratio-high"),
      about="ReLU 6x128 initialised at 3x the He scale, SGD: activations and the first loss blow up")
def large_init_sgd(mon, seed, steps):
    model = MLP(depth=6, gain=3.0)
    data = datasets.vectors(seed, n_train=5000)
    first, last = _activation_growth(model, data.x[:512])
    fit(mon, model, sgd(model), data, steps=steps, seed=seed)
    return Proof(last > 50 * first, f"activation std at init {first:.2g} (first ReLU) -> {last:.3g} (last)")


@case("torch/large-init-adam", framework="torch", steps=200, classes=10, twin="torch/deep-mlp-adam", init=True,
      fast=True,
      expected=("exploding-activations", "initial-loss-unexpected"),
      about="ReLU 6x128 initialised at 3x the He scale, Adam: activations grow layer after layer")
def large_init_adam(mon, seed, steps):
    model = MLP(depth=6, gain=3.0)
    data = datasets.vectors(seed, n_train=5000)
    first, last = _activation_growth(model, data.x[:512])
    fit(mon, model, adam(model), data, steps=steps, seed=seed)
    return Proof(last > 50 * first, f"activation std at init {first:.2g} (first ReLU) -> {last:.3g} (last)")


@case("torch/plateau-start", framework="torch", steps=300, classes=10, twin="torch/deep-mlp-sgd",
      expected=("init-plateau",), also=("loss-not-decreasing",),
      about="ReLU 6x128 initialised at 0.6x the He scale, SGD: the loss sits at ln(10), then drops")
def plateau_start(mon, seed, steps):
    model = MLP(depth=6, gain=0.6)
    out = fit(mon, model, sgd(model), datasets.vectors(seed, n_train=5000), steps=steps, seed=seed)
    start = sum(out.losses[:10]) / 10
    flat = next((i for i, v in enumerate(out.losses) if v < 0.95 * start), len(out.losses))
    end = sum(out.losses[-10:]) / 10
    return Proof(flat >= 50 and end < 0.5 * start,
                 f"loss stayed within 5% of {start:.2f} for {flat} steps, then fell to {end:.2f}")


@case("torch/adam-lr-too-high", framework="torch", steps=200, classes=10, twin="torch/mlp-adam", fast=True,
      expected=("update-ratio-high", "loss-exploding", "dead-relu"), also=("loss-not-decreasing",),
      about="ReLU 2x128, Adam learning rate 0.1 (100x the usual 1e-3)")
def adam_lr_too_high(mon, seed, steps):
    model = MLP()
    return check.loss_blew_up(fit(mon, model, adam(model, lr=0.1), datasets.vectors(seed), steps=steps, seed=seed))


@case("torch/nan-in-data", framework="torch", steps=200, classes=10, twin="torch/mlp-adam", fast=True,
      expected=("non-finite-values", "loss-nan"), also=("exploding-gradients",),  # NaN gradients are non-finite
      about="ReLU 2x128 with Adam; 4 of the 2000 training samples hold a NaN feature")
def nan_in_data(mon, seed, steps):
    model = MLP()
    data = datasets.vectors(seed)
    g = torch.Generator().manual_seed(seed)
    bad = torch.randperm(len(data.x), generator=g)[:4]
    data.x[bad, 3] = float("nan")
    out = fit(mon, model, adam(model), data, steps=steps, seed=seed)
    poisoned = not all(math.isfinite(v) for v in out.losses)
    return Proof(int(torch.isnan(data.x).sum()) == 4 and poisoned,
                 f"{int(torch.isnan(data.x).any(1).sum())} samples with NaN; loss not finite from step "
                 f"{next((i for i, v in enumerate(out.losses) if not math.isfinite(v)), None)}")


@case("torch/summed-loss", framework="torch", steps=200, classes=10, twin="torch/mlp-adam", fast=True,
      expected=("initial-loss-unexpected",),
      about="ReLU 2x128 with Adam; cross-entropy summed over the batch of 64 instead of averaged")
def summed_loss(mon, seed, steps):
    model = MLP()
    out = fit(mon, model, adam(model), datasets.vectors(seed), steps=steps, seed=seed,
              loss_fn=lambda logits, y: F.cross_entropy(logits, y, reduction="sum"))
    ratio = out.losses[0] / math.log(10)
    return Proof(ratio > 10, f"first loss {out.losses[0]:.1f} = {ratio:.0f}x ln(10)")
