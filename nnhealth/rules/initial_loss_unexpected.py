"""initial-loss-unexpected: the first loss is far from ln(C)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .base import Detection, rule


@dataclass(frozen=True)
class Thresholds:
    #: allowed relative distance from ln(C): 1.0 accepts [ln(C)/2, 2 ln(C)]
    max_relative_deviation: float = 1.0


@rule(
    "initial-loss-unexpected", severity="warning", cadence="step", needs={"loss"}, thresholds=Thresholds,
    summary="The first loss is far from ln(C) for C classes: wrong loss or a bad initial scale.",
    advice="With small random weights a softmax classifier's first loss should be about ln(C); check that "
           "the loss averages (not sums) over the batch, that logits are not passed through softmax twice, "
           "and that the last layer starts small.",
    detects="A first loss far from ln(C), when the monitor is told the number of classes (`num_classes=C`).",
    why="The lecture's step 3 of babysitting: before training, check that the loss is reasonable. With "
        "diffuse initial predictions a softmax cross-entropy starts at -ln(1/C) = ln(C). Far above means "
        "overconfident initial predictions (weights too large) or a summed loss; far below means a bug "
        "such as leaked labels.",
    how="ratio = first finite loss / ln(C); fires when ratio > 1 + `max_relative_deviation` or "
        "ratio < 1 / (1 + `max_relative_deviation`). Judged once, on the first loss.",
    example="nnhealth warning initial-loss-unexpected at step 0: first loss 14.2 is 6.2x ln(10)=2.30 "
            "(first_loss=14.2, expected=2.3, num_classes=10)",
)
def check(ctx, th: Thresholds):
    if not ctx.num_classes or ctx.num_classes < 2:
        return None
    s = ctx.history.series(None, "loss")
    if s is None or s.total == 0:
        return None
    steps, values = s.first(s.head)
    finite = next(((st, v) for st, v in zip(steps, values) if math.isfinite(v)), None)  # judged every step
    if finite is None:
        return None
    first_step, first = finite
    expected = math.log(ctx.num_classes)
    ratio = first / expected
    limit = 1 + th.max_relative_deviation
    if ratio > limit or ratio < 1 / limit:
        return [Detection(None, f"first loss {first:.3g} is {ratio:.1f}x ln({ctx.num_classes})={expected:.2f}",
                          {"first_loss": float(first), "expected": expected, "num_classes": ctx.num_classes,
                           "first_step": int(first_step)})]
    return []
