"""TensorBoard histogram buckets onto the uniform bins a plot needs.

A histogram read back is a list of ``(left, right, count)`` buckets of any
widths (nnhealth's are exponential, other tools' are anything). Counts are
taken as spread evenly inside a bucket, so the cumulative count is piecewise
linear; new bins and quantiles are read off that curve. A bucket of zero
width (all values equal) is a step in the curve, so its count lands in the
one bin that holds it.
"""
from __future__ import annotations

import numpy as np


def cumulative(buckets: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Count of values <= x, for every x."""
    buckets = np.asarray(buckets, dtype=np.float64).reshape(-1, 3)
    x = np.asarray(x, dtype=np.float64)
    left, right, count = buckets[:, 0], buckets[:, 1], buckets[:, 2]
    width = right - left
    xs = x[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        inside = np.where(width > 0, (xs - left) / np.where(width > 0, width, 1.0), (xs >= left).astype(float))
    return (np.clip(inside, 0.0, 1.0) * count).sum(axis=-1)


def rebin(buckets: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts in the bins between consecutive ``edges``; values outside go to the end bins.

    >>> rebin(np.array([[0.0, 2.0, 4.0], [3.0, 3.0, 1.0]]), np.array([0.0, 1.0, 2.0, 3.0]))
    array([2., 2., 1.])
    """
    edges = np.asarray(edges, dtype=np.float64)
    total = float(np.asarray(buckets, dtype=np.float64).reshape(-1, 3)[:, 2].sum())
    cum = cumulative(buckets, edges)
    cum[0], cum[-1] = 0.0, total  # the tails, into the first and the last bin
    # bins are right-closed like TensorBoard's buckets: a value on an inner edge counts to its left
    return np.maximum(np.diff(cum), 0.0)


def quantiles(buckets: np.ndarray, qs) -> np.ndarray:
    """Approximate quantiles of the values behind ``buckets`` (NaN when empty).

    >>> quantiles(np.array([[0.0, 10.0, 10.0]]), [0.5])
    array([5.])
    """
    buckets = np.asarray(buckets, dtype=np.float64).reshape(-1, 3)
    qs = np.atleast_1d(np.asarray(qs, dtype=np.float64))
    total = buckets[:, 2].sum()
    if total <= 0:
        return np.full(qs.shape, np.nan)
    points = np.unique(buckets[:, :2])
    cum = cumulative(buckets, points) / total
    # the cumulative curve is flat where there is no data: take the leftmost x reaching q
    idx = np.clip(np.searchsorted(cum, qs, side="left"), 0, len(points) - 1)
    out = np.empty(qs.shape)
    for i, (q, j) in enumerate(zip(qs, idx)):
        if j == 0 or cum[j] == cum[j - 1]:
            out[i] = points[j]
        else:
            frac = (q - cum[j - 1]) / (cum[j] - cum[j - 1])
            out[i] = points[j - 1] + frac * (points[j] - points[j - 1])
    return out


def moments(buckets: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation from the bucket midpoints (NaN when empty)."""
    buckets = np.asarray(buckets, dtype=np.float64).reshape(-1, 3)
    count = buckets[:, 2]
    total = count.sum()
    if total <= 0:
        return float("nan"), float("nan")
    mid = (buckets[:, 0] + buckets[:, 1]) / 2
    mean = float((mid * count).sum() / total)
    var = float(((mid - mean) ** 2 * count).sum() / total)
    return mean, var ** 0.5
