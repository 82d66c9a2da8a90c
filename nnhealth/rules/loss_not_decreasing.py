"""loss-not-decreasing: the loss barely moved since the start."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .base import Detection, median, rule

RISING_ADVICE = ("A loss that rises is more often a learning rate that is too high than too low: lower it "
                 "(try 3-10x lower) and check the data pipeline and the loss for bugs.")


@dataclass(frozen=True)
class Thresholds:
    #: judged only after this many loss values (an early verdict would be noise)
    min_points: int = 50
    #: the start and the recent level are medians of this many values, or a tenth of the run if larger
    window: int = 10
    #: relative decrease from the start below which the loss "barely moved"
    min_improvement: float = 0.01


@rule(
    "loss-not-decreasing", severity="warning", needs={"loss"}, thresholds=Thresholds,
    summary="The loss barely moves: the learning rate is too low, or there is a bug.",
    advice="Raise the learning rate (try 10x, searching in log space); if that does not help, check that "
           "the loss is wired to the outputs, gradients reach the weights and the labels match the inputs.",
    detects="A loss whose recent level is within 1% of where it started, long after the start.",
    why="In the lecture's babysitting checklist, a loss that is barely changing means the learning rate is "
        "too low (or something is broken: detached layers, wrong labels, a frozen model).",
    how="start = median of the first `window` losses, recent = median of the last max(`window`, n/10); "
        "fires when (start - recent) / |start| < `min_improvement` once at least `min_points` values exist. "
        "A loss that rose (improvement below -`min_improvement`) gets advice to lower the learning rate instead.",
    example="nnhealth warning loss-not-decreasing at step 100: loss improved only 0.2% since the start "
            "(start_loss=2.303, recent_loss=2.298, improvement=0.002)",
)
def check(ctx, th: Thresholds):
    s = ctx.history.series(None, "loss")
    if s is None or s.total < th.min_points:
        return None
    w = max(th.window, min(len(s) // 10, s.head))
    start = s.of_first(w, median)
    recent = median(s.last_values(w))
    if not (math.isfinite(start) and math.isfinite(recent)) or start == 0:
        return None
    improvement = (start - recent) / abs(start)
    evidence = {"start_loss": start, "recent_loss": recent, "improvement": improvement}
    if improvement < -th.min_improvement:
        return [Detection(None, f"loss rose {-100 * improvement:.0f}% since the start", evidence,
                          advice=RISING_ADVICE)]
    if improvement < th.min_improvement:
        message = (f"loss improved only {100 * improvement:.1f}% since the start" if improvement > 0 else
                   f"loss has not improved since the start ({100 * improvement:+.1f}%)")
        return [Detection(None, message, evidence)]
    return []
