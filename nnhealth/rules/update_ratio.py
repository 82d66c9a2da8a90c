"""Update/parameter norm ratios of the weight tensors, over the latest sampled steps."""
from __future__ import annotations

import numpy as np

from ..history import History
from .base import row_medians, series_medians, weights


def ratios(history: History, points: int):
    """(block columns of the weight tensors with at least ``points`` update ratios, their median ratio
    over the latest ``points``), computed once per step for the rules that share it; read-only."""
    return history.memo(("update_ratios", points), lambda: _ratios(history, points))


def _ratios(history: History, points: int):
    block = history.block("update")
    if block is None:
        return np.zeros(0, dtype=np.intp), np.empty(0)
    cols = weights(history, "update")
    cols = block.with_ratios(cols, points)
    if points > block.window:
        return cols, series_medians(history, "update", ("ratio",), cols, points)[0]
    return cols, row_medians(block.recent_ratios(points)[cols])
