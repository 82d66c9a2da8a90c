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
    latest = [(name, h.latest_summary("parameter", name)) for name in names[:-1]]
    latest = [(name, s) for name, s in latest if s is not None and s.count >= 2]
    for (name, s), identical in zip(latest, _identical_units([s for _, s in latest], th.tolerance)):
        if identical:
            sums = s.unit_sum
            units = int(sums.size) if sums is not None else 1
            out.append(Detection(name, f"all {units} units have identical weights",
                                 {"units": units, "weight_std": s.std, "weight_mean": s.mean}))
    return out


def _identical_units(summaries: list, tolerance: float) -> list[bool]:
    """Per summary, whether its units' weight sums and sums of squares agree within ``tolerance``
    (with fewer than two units: whether all its values are equal); every layer with per-unit sums
    is judged in a few array operations (a model has hundreds of weight tensors)."""
    out = []
    with_units = []
    for i, s in enumerate(summaries):
        sums = s.unit_sum
        if sums is not None and sums.size >= 2:
            with_units.append((i, sums, s.unit_sumsq))
        out.append(s.max == s.min)
    if not with_units:
        return out
    sizes = np.array([sums.size for _, sums, _ in with_units])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    sums = np.concatenate([sums for _, sums, _ in with_units])
    sumsq = np.concatenate([sumsq for _, _, sumsq in with_units])
    scale = np.maximum(np.maximum.reduceat(np.abs(sumsq), starts), 1e-30)  # NaN stays NaN, as with max()
    spread = np.maximum.reduceat(sums, starts) - np.minimum.reduceat(sums, starts)
    spread_sq = np.maximum.reduceat(sumsq, starts) - np.minimum.reduceat(sumsq, starts)
    with np.errstate(invalid="ignore"):
        same = (spread <= tolerance * np.sqrt(scale) * np.sqrt(sizes)) & (spread_sq <= tolerance * scale)
    for (i, _, _), value in zip(with_units, same.tolist()):
        out[i] = value
    return out
