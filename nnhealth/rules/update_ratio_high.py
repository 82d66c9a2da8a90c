"""update-ratio-high: each update is a large fraction of the weights."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .base import Detection, rule, weights
from .update_ratio import ratios


@dataclass(frozen=True)
class Thresholds:
    #: median update/parameter norm ratio above which the learning rate is too high (healthy is ~1e-3)
    max_ratio: float = 0.1
    #: the same limit for the last weight tensor (the output layer), whose weights often start small: healthy
    #: output layers reach 0.11-0.21 early (SGD on a sigmoid MLP, a ResNet head), healthy hidden layers <= 0.071
    max_output_ratio: float = 0.3
    #: sampled steps the median is taken over
    points: int = 5


@rule(
    "update-ratio-high", severity="warning", needs={"update"}, thresholds=Thresholds,
    summary="Each update changes the weights by a large fraction of their size (well above ~1e-3): the "
            "learning rate is too high.",
    advice="Lower the learning rate (try 3-10x lower, searching in log space) or add warmup.",
    detects="Weight tensors whose update norm is a large fraction of their own norm, step after step.",
    why="The lecture's heuristic: the ratio of the update's norm to the parameter's norm should be about "
        "1e-3. Much larger, and each step rewrites a good part of the weights: training is unstable and "
        "ReLU units die.",
    how="ratio = ||theta_after - theta_before|| / ||theta_before|| for the step actually applied (whatever "
        "the optimizer), per weight tensor (2 or more dimensions); fires when its median over the last "
        "`points` sampled steps exceeds `max_ratio` (`max_output_ratio` for the last weight tensor in depth "
        "order, the output layer). The defaults sit well above the lecture's 1e-2: early in healthy training "
        "Adam takes steps of ~lr per element, a few 1e-2 in small layers, and hidden layers of the healthy "
        "runs of the detection benchmark stay at or below 0.071 while too-high learning rates give 0.077-0.27; "
        "output layers, whose weights often start small, reach 0.11-0.21 in healthy runs.",
    example="nnhealth warning update-ratio-high at step 50 [layer1.W]: updates are 0.31 of the weights' norm "
            "(ratio=0.31, healthy=0.001)",
)
def check(ctx, th: Thresholds):
    cols, found = ratios(ctx.history, th.points)
    if not len(cols):
        return None
    tensors = weights(ctx.history, "update")
    output = int(tensors[-1]) if len(tensors) >= 2 else -1  # the last weight tensor is the output layer's
    # the layers over the lower of the two limits, then each against its own (usually none is over)
    over = (found > min(th.max_ratio, th.max_output_ratio)).nonzero()[0]
    if not over.size:
        return []
    names = ctx.history.names("update")
    return [Detection(names[j], f"updates are {r:.2g} of the weights' norm", {"ratio": r, "healthy": 1e-3})
            for j, r in zip(cols[over].tolist(), found[over].tolist())
            if math.isfinite(r) and r > (th.max_output_ratio if j == output else th.max_ratio)]
