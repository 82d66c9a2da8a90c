"""Activation spread layer by layer, the picture the lecture draws for initialisation."""
from __future__ import annotations

import numpy as np

from ..history import History
from ..stats.summary import H
from .base import kind_mask


def stds_by_depth(history: History, unbounded_only: bool = False, min_steps: int = 1):
    """(block columns, stds) of the non-empty activation layers in depth order, std over each one's
    window (layers with fewer than ``min_steps`` sampled steps left out)."""
    stds, nonempty, bounded, steps = history.memo("activation_stds", lambda: _window_stds(history))
    keep = steps >= min_steps
    keep &= nonempty
    if unbounded_only:
        keep &= ~bounded
    cols = keep.nonzero()[0]
    return cols, stds[cols]


def _window_stds(history: History):
    """(window std, non-empty, bounded kind, sampled steps in the window) of every activation layer (std
    NaN where empty), once per step for the rules that read the spread by depth (Summary.std's arithmetic)."""
    block = history.block("activation")
    if block is None:
        return np.empty(0), np.zeros(0, dtype=bool), np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64)
    h = block.window_sums()
    count = h[:, H["count"]]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = h[:, H["sum"]] / count
        stds = np.sqrt(np.maximum(h[:, H["sumsq"]] / count - mean * mean, 0.0))
    return stds, count != 0, kind_mask(history, "bounded"), block.window_size()
