"""Gradient norms of the weight tensors in depth order, over the window."""
from __future__ import annotations

from ..history import History
from .base import medians, weight_names


def grad_norms_by_depth(history: History, points: int):
    """(names, median norm, median mean |g|) of weight gradients over the latest ``points`` samples
    (computed once per step for the rules that share it; read-only)."""
    return history.memo(("grad_norms_by_depth", points), lambda: _grad_norms_by_depth(history, points))


def _grad_norms_by_depth(history: History, points: int):
    names, norms, mean_abs = [], [], []
    for name in weight_names(history, "gradient"):
        n = history.last_values(name, "gradient/norm", points)
        if len(n) == 0:
            continue
        names.append(name)
        norms.append(n)
        mean_abs.append(history.last_values(name, "gradient/mean_abs", points))
    return names, medians(norms), medians(mean_abs)
