"""weights-symmetric: a layer's units all have the same weights."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..derived import chunks
from ..stats.summary import H
from .base import Detection, rule, weights


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
    cols = weights(h, "parameter")
    if len(cols) < 2:
        return None
    block = h.block("parameter")
    cols = cols[:-1]
    latest = block.latest[cols]
    identical = _identical_units(block, cols, latest, th.tolerance)
    identical &= latest[:, H["count"]] >= 2
    cols = cols[identical]
    names = h.names("parameter")
    out = []
    for j, n in zip(cols.tolist(), block.munits[cols].tolist()):
        s = block.latest_summary(j)
        n = n or 1
        out.append(Detection(names[j], f"all {n} units have identical weights",
                             {"units": n, "weight_std": s.std, "weight_mean": s.mean}))
    return out


def _identical_units(block, cols: np.ndarray, latest: np.ndarray, tolerance: float) -> np.ndarray:
    """Per layer ``cols`` of the parameter block (``latest``: their latest headers), whether the per-unit
    weight sums and sums of squares of its latest summary agree within ``tolerance`` (with fewer than two
    units: whether all its values are equal); every layer in a few array operations (a model has hundreds
    of weight tensors)."""
    out = latest[:, H["max"]] == latest[:, H["min"]]
    units = block.munits[cols]
    with_units = (units >= 2).nonzero()[0]
    if not with_units.size:  # parameters sampled without per-unit sums (the adapters, after watch time)
        return out
    sizes = units[with_units].tolist()
    parts = list(zip((block.latest_vectors[j] for j in cols[with_units].tolist()),
                     block.moffset[cols[with_units]].tolist(), sizes))
    for chunk in chunks(sizes):
        size = units[with_units[chunk]]
        sums = np.concatenate([v[o:o + n] for v, o, n in parts[chunk]])
        sumsq = np.concatenate([v[o + n:o + 2 * n] for v, o, n in parts[chunk]])
        starts = np.cumsum(size) - size
        scale = np.maximum(np.maximum.reduceat(np.abs(sumsq), starts), 1e-30)  # NaN stays NaN, as with max()
        spread = np.maximum.reduceat(sums, starts) - np.minimum.reduceat(sums, starts)
        spread_sq = np.maximum.reduceat(sumsq, starts) - np.minimum.reduceat(sumsq, starts)
        with np.errstate(invalid="ignore"):
            out[with_units[chunk]] = ((spread <= tolerance * np.sqrt(scale) * np.sqrt(size))
                                      & (spread_sq <= tolerance * scale))
    return out
