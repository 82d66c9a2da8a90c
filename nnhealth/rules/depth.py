"""Activation spread layer by layer, the picture the lecture draws for initialisation."""
from __future__ import annotations

import numpy as np

from ..history import History
from ..stats.summary import H
from .base import kind_mask


def stds_by_depth(history: History, unbounded_only: bool = False, min_steps: int = 1):
    """(block columns, stds) of the non-empty activation layers in depth order, std over each one's
    window (layers with fewer than ``min_steps`` sampled steps left out)."""
    cols, stds, bounded, steps = history.memo("activation_stds", lambda: _window_stds(history))
    keep = steps >= min_steps
    if unbounded_only:
        keep &= ~bounded
    return cols[keep], stds[keep]


def _window_stds(history: History):
    """(columns, window std, bounded kind, sampled steps in the window) of every non-empty activation
    layer, once per step for the rules that read the spread by depth (Summary.std's arithmetic)."""
    block = history.block("activation")
    if block is None:
        return np.zeros(0, dtype=np.intp), np.empty(0), np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64)
    h = block.window_header()
    count = h[:, H["count"]]
    cols = np.flatnonzero(count != 0)
    h, count = h[cols], count[cols]
    mean = h[:, H["sum"]] / count
    stds = np.sqrt(np.maximum(h[:, H["sumsq"]] / count - mean * mean, 0.0))
    return cols, stds, kind_mask(history, "bounded")[cols], block.window_size()[cols]
