"""overfitting: training and validation results far apart."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Detection, median, rule
from .generalization import paired_accuracy


@dataclass(frozen=True)
class Thresholds:
    #: train accuracy minus validation accuracy that counts as a big gap
    max_gap: float = 0.1
    #: the gap (or the rise) must hold over this many consecutive validation points
    points: int = 3
    #: validation loss this far above its best, as a fraction of the first validation loss, while the
    #: training loss keeps falling (relative to the first value, not the best: near-zero validation losses
    #: of healthy runs wobble by 14-160% of their best; measured on the detection benchmark)
    val_loss_rise_fraction: float = 0.1


@rule(
    "overfitting", severity="warning", needs={"metrics"}, thresholds=Thresholds,
    summary="Training and validation accuracy are far apart (or validation loss rises while training "
            "loss falls): the model memorises the training set.",
    advice="Increase regularisation (L2 weight decay, dropout, data augmentation), get more data, or stop "
           "earlier at the best validation point.",
    detects="A sustained gap between training and validation accuracy, or a validation loss that turned "
            "back up while the training loss still falls.",
    why="The lecture: a big gap between training and validation accuracy means overfitting, so increase "
        "regularisation; the validation curve is what the model will do on new data.",
    how="Each validation accuracy is paired with the median training accuracy logged since the previous "
        "validation point; fires when train - val > `max_gap` on each of the last `points` validation points. "
        "Also fires when the median of the last `points` validation losses is more than "
        "`val_loss_rise_fraction` x the first validation loss above the best one, while the training loss is "
        "lower than it was at that best point.",
    example="nnhealth warning overfitting at step 600: train accuracy 0.99 vs validation 0.62 "
            "(train_acc=0.99, val_acc=0.62, gap=0.37)",
)
def check(ctx, th: Thresholds):
    h = ctx.history
    judged = False
    pairs = paired_accuracy(h, th.points)
    if pairs is not None:
        judged = True
        steps, train, val = pairs
        gap = train - val
        if np.all(gap > th.max_gap):
            return [Detection(None, f"train accuracy {train[-1]:.2f} vs validation {val[-1]:.2f}",
                              {"train_acc": float(train[-1]), "val_acc": float(val[-1]),
                               "gap": float(np.median(gap))})]
    vl = h.series(None, "val_loss")
    tl = h.series(None, "loss")
    if vl is not None and tl is not None and vl.total >= th.points + 1:
        judged = True
        vsteps, vvals = vl.arrays()
        best = int(np.nanargmin(vvals)) if np.isfinite(vvals).any() else -1
        recent = median(vvals[-th.points:])
        first = next((float(v) for v in vvals if np.isfinite(v)), float("nan"))
        rise = th.val_loss_rise_fraction * abs(first)
        if best >= 0 and best < len(vvals) - th.points and recent - vvals[best] > rise:
            tsteps, tvals = tl.arrays()
            at_best = median(tvals[(tsteps <= vsteps[best])][-20:])
            now = median(tvals[-20:])
            if np.isfinite(at_best) and np.isfinite(now) and now < at_best:
                return [Detection(None, f"validation loss rose {100 * (recent / vvals[best] - 1):.0f}% above "
                                        f"its best while training loss kept falling",
                                  {"val_loss": recent, "best_val_loss": float(vvals[best]),
                                   "best_step": int(vsteps[best]), "train_loss": now})]
    return [] if judged else None
