"""underfitting: no train/validation gap, low accuracy, and the loss has levelled off."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Detection, median, rule
from .generalization import paired_accuracy


@dataclass(frozen=True)
class Thresholds:
    #: training accuracy below this counts as low
    max_accuracy: float = 0.6
    #: |train - val| below this counts as "no gap"
    max_gap: float = 0.05
    #: validation points the picture must hold over
    points: int = 3
    #: the loss has levelled off: it improved less than this fraction over the latest half of the kept values
    max_recent_improvement: float = 0.02
    #: loss values needed before judging whether it levelled off
    min_points: int = 20


@rule(
    "underfitting", severity="info", needs={"metrics"}, thresholds=Thresholds,
    summary="No gap between training and validation accuracy, and both are low: there is room for "
            "more capacity.",
    advice="Make the model bigger (wider or deeper), train longer, or reduce regularisation.",
    detects="Training and validation accuracy that agree but stay low after the loss has levelled off.",
    why="The lecture: when training and validation accuracy track each other closely, the model is not "
        "using its capacity; it can afford to be larger or less regularised. This is advice, not an alarm.",
    how="Validation accuracy paired with training accuracy as for overfitting; fires when on each of the "
        "last `points` validation points |train - val| < `max_gap` and train < `max_accuracy`, and the "
        "training loss improved by less than `max_recent_improvement` over the latest half of the kept values "
        "(at least `min_points` of them).",
    example="nnhealth info underfitting at step 900: accuracy is low (0.42) with no train/validation gap "
            "(train_acc=0.42, val_acc=0.41, gap=0.01)",
)
def check(ctx, th: Thresholds):
    pairs = paired_accuracy(ctx.history, th.points)
    loss = ctx.history.series(None, "loss")
    if pairs is None or loss is None or len(loss) < th.min_points:
        return None
    steps, train, val = pairs
    gap = train - val
    _, values = loss.arrays()
    half = values[len(values) // 2:]
    first, last = median(half[: max(1, len(half) // 4)]), median(half[-max(1, len(half) // 4):])
    if not (np.isfinite(first) and np.isfinite(last)) or first == 0:
        return None
    levelled = (first - last) / abs(first) < th.max_recent_improvement
    if levelled and np.all(np.abs(gap) < th.max_gap) and np.all(train < th.max_accuracy):
        return [Detection(None, f"accuracy is low ({train[-1]:.2f}) with no train/validation gap",
                          {"train_acc": float(train[-1]), "val_acc": float(val[-1]), "gap": float(np.median(gap))})]
    return []
