"""Pairing validation points with the training metric measured around them.

Training accuracy is usually logged every step (per batch, noisy) and
validation accuracy every few hundred steps; the gap is only meaningful
between a validation point and the training level at that time.
"""
from __future__ import annotations

import numpy as np

from ..history import History


def paired_accuracy(history: History, points: int):
    """(steps, train, val) for the latest ``points`` validation points, or None."""
    val = history.series(None, "val_acc")
    train = history.series(None, "train_acc")
    if val is None or train is None or val.total < points:
        return None
    vsteps, vvals = val.last(points)
    tsteps, tvals = train.arrays()
    paired = []
    for i, (st, v) in enumerate(zip(vsteps, vvals)):
        lo = vsteps[i - 1] if i > 0 else -np.inf
        sel = (tsteps <= st) & (tsteps > lo)
        if not sel.any():
            sel = tsteps <= st
        if not sel.any():
            return None
        window = tvals[sel][-50:]
        window = window[np.isfinite(window)]
        if window.size == 0 or not np.isfinite(v):
            return None
        paired.append((int(st), float(np.median(window)), float(v)))
    steps, tr, va = (np.array(x) for x in zip(*paired))
    return steps, tr, va
