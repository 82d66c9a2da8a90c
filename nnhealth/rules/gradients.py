"""Gradient norms of the weight tensors in depth order, over the latest sampled steps."""
from __future__ import annotations

import numpy as np

from ..history import History
from ..stats.summary import H
from .base import row_medians, series_medians, weights


def grad_norms_by_depth(history: History, points: int):
    """(block columns of the weight gradients, median norm, median mean |g|) over each one's latest
    ``points`` summaries (computed once per step for the rules that share it; read-only)."""
    return history.memo(("grad_norms_by_depth", points), lambda: _grad_norms_by_depth(history, points))


def _grad_norms_by_depth(history: History, points: int):
    block = history.block("gradient")
    if block is None:
        return np.zeros(0, dtype=np.intp), np.empty(0), np.empty(0)
    cols = weights(history, "gradient")
    if points > block.window:
        return (cols, *series_medians(history, "gradient", ("norm", "mean_abs"), cols, points))
    recent = block.recent(points)[cols]
    both = np.empty((2, len(cols), points))  # the norms and the mean |g|: their medians in one sort
    with np.errstate(divide="ignore", invalid="ignore"):  # the derived series' arithmetic (derived.py)
        np.sqrt(recent[:, :, H["sumsq"]], out=both[0])
        np.divide(recent[:, :, H["abssum"]], recent[:, :, H["count"]], out=both[1])
    norms, mean_abs = row_medians(both.reshape(2 * len(cols), points)).reshape(2, len(cols))
    return cols, norms, mean_abs
