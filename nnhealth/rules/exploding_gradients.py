"""exploding-gradients: gradient norms huge, growing toward the input, or non-finite."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Detection, median, nonfinite, rule
from .gradients import grad_norms_by_depth


@dataclass(frozen=True)
class Thresholds:
    #: first-layer to last-layer gradient norm ratio above which gradients explode toward the input
    max_first_last_ratio: float = 70.0
    #: growth of the total gradient norm over its value on the first sampled steps
    max_growth: float = 1000.0
    #: sampled steps the medians are taken over
    points: int = 3
    #: a smaller growth of the total gradient norm that is exploding too when the training loss has
    #: climbed back up at the same time (a tanh RNN without clipping: see the rule's page)
    max_growth_with_loss_rise: float = 10.0
    #: how far the loss must have risen: its recent median over the lowest median of any earlier block
    loss_rise: float = 3.0
    #: losses per block for those medians (one bad batch moves neither)
    loss_block: int = 10


@rule(
    "exploding-gradients", severity="warning", needs={"gradient"}, thresholds=Thresholds,
    summary="Gradient norms are huge, grow toward the input layers, or are not finite.",
    advice="Lower the learning rate, clip gradients (e.g. clip_grad_norm_ at 1.0), use Xavier/He "
           "initialisation, and add normalisation layers.",
    detects="Non-finite gradients, gradients far larger in the first layers than in the last, or a total "
            "gradient norm that grew by orders of magnitude since the start.",
    why="When gradients grow as they flow back, the first layers take huge steps and the loss blows up. "
        "Non-finite gradients turn every weight they touch into NaN at the next update.",
    how="Critical when any gradient value is NaN/Inf on the latest sampled step. Otherwise medians over the "
        "last `points` sampled steps: fires when the first weight tensor's gradient norm exceeds "
        "`max_first_last_ratio` x the last one's, or the total norm exceeds `max_growth` x its median over "
        "the first sampled steps, or exceeds `max_growth_with_loss_rise` x that median while the median of "
        "the last `loss_block` losses is above `loss_rise` x the lowest median of an earlier block of "
        "`loss_block` losses (over the loss history kept). The second condition is the signature of "
        "exploding gradients through time: on the detection benchmark (benchmarks/detection.py) a tanh RNN "
        "trained without clipping saw its total gradient norm grow 6-26x (sampled every 5 steps) while its "
        "loss climbed from below 0.1 back to over 1.8, a spike of 250x falling between two sampled steps; no "
        "healthy run (30 runs of 10 recipes) grew its gradient norm more than 5.4x, and the one fault whose "
        "gradients grew more (a plateau-then-drop start, 24-33x) grew them while its loss fell.",
    example="nnhealth warning exploding-gradients at step 30 [layer0.W]: gradient norm of the first layer is "
            "140x the last's (first_norm=35, last_norm=0.25, ratio=140)",
)
def check(ctx, th: Thresholds):
    h = ctx.history
    out = nonfinite(h, "gradient", lambda name, count, fraction: Detection(
        name, f"{count} gradient values are not finite", {"nonfinite": count, "fraction": fraction},
        severity="critical"))
    if out:
        return out
    cols, norms, _ = grad_norms_by_depth(h, th.points)
    if not len(cols):
        return None
    names = h.names("gradient")
    first = h.series(names[cols[0]], "gradient/norm")
    if first is None or len(first) < th.points:
        return None
    if len(cols) >= 2 and norms[-1] > 0 and norms[0] / norms[-1] > th.max_first_last_ratio:
        return [Detection(names[cols[0]], f"gradient norm of the first layer is {norms[0] / norms[-1]:.0f}x the last's",
                          {"first_norm": float(norms[0]), "last_norm": float(norms[-1]),
                           "ratio": float(norms[0] / norms[-1])}, key="network")]
    total = h.series(None, "gradient/total_norm")
    if total is not None and total.total > 2 * th.points:
        early = total.of_first(th.points, median)
        recent = median(total.last_values(th.points))
        growth = recent / early if early > 0 else 0.0
        if growth > th.max_growth:
            return [Detection(None, f"total gradient norm grew {growth:.0f}x since the start",
                              {"total_norm": recent, "start_total_norm": early, "growth": growth}, key="network")]
        if growth > th.max_growth_with_loss_rise:
            rise = _loss_rise(h, th.loss_block)
            if rise is not None and rise[0] > th.loss_rise * rise[1]:
                return [Detection(None, f"total gradient norm grew {growth:.0f}x since the start while the loss "
                                        f"climbed back to {rise[0] / rise[1]:.0f}x its lowest",
                                  {"total_norm": recent, "start_total_norm": early, "growth": growth,
                                   "loss": rise[0], "lowest_loss": rise[1]}, key="network")]
    return []


def _loss_rise(h, block: int):
    """(median of the last ``block`` losses, lowest median of an earlier block of ``block`` losses), or
    None without two blocks of finite losses. Only read when the gradient norm has grown: rare."""
    s = h.series(None, "loss")
    if s is None:
        return None
    _, values = s.last()
    values = values[np.isfinite(values)]
    blocks = len(values) // block
    if blocks < 2:
        return None
    recent = float(np.median(values[-block:]))
    earlier = values[len(values) - blocks * block:-block].reshape(blocks - 1, block)
    return recent, float(np.median(earlier, axis=1).min())
