"""Cases on the numpy demo network (:mod:`nnhealth.demo.network`), reported through the manual API.

Three healthy recipes (a ReLU MLP, a deep tanh MLP with Xavier
initialisation, a sigmoid MLP) and the lecture's classic faults, each
injected into one of them by changing the knobs named in its ``about``.
"""
from __future__ import annotations

import numpy as np

from nnhealth.demo.network import FAULTS, train, with_changes

from . import numpy_checks as check
from .case import Proof, case

#: healthy: ReLU 2x128, He init, normalised inputs, SGD 0.02 + momentum 0.9, light L2
MLP_RELU = FAULTS["none"]
#: healthy: tanh 8x256 with Xavier initialisation (the lecture's deep-network experiment, done right)
DEEP_TANH = with_changes("none", depth=8, width=256, activation="tanh", init="xavier", l2=0.0)
#: healthy: sigmoid 2x128, Xavier initialisation, SGD 0.5 (sigmoid's small slope wants a larger step), no L2
SIGMOID = with_changes("none", activation="sigmoid", init="xavier", lr=0.5, l2=0.0)


def _train(spec, mon, seed, steps):
    return train(spec, observer=mon, seed=seed, steps=steps)


# -- healthy twins ------------------------------------------------------------------------------

@case("np/mlp-relu", framework="numpy", steps=300, classes=10, fast=True,
      about="healthy: ReLU 2x128, He init, SGD 0.02 + momentum, L2 1e-4")
def mlp_relu(mon, seed, steps):
    return check.learned(_train(MLP_RELU, mon, seed, steps), min_val_acc=0.8)


@case("np/deep-tanh", framework="numpy", steps=150, classes=10,
      about="healthy: tanh 8x256, Xavier init, SGD 0.02 + momentum")
def deep_tanh(mon, seed, steps):
    return check.learned(_train(DEEP_TANH, mon, seed, steps), min_val_acc=0.8)


@case("np/mlp-sigmoid", framework="numpy", steps=300, classes=10,
      about="healthy: sigmoid 2x128, Xavier init, SGD 0.5 + momentum, no L2")
def mlp_sigmoid(mon, seed, steps):
    return check.learned(_train(SIGMOID, mon, seed, steps), min_val_acc=0.8)


# -- initialisation faults ----------------------------------------------------------------------

@case("np/small-init", framework="numpy", steps=150, classes=10, twin="np/deep-tanh", init=True,
      expected=("vanishing-activations", "vanishing-gradients"),
      also=("update-ratio-low", "loss-not-decreasing"),
      about="deep tanh, W = 0.01*randn instead of Xavier: activations shrink layer after layer")
def small_init(mon, seed, steps):
    spec = with_changes(DEEP_TANH, init=0.01)
    _train(spec, mon, seed, steps)
    stds = check.layer_stds(spec, seed)
    return Proof(stds[-1] < 0.01 * stds[0], f"activation std at init {stds[0]:.2g} (layer0) -> {stds[-1]:.2g} "
                                            f"(layer{len(stds) - 1})")


@case("np/large-init", framework="numpy", steps=150, classes=10, twin="np/deep-tanh", init=True,
      expected=("saturated-activations", "exploding-gradients"), also=("initial-loss-unexpected",),
      about="deep tanh, W = 1.0*randn instead of Xavier: units pinned at -1 and +1, gradients grow toward the input")
def large_init(mon, seed, steps):
    spec = with_changes(DEEP_TANH, init=1.0)
    _train(spec, mon, seed, steps)
    pinned = check.saturated(spec, seed)
    norms = check.gradient_norms(spec, seed)
    growth = norms["layer0.W"] / norms["layer7.W"]
    return Proof(pinned.ok and growth > 100, f"{pinned.detail}; gradient norm layer0.W / layer7.W = {growth:.0f}")


@case("np/zero-init", framework="numpy", steps=200, classes=10, twin="np/mlp-sigmoid", init=True, fast=True,
      expected=("weights-symmetric",), also=("update-ratio-high", "loss-not-decreasing", "saturated-activations"),
      about="sigmoid MLP, every weight zero: all units of a layer compute and learn the same")
def zero_init(mon, seed, steps):
    return check.identical_units(_train(with_changes(SIGMOID, init="zero"), mon, seed, steps))


@case("np/constant-init", framework="numpy", steps=200, classes=10, twin="np/mlp-relu", init=True,
      expected=("weights-symmetric",), also=("update-ratio-high", "loss-not-decreasing", "dead-relu"),
      about="ReLU MLP, every weight 0.05: no symmetry breaking")
def constant_init(mon, seed, steps):
    return check.identical_units(_train(with_changes(MLP_RELU, init="constant"), mon, seed, steps))


@case("np/negative-bias", framework="numpy", steps=200, classes=10, twin="np/mlp-relu", init=True, fast=True,
      expected=("dead-relu",), also=("vanishing-activations", "loss-not-decreasing"),
      about="ReLU MLP, hidden biases start at -5: most units never fire")
def negative_bias(mon, seed, steps):
    spec = with_changes(MLP_RELU, bias_init=-5.0)
    _train(spec, mon, seed, steps)
    return check.never_fired(spec, seed)


# -- architecture -------------------------------------------------------------------------------

