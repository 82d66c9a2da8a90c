"""Activation spread layer by layer, the picture the lecture draws for initialisation."""
from __future__ import annotations

import numpy as np

from ..history import History
from ..stats.kinds import get_kind
from ..stats.summary import H


def stds_by_depth(history: History, unbounded_only: bool = False, min_steps: int = 1):
    """(names, stds) of activation layers in depth order over the window, skipping empty ones."""
    names, stds = [], []
    for name, bounded, steps, std in history.memo("activation_stds", lambda: _window_stds(history)):
        if (unbounded_only and bounded) or steps < min_steps:
            continue
        names.append(name)
        stds.append(std)
    return names, np.asarray(stds, dtype=np.float64)


def _window_stds(history: History) -> list[tuple[str, bool, int, float]]:
    """(name, bounded kind, sampled steps in the window, window std) of every non-empty activation
    layer, once per step for the rules that read the spread by depth (the stds in one array expression,
    the same arithmetic as Summary.std)."""
    rows = []
    for name in history.names("activation"):
        s = history.window_summary("activation", name)
        if s is not None and s.count != 0:
            rows.append((name, s.h))
    if not rows:
        return []
    h = np.array([header for _, header in rows], dtype=np.float64)
    count = h[:, H["count"]]
    mean = h[:, H["sum"]] / count
    stds = np.sqrt(np.maximum(h[:, H["sumsq"]] / count - mean * mean, 0.0)).tolist()
    out = []
    for (name, _), std in zip(rows, stds):
        kind = history.meta.get(name, {}).get("kind")
        out.append((name, kind is not None and get_kind(kind).bounded, history.window_size("activation", name), std))
    return out
