"""vanishing-activations: activation spread collapses toward 0 with depth."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .base import Detection, rule
from .depth import stds_by_depth


@dataclass(frozen=True)
class Thresholds:
    #: deepest-to-first activation std ratio below which the spread has collapsed
    min_depth_ratio: float = 0.01
    #: any activation layer whose std is below this has effectively collapsed to a constant
    min_std: float = 1e-5
    #: sampled steps each layer's window must hold before judging
    min_steps: int = 3


@rule(
    "vanishing-activations", severity="warning", needs={"activation"}, thresholds=Thresholds,
    summary="The spread of activations collapses toward zero layer after layer: the weights are too small.",
    advice="Initialise with Xavier (std 1/sqrt(fan_in)) for tanh/sigmoid or He (std sqrt(2/fan_in)) for "
           "ReLU instead of a fixed small scale like 0.01, or add batch normalisation.",
    detects="Activation standard deviations that shrink with depth until the deep layers output almost "
            "constants.",
    why="The lecture's experiment: a 10-layer tanh network initialised with W = 0.01 * randn has "
        "activations that shrink toward zero layer after layer. The gradient on each weight is proportional "
        "to the layer's input, so the deep layers get almost no gradient and nothing learns.",
    how="std of each activation layer over the window of sampled steps, in depth order (the order layers "
        "were first seen); fires when the deepest layer's std is below `min_depth_ratio` x the first "
        "layer's (two layers or more), or when a layer's std is below `min_std` while the first layer's "
        "is not; each layer needs `min_steps` sampled steps first. Reported at the first layer below the ratio.",
    example="nnhealth warning vanishing-activations at step 20 [layer5]: activation std falls from 0.21 "
            "(layer0) to 3.1e-06 (layer7) (first_std=0.21, last_std=3.1e-06, ratio=1.5e-05, layers=8)",
)
def check(ctx, th: Thresholds):
    cols, stds = stds_by_depth(ctx.history, min_steps=th.min_steps)
    if len(cols) < 2:
        return None
    first, last = stds[0], stds[-1]
    if not (math.isfinite(first) and math.isfinite(last)) or first <= th.min_std:
        return []
    ratio = last / first
    collapsed = ((stds < first * th.min_depth_ratio) | (stds < th.min_std)).nonzero()[0]
    if ratio < th.min_depth_ratio or collapsed.size:
        names = ctx.history.names("activation")
        where = names[cols[collapsed[0]]] if collapsed.size else names[cols[-1]]
        return [Detection(where, f"activation std falls from {first:.2g} ({names[cols[0]]}) to {last:.2g} "
                                 f"({names[cols[-1]]})",
                          {"first_std": float(first), "last_std": float(last), "ratio": float(ratio),
                           "layers": len(cols), "stds": stds.tolist()}, key="network")]
    return []
