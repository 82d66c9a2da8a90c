"""loss-exploding: the loss climbed above a multiple of its starting value."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .base import Detection, median, rule


@dataclass(frozen=True)
class Thresholds:
    #: the lecture's rule of thumb: stop once the cost exceeds ~3x the original cost
    factor: float = 3.0
    #: the starting loss is the median of this many first values; 1, the loss before any update acted:
    #: a wider window takes in an explosion that begins at step 1 (see the detection benchmark)
    start_points: int = 1
    #: the loss must stay above factor x start for this many consecutive values (ignores a single bad batch)
    sustain: int = 2
    #: starting losses below this are too close to zero for a ratio to mean anything
    min_start_loss: float = 1e-6


@rule(
    "loss-exploding", severity="critical", cadence="step", needs={"loss"}, thresholds=Thresholds,
    summary="The loss rose above 3x its starting value: the learning rate is too high; stop early.",
    advice="Lower the learning rate (try 3-10x lower), add gradient clipping or learning-rate warmup; "
           "this run is unlikely to recover, so stop it early.",
    detects="A loss that climbs well above where training started.",
    why="A loss that grows instead of shrinking means each update overshoots: the learning rate is too high "
        "(or the data or loss is broken). The lecture's advice for hyperparameter search is to stop any run "
        "whose cost exceeds ~3x the original cost. A loss that spikes and then settles near chance level "
        "has still blown up: its weights were thrown off the data.",
    how="start = median of the first `start_points` finite losses; fires when the last `sustain` losses are "
        "all above `factor` x start (not judged when start < `min_start_loss`). Judged on every step. Critical: "
        "sets `should_stop`. `start_points` is 1 because a learning rate far too high blows the loss up at once: "
        "on the detection benchmark (benchmarks/detection.py), learning rates 100x too high (SGD on an MLP and "
        "a residual CNN, Adam on an MLP and a GRU) held the loss above 3x its first value within 2-8 steps in "
        "11 of 12 runs, but a median over the first 3 values took that explosion for the start and reported "
        "only 1 of the 12; no healthy run (30 runs of 10 recipes) held its loss above 1.2x its first value. "
        "A run resumed from a checkpoint whose first batch happens to be easy starts low: raise `start_points` "
        "there.",
    example="nnhealth critical loss-exploding at step 40: loss is 9.1x its starting value "
            "(loss=21, start_loss=2.3, ratio=9.1)",
)
def check(ctx, th: Thresholds):
    s = ctx.history.series(None, "loss")
    if s is None or s.total < th.start_points + th.sustain:
        return None
    start = s.of_first(th.start_points, median)
    if not math.isfinite(start) or start < th.min_start_loss:
        return None
    recent = s.last_values(th.sustain)  # a short list: judged on every step, so kept cheap
    current = min(recent) if all(math.isfinite(v) for v in recent) else float("nan")
    if not math.isfinite(current):
        return None  # loss-nan's business
    if current > th.factor * start:
        ratio = current / start
        return [Detection(None, f"loss is {ratio:.1f}x its starting value",
                          {"loss": float(recent[-1]), "start_loss": start, "ratio": ratio})]
    return []
