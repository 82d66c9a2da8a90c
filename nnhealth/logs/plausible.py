"""Is a recorded state a summary nnhealth could have written? The rules trust the numbers they get.

A state read back from a log folder passed its size checks, but its numbers
come from a file anyone could have written or damaged: a count of -3 or of
infinity, a histogram that counts other values than the header does. Live
summaries never look like that, so the rules do not guard against it; the
reader refuses such a state instead, the way it refuses a malformed tensor.

What is allowed is what :func:`nnhealth.stats.summarize` and the fused
header-only rows of the PyTorch adapter produce: counts are whole numbers
>= 0; fields not measured are NaN; sums and extremes may be NaN or infinite
(a tensor holding NaN or Inf); a histogram counts exactly the finite values.
"""
from __future__ import annotations

import math

import numpy as np

from ..stats import Layout
from ..stats.summary import HEADER

#: header fields that are counts of values
COUNTS = ("count", "nonfinite", "samples")
#: counts of a subset of the finite values: NaN (not measured) or between 0 and count
SUBSETS = ("zeros", "positive", "saturated")


def _is_count(x: float) -> bool:
    return math.isfinite(x) and x >= 0 and x == math.floor(x)


def implausible(layout: Layout, vector: np.ndarray) -> str | None:
    """Why ``vector`` cannot be a summary nnhealth wrote, in words (None when it can be one).

    >>> import numpy as np
    >>> from nnhealth.stats import summarize
    >>> layout, v = summarize(np.arange(6.0).reshape(2, 3), "relu", hist=True, units=True)
    >>> implausible(layout, v) is None
    True
    >>> v[0] = -1.0
    >>> implausible(layout, v)
    'count is not a whole number >= 0'
    """
    h = dict(zip(HEADER, vector[: len(HEADER)].tolist()))
    for name in COUNTS:
        if not _is_count(h[name]):
            return f"{name} is not a whole number >= 0"
    for name in SUBSETS:
        if not (math.isnan(h[name]) or (_is_count(h[name]) and h[name] <= h["count"])):
            return f"{name} is not a whole number between 0 and count"
    for name in ("sumsq", "abssum"):
        if h[name] < 0:
            return f"{name} is negative"
    if h["count"] and h["min"] > h["max"]:
        return "min is above max"
    parts = layout.slices()
    if "hist" in parts:
        hist = vector[parts["hist"]]
        if not (np.isfinite(hist).all() and (hist >= 0).all() and (hist == np.floor(hist)).all()
                and hist.sum() == h["count"]):
            return "its histogram does not count its finite values"
    for name in ("unit_fired", "unit_saturated"):
        if name in parts:
            units = vector[parts[name]]
            if not (np.isfinite(units).all() and (units >= 0).all() and (units <= h["samples"]).all()):
                return f"{name} is not a count between 0 and samples"
    return None
