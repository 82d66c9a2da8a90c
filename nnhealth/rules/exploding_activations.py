"""exploding-activations: activation spread grows with depth."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .base import Detection, rule
from .depth import stds_by_depth


@dataclass(frozen=True)
class Thresholds:
    #: deepest-to-first activation std ratio above which the spread is exploding
    max_depth_ratio: float = 50.0
    #: a layer whose activation std exceeds this is exploding whatever the depth
    max_std: float = 1e4
    #: sampled steps each layer's window must hold before judging
    min_steps: int = 3
    #: layers with more dead units than this are left out: their spread measures the dead units, not the
    #: weight scale (a dead ResNet stem made the next layers look 70-80x "larger")
    max_dead_fraction: float = 0.5


@rule(
    "exploding-activations", severity="warning", needs={"activation"}, thresholds=Thresholds,
    summary="The spread of activations grows layer after layer: the weights are too large.",
    advice="Initialise with He (std sqrt(2/fan_in)) for ReLU-family or Xavier for tanh instead of a large "
           "fixed scale, or add batch/layer normalisation.",
    detects="Activation standard deviations of unbounded activations (ReLU family, linear...) that grow "
            "with depth.",
    why="With weights too large, each layer multiplies the spread of its input: unbounded activations grow "
        "geometrically with depth (bounded ones saturate instead), the loss starts huge and gradients "
        "explode. Xavier/He initialisation keeps the output variance equal to the input variance.",
    how="std of each unbounded activation layer over the window of sampled steps, in depth order; fires "
        "when the deepest layer's std is above `max_depth_ratio` x the first layer's, or any layer's std "
        "exceeds `max_std`; each layer needs `min_steps` sampled steps first, and layers with more than "
        "`max_dead_fraction` dead units are left out.",
    example="nnhealth warning exploding-activations at step 20 [layer3]: activation std grows from 11 "
            "(layer0) to 1.6e+04 (layer3) (first_std=11, last_std=1.6e+04, ratio=1.5e+03, layers=4)",
)
def check(ctx, th: Thresholds):
    h = ctx.history
    cols, stds = stds_by_depth(h, unbounded_only=True, min_steps=th.min_steps)
    if not len(cols):
        return None
    dead = (h.memo("activation_dead", lambda: h.latest_of("activation", "activation/dead_fraction"))[cols]
            > th.max_dead_fraction)
    if np.count_nonzero(dead):
        cols, stds = cols[~dead], stds[~dead]
        if not len(cols):
            return None
    first, last = stds[0], stds[-1]
    huge = (stds > th.max_std).nonzero()[0]
    ratio = last / first if first > 0 else float("inf") if last > 0 else 1.0
    if (len(cols) >= 2 and math.isfinite(ratio) and ratio > th.max_depth_ratio) or huge.size:
        names = h.names("activation")
        where = names[cols[huge[0]]] if huge.size else names[cols[-1]]
        return [Detection(where, f"activation std grows from {first:.2g} ({names[cols[0]]}) to {last:.2g} "
                                 f"({names[cols[-1]]})",
                          {"first_std": float(first), "last_std": float(last), "ratio": float(ratio),
                           "layers": len(cols), "stds": stds.tolist()}, key="network")]
    return []
