"""update-ratio-low: each update is a tiny fraction of the weights."""
from __future__ import annotations

from dataclasses import dataclass

from .base import Detection, median, rule
from .update_ratio import ratios


@dataclass(frozen=True)
class Thresholds:
    #: median update/parameter norm ratio below which the learning rate is too low (healthy is ~1e-3)
    min_ratio: float = 1e-5
    #: sampled steps the median is taken over
    points: int = 5
    #: not judged once the loss has fallen below this fraction of its start: small updates near
    #: convergence are the optimiser settling, not a learning rate that is too low
    max_loss_fraction: float = 0.5


@rule(
    "update-ratio-low", severity="warning", needs={"update"}, thresholds=Thresholds,
    summary="Each update changes the weights by a tiny fraction of their size (well below ~1e-3): the "
            "learning rate is too low.",
    advice="Raise the learning rate (try 10x, searching in log space).",
    detects="Weight tensors whose update norm is a minute fraction of their own norm, step after step.",
    why="The lecture's heuristic: updates should be about 1e-3 of the weights. Far smaller and training "
        "crawls; the loss barely moves.",
    how="ratio = ||theta_after - theta_before|| / ||theta_before|| per weight tensor; fires when its median "
        "over the last `points` sampled steps is below `min_ratio` (and not exactly zero, which means a "
        "frozen or skipped tensor), while the training loss is still above `max_loss_fraction` x its start. "
        "The default sits below the lecture's 1e-4 because healthy runs with a decayed learning rate reach "
        "1e-5..1e-4, and a run that already learned (its loss halved) is converging, not stuck.",
    example="nnhealth warning update-ratio-low at step 50 [layer0.W]: updates are 3.2e-07 of the weights' norm "
            "(ratio=3.2e-07, healthy=0.001)",
)
def check(ctx, th: Thresholds):
    cols, found = ratios(ctx.history, th.points)
    if not len(cols):
        return None
    loss = ctx.history.series(None, "loss")
    if loss is not None and loss.total >= 10:
        start, recent = loss.of_first(5, median), median(loss.last_values(10))
        if start > 0 and recent < th.max_loss_fraction * start:
            return []
    under = (found < th.min_ratio).nonzero()[0]  # then the ones above 0 (and so finite) among them
    if not under.size:
        return []
    names = ctx.history.names("update")
    return [Detection(names[j], f"updates are {r:.2g} of the weights' norm", {"ratio": r, "healthy": 1e-3})
            for j, r in zip(cols[under].tolist(), found[under].tolist()) if r > 0]
