"""saturated-activations: sigmoid/tanh outputs pinned near their bounds."""
from __future__ import annotations

from dataclasses import dataclass

from ..stats.kinds import SATURATION_DERIVATIVE
from ..stats.summary import H
from .base import Detection, judged_layers, kind_mask, rule


@dataclass(frozen=True)
class Thresholds:
    #: a unit is saturated when its output is saturated in more than this fraction of samples
    min_unit_saturated_fraction: float = 0.7
    #: a layer is flagged when more than this fraction of its units are saturated
    max_saturated_fraction: float = 0.5
    #: samples (over the window) needed before judging
    min_samples: int = 100
    #: sampled steps the window must hold before judging (one early step is never enough)
    min_steps: int = 3


@rule(
    "saturated-activations", severity="warning", needs={"activation"}, thresholds=Thresholds,
    summary="Sigmoid/tanh outputs are pinned near their bounds, where their gradient is almost zero.",
    advice="Use Xavier initialisation (std 1/sqrt(fan_in)) or smaller weights, normalise the inputs, add "
           "batch normalisation before the nonlinearity, or use ReLU-family activations in hidden layers.",
    detects="Layers of saturating activations (sigmoid, tanh, softsign, hardtanh, hardsigmoid, relu6) whose "
            "units sit on the flat part of the curve for almost every input.",
    why="The lecture's first problem with sigmoid and tanh: when |x| is large they saturate, their local "
        "gradient is ~0, and that kills the gradient flowing back through them. With weights too large "
        "(e.g. 1.0 * randn) almost every tanh unit outputs -1 or +1 and the network stops learning.",
    how=f"An output is saturated where the activation's derivative is below {100 * SATURATION_DERIVATIVE:.0f}% "
        "of its maximum (tanh: |y| > 0.975; sigmoid: y < 0.013 or y > 0.987). Per unit, the saturated count "
        "is summed over the window of sampled steps; a unit is saturated when more than "
        "`min_unit_saturated_fraction` of its outputs are; fires when more than `max_saturated_fraction` of "
        "the layer's units are saturated (with at least `min_samples` samples over at least `min_steps` "
        "sampled steps).",
    example="nnhealth warning saturated-activations at step 20 [layer2]: 96% of units are saturated "
            "(saturated_fraction=0.96, saturated_units=246, units=256)",
)
def check(ctx, th: Thresholds):
    h = ctx.history
    block = h.block("activation")
    if block is None:
        return None
    judged = judged_layers(h, kind_mask(h, "saturated"), th.min_samples, th.min_steps)
    if not judged.size:
        return None
    count = block.count_units(1, th.min_unit_saturated_fraction, above=True)[judged]
    units = block.window_units()[judged]
    fraction = count / units
    fired = (fraction > th.max_saturated_fraction).nonzero()[0]
    names, window = h.names("activation"), block.window_sums()
    out = []
    for j, f, c, u in zip(judged[fired].tolist(), fraction[fired].tolist(), count[fired].tolist(),
                          units[fired].tolist()):
        w = window[j].tolist()
        total = w[H["count"]] + w[H["nonfinite"]]
        out.append(Detection(names[j], f"{100 * f:.0f}% of units are saturated",
                             {"saturated_fraction": f, "saturated_units": c, "units": u,
                              "output_saturated_fraction": w[H["saturated"]] / total if total else float("nan")}))
    return out