@case("np/deep-sigmoid", framework="numpy", steps=200, classes=10, twin="np/mlp-sigmoid",
      expected=("vanishing-gradients",),
      also=("loss-not-decreasing", "update-ratio-low", "saturated-activations", "vanishing-activations"),
      about="sigmoid MLP 10 layers deep (Xavier init): each layer's slope <= 1/4 starves the first layers")
def deep_sigmoid(mon, seed, steps):
    spec = with_changes(SIGMOID, depth=10)
    _train(spec, mon, seed, steps)
    norms = check.gradient_norms(spec, seed)
    ratio = norms["layer0.W"] / norms["out.W"]
    return Proof(ratio < 1e-3, f"gradient norm at init layer0.W / out.W = {ratio:.1e}")


@case("np/too-small-model", framework="numpy", steps=300, classes=10, twin="np/mlp-relu",
      expected=("underfitting",),
      about="ReLU MLP with one hidden layer of 2 units: not enough capacity for 10 classes")
def too_small(mon, seed, steps):
    result = _train(with_changes(MLP_RELU, depth=1, width=2), mon, seed, steps)
    return Proof(result.train_acc < 0.6 and abs(result.train_acc - result.val_acc) < 0.05,
                 f"train acc {result.train_acc:.2f}, val acc {result.val_acc:.2f} after {result.steps} steps")


# -- learning rate ------------------------------------------------------------------------------

@case("np/lr-too-high", framework="numpy", steps=100, classes=10, twin="np/mlp-relu", fast=True,
      expected=("loss-exploding", "loss-nan", "update-ratio-high", "dead-relu"),
      also=("non-finite-values", "vanishing-activations", "loss-not-decreasing"),
      about="ReLU MLP, SGD learning rate 2 (100x the healthy 0.02)")
def lr_too_high(mon, seed, steps):
    result = _train(with_changes(MLP_RELU, lr=2.0), mon, seed, steps)
    losses = np.asarray(result.losses)
    worst = float(np.max(np.where(np.isfinite(losses), losses, np.inf)))
    return Proof(worst > 3 * losses[0], f"loss {losses[0]:.2f} at step 0, up to {worst:.3g} by step {result.steps - 1}")


@case("np/lr-too-low", framework="numpy", steps=200, classes=10, twin="np/mlp-relu", fast=True,
      expected=("update-ratio-low", "loss-not-decreasing"),
      about="ReLU MLP, SGD learning rate 1e-6 (20000x too low)")
def lr_too_low(mon, seed, steps):
    spec = with_changes(MLP_RELU, lr=1e-6)
    result = _train(spec, mon, seed, steps)
    moved = check.weights_moved(spec, seed, result)
    start, end = np.mean(result.losses[:5]), np.mean(result.losses[-10:])
    return Proof(moved < 0.01 and end > 0.95 * start,
                 f"weights moved at most {moved:.1e} of their norm in {result.steps} steps; "
                 f"loss {start:.3f} -> {end:.3f}")


# -- data ---------------------------------------------------------------------------------------

@case("np/unnormalized-input", framework="numpy", steps=200, classes=10, twin="np/mlp-relu", fast=True,
      expected=("input-not-normalized",),
      also=("initial-loss-unexpected", "loss-nan", "loss-exploding", "exploding-gradients", "non-finite-values"),
      about="ReLU MLP on raw features: offset +50, scales from 1 to 1000")
def unnormalized(mon, seed, steps):
    spec = with_changes(MLP_RELU, input_scale=(1.0, 1000.0), input_offset=50.0)
    _train(spec, mon, seed, steps)
    X = check.inputs(spec, seed)
    mean, std = X.mean(axis=0), X.std(axis=0)
    centred = float(np.median(np.abs(mean) / std))
    return Proof(centred > 1 or std.max() / std.min() > 100,
                 f"median |mean|/std of the features {centred:.2g}, stds from {std.min():.2g} to {std.max():.2g}")


@case("np/all-positive-input", framework="numpy", steps=300, classes=10, twin="np/mlp-relu",
      expected=("input-not-normalized",),
      about="ReLU MLP on features in [0, 1] like raw pixel intensities (mean 0.5, std 0.12), not zero-centred")
def all_positive(mon, seed, steps):
    spec = with_changes(MLP_RELU, input_scale=(0.12, 0.12), input_offset=0.5)
    _train(spec, mon, seed, steps)
    X = check.inputs(spec, seed)
    positive = float(np.mean(X > 0))
    centred = float(np.median(X.mean(axis=0) / X.std(axis=0)))
    return Proof(positive > 0.999 and centred > 1,
                 f"{100 * positive:.2f}% of input values positive, median mean/std of the features {centred:.1f}")


@case("np/tiny-train-set", framework="numpy", steps=300, classes=10, twin="np/mlp-relu",
      expected=("overfitting",),
      about="ReLU MLP 2x512 without L2 on 60 training samples: memorises, does not generalise")
def tiny_train_set(mon, seed, steps):
    result = _train(with_changes(MLP_RELU, n_train=60, width=512, l2=0.0), mon, seed, steps)
    return Proof(result.train_acc - result.val_acc > 0.3,
                 f"train acc {result.train_acc:.2f}, val acc {result.val_acc:.2f}")
