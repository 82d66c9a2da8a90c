"""update-ratio-high: each update is a large fraction of the weights."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Detection, rule
from .update_ratio import ratios


@dataclass(frozen=True)
class Thresholds:
    #: median update/parameter norm ratio above which the learning rate is too high (healthy is ~1e-3)
    max_ratio: float = 0.1
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
        "`points` sampled steps exceeds `max_ratio`. The default sits well above the lecture's 1e-2: early in "
        "healthy training a small output layer (weights that start small) sees ratios up to ~0.07 with SGD "
        "and momentum (measured on the healthy demo network), and Adam takes steps of ~lr per element, which "
        "gives a few 1e-2 in small layers; runs whose learning rate is really too high sit at 0.15 and above.",
    example="nnhealth warning update-ratio-high at step 50 [layer1.W]: updates are 0.31 of the weights' norm "
            "(ratio=0.31, healthy=0.001)",
)
def check(ctx, th: Thresholds):
    found = ratios(ctx.history, th.points)
    if not found:
        return None
    return [Detection(name, f"updates are {r:.2g} of the weights' norm", {"ratio": r, "healthy": 1e-3})
            for name, r in found if np.isfinite(r) and r > th.max_ratio]
