"""Update/parameter norm ratios of the weight tensors, over the window."""
from __future__ import annotations

from ..history import History
from .base import median, weight_names


def ratios(history: History, points: int):
    """[(name, median ratio)] for weight tensors with at least ``points`` sampled updates."""
    out = []
    for name in weight_names(history, "update"):
        v = history.values(name, "update/ratio", last=points)
        if len(v) >= points:
            out.append((name, median(v)))
    return out
