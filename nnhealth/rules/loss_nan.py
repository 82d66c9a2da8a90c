"""loss-nan: the loss is NaN or infinite."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .base import Detection, rule


@dataclass(frozen=True)
class Thresholds:
    """loss-nan has nothing to tune: a non-finite loss is always fatal."""


@rule(
    "loss-nan", severity="critical", cadence="step", needs={"loss"}, thresholds=Thresholds,
    summary="The loss is NaN or infinite: training has diverged; stop.",
    advice="Lower the learning rate (try 10x lower), check the data for NaN/Inf, and clip gradients; "
           "restart from the last good checkpoint.",
    detects="A loss value that is NaN, +Inf or -Inf.",
    why="Once the loss is not finite, gradients and then weights become NaN and every later step is wasted. "
        "In the lecture's words, a NaN cost almost always means the learning rate is too high.",
    how="Judged on every step: the latest loss is not a finite number. Sets `should_stop`.",
    example="nnhealth critical loss-nan at step 112: loss is nan (loss=nan, last_finite_loss=48.2)",
)
def check(ctx, th: Thresholds):
    s = ctx.history.series(None, "loss")
    if s is None or s.total == 0:
        return None
    latest = s.latest
    if math.isfinite(latest):
        return []
    _, values = s.last(64)
    finite = [v for v in values if math.isfinite(v)]
    evidence = {"loss": latest}
    if finite:
        evidence["last_finite_loss"] = finite[-1]
    return [Detection(None, f"loss is {latest}", evidence)]
