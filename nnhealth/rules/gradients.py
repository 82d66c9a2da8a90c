"""Gradient norms of the weight tensors in depth order, over the window."""
from __future__ import annotations

import numpy as np

from ..history import History
from .base import median, weight_names


def grad_norms_by_depth(history: History, points: int):
    """(names, median norm, median mean |g|) of weight gradients over the latest ``points`` samples."""
    names, norms, mean_abs = [], [], []
    for name in weight_names(history, "gradient"):
        n = history.values(name, "gradient/norm", last=points)
        if len(n) == 0:
            continue
        names.append(name)
        norms.append(median(n))
        mean_abs.append(median(history.values(name, "gradient/mean_abs", last=points)))
    return names, np.asarray(norms), np.asarray(mean_abs)
