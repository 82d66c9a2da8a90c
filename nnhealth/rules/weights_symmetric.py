"""weights-symmetric: a layer's units all have the same weights."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Detection, rule, weight_names


@dataclass(frozen=True)
class Thresholds:
    #: units count as identical when their weight sums/sums of squares differ by less than this (relative)
    tolerance: float = 1e-6


@rule(
    "weights-symmetric", severity="warning", needs={"parameter"}, thresholds=Thresholds,
    summary="All units of a layer have identical weights (e.g. all zero): nothing breaks the symmetry.",
    advice="Initialise weights with small random values (He or Xavier), never constants; biases may be zero.",
    detects="Hidden weight tensors whose output units are exact copies of each other (all values equal, "
            "all zero, or rows that stayed identical through training).",
    why="The lecture: if every weight starts equal (e.g. zero), every neuron computes the same output, gets "
        "the same gradient and the same update, and stays a copy of the others forever: the layer is "
        "effectively one unit wide.",
    how="Per output unit, the sum and sum of squares of its weights; fires when they agree across all units "
        "within `tolerance` (relative), for every weight tensor except the last one in depth order (an "
        "all-zero output layer still learns distinct rows, since each class gets its own gradient). Judged "
        "on the latest sampled parameters.",
    example="nnhealth warning weights-symmetric at step 0 [layer0.W]: all 100 units have identical weights "
            "(units=100, weight_std=0)",
)
def check(ctx, th: Thresholds):
    h = ctx.history
    names = weight_names(h, "parameter")
    if len(names) < 2:
        return None
    out = []
    for name in names[:-1]:
        s = h.latest_summary("parameter", name)
        if s is None or s.count < 2:
            continue
        sums, sumsq = s.unit_sum, s.unit_sumsq
        if sums is None or sums.size < 2:
            identical = s.max == s.min
        else:
            scale = max(float(np.max(np.abs(sumsq))), 1e-30)
            identical = (np.ptp(sums) <= th.tolerance * np.sqrt(scale) * np.sqrt(sums.size)
                         and np.ptp(sumsq) <= th.tolerance * scale)
        if identical:
            units = int(sums.size) if sums is not None else 1
            out.append(Detection(name, f"all {units} units have identical weights",
                                 {"units": units, "weight_std": s.std, "weight_mean": s.mean}))
    return out
