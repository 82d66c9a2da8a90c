"""Activation spread layer by layer, the picture the lecture draws for initialisation."""
from __future__ import annotations

import numpy as np

from ..history import History
from ..stats.kinds import get_kind


def stds_by_depth(history: History, unbounded_only: bool = False, min_steps: int = 1):
    """(names, stds) of activation layers in depth order over the window, skipping empty ones."""
    names, stds = [], []
    for name in history.names("activation"):
        kind = history.meta.get(name, {}).get("kind")
        if unbounded_only and kind is not None and get_kind(kind).bounded:
            continue
        s = history.window_summary("activation", name)
        if s is None or s.count == 0 or len(history.summaries("activation", name)) < min_steps:
            continue
        names.append(name)
        stds.append(s.std)
    return names, np.asarray(stds, dtype=np.float64)
