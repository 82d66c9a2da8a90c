"""Update/parameter norm ratios of the weight tensors, over the window."""
from __future__ import annotations

from ..history import History
from .base import medians, weight_names


def ratios(history: History, points: int):
    """[(name, median ratio)] for weight tensors with at least ``points`` sampled updates (computed
    once per step for the rules that share it; read-only)."""
    return history.memo(("update_ratios", points), lambda: _ratios(history, points))


def _ratios(history: History, points: int):
    names, rows = [], []
    for name in weight_names(history, "update"):
        v = history.last_values(name, "update/ratio", points)
        if len(v) >= points:
            names.append(name)
            rows.append(v)
    return list(zip(names, medians(rows).tolist()))
