"""vanishing-gradients: gradient norms tiny, or far smaller in some layers than others."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Detection, rule
from .gradients import grad_norms_by_depth


@dataclass(frozen=True)
class Thresholds:
    #: mean |gradient| of a weight tensor below which it is not learning
    min_mean_abs: float = 1e-7
    #: smallest-to-largest gradient norm ratio across weight layers
    min_layer_ratio: float = 1e-3
    #: sampled steps the medians are taken over
    points: int = 3


@rule(
    "vanishing-gradients", severity="warning", needs={"gradient"}, thresholds=Thresholds,
    summary="Gradient norms are tiny, or thousands of times smaller in some layers than in others.",
    advice="Use Xavier/He initialisation, ReLU-family activations instead of deep sigmoid/tanh stacks, "
           "batch normalisation or residual connections.",
    detects="Weight tensors whose gradients are vanishingly small, in absolute terms or relative to the "
            "other layers.",
    why="A weight's update is proportional to its gradient: a layer whose gradient vanishes does not learn. "
        "The lecture shows why: with small weights the activations shrink with depth, and the gradient on a "
        "weight is proportional to its input, so it vanishes too; saturated sigmoid/tanh units multiply "
        "the backward signal by ~0.",
    how="Median over the last `points` sampled steps of each weight tensor's gradient L2 norm and mean "
        "|gradient| (weights: tensors of 2 or more dimensions, in depth order); fires when a tensor's mean "
        "|gradient| is below `min_mean_abs`, or when the smallest norm is below `min_layer_ratio` x the "
        "largest. Reported at the weakest tensor.",
    example="nnhealth warning vanishing-gradients at step 30 [layer7.W]: gradient norm is 2.1e-09, "
            "3.4e-07 of the largest (layer0.W) (norm=2.1e-09, largest_norm=0.0062, ratio=3.4e-07)",
)
def check(ctx, th: Thresholds):
    cols, norms, mean_abs = grad_norms_by_depth(ctx.history, th.points)
    if not len(cols):
        return None
    names = ctx.history.names("gradient")
    first = ctx.history.series(names[cols[0]], "gradient/norm")
    if first is None or len(first) < th.points:
        return None
    ok = np.isfinite(norms)
    if not ok.any():
        return None  # non-finite: exploding-gradients' business
    largest = float(np.max(norms[ok]))
    weakest = int(np.where(ok, norms, np.inf).argmin())
    ratio = float(norms[weakest] / largest) if largest > 0 else 0.0
    tiny = (ok & (mean_abs < th.min_mean_abs)).nonzero()[0]
    if tiny.size or (len(cols) >= 2 and ratio < th.min_layer_ratio):
        i = int(tiny[0]) if tiny.size else weakest
        strongest = names[cols[int(np.nanargmax(np.where(ok, norms, -1)))]]
        share = norms[i] / largest if largest else 0
        return [Detection(names[cols[i]], f"gradient norm is {norms[i]:.2g}, {share:.2g} of the largest ({strongest})",
                          {"norm": float(norms[i]), "mean_abs": float(mean_abs[i]), "largest_norm": largest,
                           "ratio": float(norms[i] / largest) if largest else 0.0}, key="network")]
    return []
