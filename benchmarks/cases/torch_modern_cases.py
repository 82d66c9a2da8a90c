"""Modern architectures, healthy and with one fault each: a residual CNN with BatchNorm, a small
Transformer encoder (LayerNorm, GELU, AdamW with warmup), a GRU and a tanh RNN with gradient clipping.

The healthy ones are where a monitor must stay quiet: normalisation layers,
attention, gates and clipping all change what "normal" statistics look like.
"""
from __future__ import annotations

import torch

from . import data as datasets
from . import torch_checks as check
from .case import Proof, case
from .torch_loop import fit, warmup
from .torch_models import GRUClassifier, ResidualCNN, RNNClassifier, TinyTransformer


def sgd(model, lr=0.05):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)


def adamw(model, lr=1e-3):
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)


# -- residual CNN with BatchNorm ----------------------------------------------------------------

@case("torch/resnet-bn", framework="torch", steps=150, classes=4,
      about="healthy: residual CNN (conv-BN-ReLU, 2 basic blocks), SGD 0.05 + momentum")
def resnet_bn(mon, seed, steps):
    model = ResidualCNN()
    return check.learned(fit(mon, model, sgd(model), datasets.images(seed), steps=steps, seed=seed), 0.8)


@case("torch/resnet-dead-stem", framework="torch", steps=150, classes=4, twin="torch/resnet-bn", init=True,
      expected=("dead-relu",),
      about="residual CNN whose stem BatchNorm shift (beta) starts at -3: the ReLU after it almost never fires")
def resnet_dead_stem(mon, seed, steps):
    model = ResidualCNN(stem_shift=-3.0)
    data = datasets.images(seed)
    stem = check.outputs(model, data.x[:256], (torch.nn.ReLU,))[0]  # [N, C, H, W]
    fires = (stem > 0).float().mean(dim=(0, 2, 3))  # per channel: the fraction of positions where it fires
    fit(mon, model, sgd(model), data, steps=steps, seed=seed)
    return Proof(bool((fires < 0.01).all()), f"stem channels fire at {100 * fires.max():.2f}% of positions at "
                                             "most at init (a ReLU on a centred input: about 50%)")


@case("torch/resnet-raw-pixels", framework="torch", steps=150, classes=4, twin="torch/resnet-bn", fast=True,
      expected=("input-not-normalized",),
      about="residual CNN fed raw 0..255 pixel values instead of standardised ones")
def resnet_raw_pixels(mon, seed, steps):
    data = datasets.images(seed)
    for part in ("x", "x_val"):
        setattr(data, part, (getattr(data, part) * 40.0 + 128.0).clamp(0.0, 255.0))
    mean = data.x.mean(dim=(0, 2, 3))
    std = data.x.std(dim=(0, 2, 3))
    model = ResidualCNN()
    fit(mon, model, sgd(model), data, steps=steps, seed=seed)
    return Proof(bool((mean / std > 1).all()), "per-channel mean/std " + ", ".join(f"{v:.1f}" for v in mean / std))


@case("torch/resnet-lr-too-high", framework="torch", steps=150, classes=4, twin="torch/resnet-bn",
      expected=("loss-exploding", "loss-nan", "update-ratio-high", "dead-relu", "exploding-gradients"),
      also=("non-finite-values", "loss-not-decreasing", "vanishing-gradients", "vanishing-activations"),
      about="residual CNN, SGD learning rate 5 (100x the healthy 0.05)")
def resnet_lr_too_high(mon, seed, steps):
    model = ResidualCNN()
    return check.loss_blew_up(fit(mon, model, sgd(model, lr=5.0), datasets.images(seed), steps=steps, seed=seed))


# -- Transformer encoder ------------------------------------------------------------------------

@case("torch/transformer", framework="torch", steps=150, classes=4, fast=True,
      about="healthy: pre-LN Transformer encoder (2 layers, LayerNorm, GELU), AdamW 1e-3, 20 warmup steps")
def transformer(mon, seed, steps):
    model = TinyTransformer()
    opt = adamw(model)
    return check.learned(fit(mon, model, opt, datasets.sequences(seed), steps=steps, seed=seed,
                             schedule=warmup(opt, 20)), 0.8)


@case("torch/transformer-lr-too-low", framework="torch", steps=150, classes=4, twin="torch/transformer",
      expected=("update-ratio-low", "loss-not-decreasing"),
      about="the Transformer with AdamW learning rate 1e-7 (10000x too low)")
def transformer_lr_too_low(mon, seed, steps):
    model = TinyTransformer()
    opt = adamw(model, lr=1e-7)
    ratios = check.UpdateRatios(model, steps=steps)
    out = fit(mon, model, opt, datasets.sequences(seed), steps=steps, seed=seed, schedule=warmup(opt, 20),
              on_step=ratios)
    start, end = sum(out.losses[:10]) / 10, sum(out.losses[-10:]) / 10
    return Proof(end > 0.98 * start, f"loss {start:.3f} -> {end:.3f}; median update ratio {ratios.median:.1e}")


# -- recurrent networks with gradient clipping --------------------------------------------------

@case("torch/gru-clip", framework="torch", steps=150, classes=4, fast=True,
      about="healthy: GRU (64 units), Adam 3e-3, gradients clipped at norm 1")
def gru_clip(mon, seed, steps):
    model = GRUClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    return check.learned(fit(mon, model, opt, datasets.sequences(seed), steps=steps, seed=seed, clip=1.0), 0.8)


@case("torch/gru-lr-too-high", framework="torch", steps=150, classes=4, twin="torch/gru-clip",
      expected=("update-ratio-high", "loss-exploding", "exploding-gradients"),
      also=("loss-not-decreasing", "vanishing-gradients", "loss-nan", "non-finite-values"),
      about="the GRU with Adam learning rate 0.3 (100x): clipping cannot help, Adam's step does not depend on it")
def gru_lr_too_high(mon, seed, steps):
    model = GRUClassifier()
    ratios = check.UpdateRatios(model, steps=20)
    opt = torch.optim.Adam(model.parameters(), lr=0.3)
    out = fit(mon, model, opt, datasets.sequences(seed), steps=steps, seed=seed, clip=1.0, on_step=ratios)
    blew = check.loss_blew_up(out)
    return Proof(blew.ok, f"{blew.detail}; median update ratio {ratios.median:.2f} over the first "
                          f"{len(ratios.ratios)} steps")


@case("torch/rnn-clip", framework="torch", steps=200, classes=4,
      about="healthy: tanh RNN (64 units), SGD 0.2 + momentum, gradients clipped at norm 0.5")
def rnn_clip(mon, seed, steps):
    model = RNNClassifier()
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    return check.learned(fit(mon, model, opt, datasets.sequences(seed), steps=steps, seed=seed, clip=0.5), 0.8)


@case("torch/rnn-no-clip", framework="torch", steps=200, classes=4, twin="torch/rnn-clip",
      expected=("exploding-gradients", "loss-exploding"),
      also=("update-ratio-high", "loss-not-decreasing", "loss-nan", "non-finite-values"),
      about="the tanh RNN without gradient clipping: gradient norms spike through time")
def rnn_no_clip(mon, seed, steps):
    model = RNNClassifier()
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    out = fit(mon, model, opt, datasets.sequences(seed), steps=steps, seed=seed)
    start = sorted(out.grad_norms[:10])[5]
    peak = max(out.grad_norms)
    return Proof(peak > 20 * start, f"gradient norm {start:.2f} at the start, peak {peak:.3g} "
                                    f"(step {out.grad_norms.index(peak)})")
