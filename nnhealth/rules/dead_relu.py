"""dead-relu: many ReLU units never activate."""
from __future__ import annotations

from dataclasses import dataclass

from ..stats.summary import H
from .base import Detection, judged_layers, kind_mask, rule


@dataclass(frozen=True)
class Thresholds:
    #: a unit is dead when it fired (output > 0) in under this fraction of the samples seen
    max_fire_fraction: float = 0.01
    #: a layer is flagged when more than this fraction of its units are dead
    max_dead_fraction: float = 0.5
    #: samples (over the window of sampled steps) needed before a unit can be called dead
    min_samples: int = 100
    #: sampled steps the window must hold before judging (one early step is never enough)
    min_steps: int = 3


@rule(
    "dead-relu", severity="warning", needs={"activation"}, thresholds=Thresholds,
    summary="Many ReLU units never activate, so they never learn: bad initialisation or too high a "
            "learning rate.",
    advice="Use He initialisation (std sqrt(2/fan_in)) and a small positive or zero bias, lower the learning "
           "rate, or switch to Leaky ReLU / ELU, which have no dead region.",
    detects="ReLU layers in which most units output zero for (almost) every input.",
    why="A ReLU unit whose input is negative for every example outputs 0 and passes back a zero gradient: "
        "it never updates again. The lecture names two causes: a bad initialisation (the unit's hyperplane "
        "lies away from the data cloud) and a learning rate so high that an update knocks the weights off "
        "the data manifold. A layer that is mostly dead wastes its capacity.",
    how="Per unit (the last axis of a dense activation, the channel axis of a convolution), the number of "
        "samples in which it fired (> 0) is summed over the window of recent sampled steps; a unit is dead "
        "when it fired in under `max_fire_fraction` of at least `min_samples` samples; fires when more than "
        "`max_dead_fraction` of the layer's units are dead, once the window holds `min_steps` sampled steps. "
        "Applies to kinds relu and relu6.",
    example="nnhealth warning dead-relu at step 20 [layer1]: 87% of units never fired "
            "(dead_fraction=0.87, dead_units=223, units=256, samples=320)",
)
def check(ctx, th: Thresholds):
    h = ctx.history
    block = h.block("activation")
    if block is None:
        return None
    judged = judged_layers(h, kind_mask(h, "can_die"), th.min_samples, th.min_steps)
    if not judged.size:
        return None
    dead, units = block.count_units(0, th.max_fire_fraction)[judged], block.window_units()[judged]
    fraction = dead / units
    fired = (fraction > th.max_dead_fraction).nonzero()[0]
    if not fired.size:
        return []
    judged = judged[fired]
    samples = block.window_sums()[judged, H["samples"]]
    names = h.names("activation")
    return [Detection(names[j], f"{100 * f:.0f}% of units never fired",
                      {"dead_fraction": f, "dead_units": d, "units": u, "samples": int(n)})
            for j, f, d, u, n in zip(judged.tolist(), fraction[fired].tolist(), dead[fired].tolist(),
                                     units[fired].tolist(), samples.tolist())]
