"""When a demo training loop stops, and what the watching observer still has to say at its end.

Both demo loops (numpy and PyTorch) stop the same way: the caller's callback
asked, the loss is no longer finite, or the observer set ``should_stop`` (a
critical finding), checked in that order after each step.
"""
from __future__ import annotations

import math
from typing import Callable


def stop_reason(callback: Callable | None, info, loss: float, observer) -> str | None:
    """Why the loop stops after this step (None: it goes on)."""
    if callback is not None and callback(info):
        return "callback"
    if not math.isfinite(loss):
        return "non-finite loss"
    if getattr(observer, "should_stop", False):
        return "observer"
    return None


def last_findings(observer) -> list:
    """Findings the observer still holds when the loop ends (a Monitor judges the losses of the last
    unsampled steps in one batch, on flush)."""
    flush = getattr(observer, "flush", None)
    return list(flush() or []) if callable(flush) else []
