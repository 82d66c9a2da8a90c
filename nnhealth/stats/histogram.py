"""Histogram buckets on fixed edges, shared by every step, layer and rank.

Fixed edges are what make histograms mergeable by plain addition (across
micro-batches, steps and ranks) and cheap to compute on any device: the bucket
of a value is one vectorised ``floor(log|x| / log 1.1)``, no min/max pass and
no host synchronisation. The layout mirrors TensorBoard's default histogram
(exponential buckets with ratio 1.1 from 1e-12 to 1e20) on both signs, plus an
exact-zero bucket in the middle, so values are ordered left to right::

    [most negative ... -1e-12] [0] [1e-12 ... largest positive]
"""
from __future__ import annotations

import functools
import math

import numpy as np

RATIO = 1.1
LOG_RATIO = math.log(RATIO)
#: smallest and largest magnitude exponent (base RATIO) with a bucket of its own
K_MIN = math.floor(math.log(1e-12) / LOG_RATIO)
K_MAX = math.floor(math.log(1e20) / LOG_RATIO)
#: buckets on each side of zero
K = K_MAX - K_MIN + 1
#: index of the exact-zero bucket
ZERO = K
#: total number of buckets
NUM_BUCKETS = 2 * K + 1


#: magnitudes below this all fall in the lowest bucket anyway; it keeps log() away from 0
TINY = 1e-30


def _sign(ops, z):
    own = getattr(ops, "sign", None)
    return own(z) if own is not None else (z > 0) * 1.0 - (z < 0) * 1.0


def bucket_index(ops, z):
    """Bucket of every element of finite ``z``, on z's device, as one arithmetic expression
    without masks: ZERO + sign(z) * (1 + clip(floor(ln|z| / ln 1.1), K_MIN, K_MAX) - K_MIN)."""
    mag = ops.clip(ops.abs(z), TINY, math.inf)
    k = ops.clip(ops.floor(ops.log(mag) / LOG_RATIO), K_MIN, K_MAX) + (1 - K_MIN)
    return ops.to_index(_sign(ops, z) * k + ZERO)


def _magnitude_edges() -> np.ndarray:
    ks = np.arange(K_MIN, K_MAX + 2, dtype=np.float64)
    edges = RATIO**ks
    edges[0] = 0.0  # the lowest bucket also holds everything below 1e-12
    return edges


_MAG = _magnitude_edges()


def magnitude_bucket(v: float) -> int:
    """The magnitude exponent of ``v`` > 0 as the reference defines it: floor(ln v / ln 1.1)."""
    return math.floor(math.log(v) / LOG_RATIO)


@functools.lru_cache(maxsize=None)
def lower_edges(dtype) -> np.ndarray:
    """The smallest value of float type ``dtype`` in each magnitude bucket K_MIN+1..K_MAX, by the
    float64 log the reference uses (an exact power of 1.1 can fall either side of ``RATIO**k``)."""
    dtype = np.dtype(dtype).type
    out = np.empty(K - 1, dtype=dtype)
    up, down = dtype(np.inf), dtype(0)
    for i, k in enumerate(range(K_MIN + 1, K_MAX + 1)):
        v = dtype(RATIO ** k)
        while magnitude_bucket(float(np.nextafter(v, down))) >= k:
            v = np.nextafter(v, down)
        while magnitude_bucket(float(v)) < k:
            v = np.nextafter(v, up)
        out[i] = v
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=None)
def signed_boundaries(dtype) -> np.ndarray:
    """Ascending boundaries of float type ``dtype`` such that the bucket of a finite value ``v`` is
    the number of boundaries <= v (``searchsorted(side="right")``, ``torch.bucketize(right=True)``),
    exactly as the reference defines it: a negative value moves up a bucket just above the negated
    lower edge of its magnitude, zero (and -0.0) has its own bucket, a positive value moves up at
    its magnitude's lower edge. A last boundary, +inf, gives infinity a slot of its own after the
    histogram's (one-pass code sends non-finite values there, to be dropped)."""
    dtype = np.dtype(dtype).type
    low = lower_edges(dtype)
    negative = np.nextafter(-low[::-1], dtype(np.inf))
    out = np.concatenate([negative, [dtype(0), np.nextafter(dtype(0), dtype(1))], low, [dtype(np.inf)]])
    out = out.astype(dtype)
    out.flags.writeable = False
    return out


def bucket_edges() -> tuple[np.ndarray, np.ndarray]:
    """(left, right) edge of every bucket, ascending; the zero bucket is [0, 0]."""
    pos_left, pos_right = _MAG[:-1], _MAG[1:]
    left = np.concatenate([-pos_right[::-1], [0.0], pos_left])
    right = np.concatenate([-pos_left[::-1], [0.0], pos_right])
    return left, right


LEFT, RIGHT = bucket_edges()


def quantiles(hist: np.ndarray, qs, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """Quantiles of the values counted in ``hist``, interpolated within a bucket.

    Interpolation is geometric within a bucket (linear in log-magnitude), so
    the error is a fraction of the 10% bucket width. ``vmin``/``vmax`` (the
    exact extremes, when known) clamp the result so the end buckets, which
    are wide, do not invent values beyond the data.
    """
    hist = np.asarray(hist, dtype=np.float64)
    qs = np.atleast_1d(np.asarray(qs, dtype=np.float64))
    total = hist.sum()
    if total <= 0:
        return np.full(qs.shape, np.nan)
    cum = np.cumsum(hist)
    out = np.empty(qs.shape)
    for i, q in enumerate(qs):
        target = q * total
        b = int(np.searchsorted(cum, target, side="left"))
        b = min(b, len(hist) - 1)
        while b < len(hist) - 1 and hist[b] == 0:
            b += 1
        before = cum[b] - hist[b]
        frac = 0.0 if hist[b] == 0 else min(max((target - before) / hist[b], 0.0), 1.0)
        lo, hi = LEFT[b], RIGHT[b]
        if b == ZERO:
            value = 0.0
        elif b > ZERO:
            lo = max(lo, 1e-300)
            value = math.exp(math.log(lo) + frac * (math.log(hi) - math.log(lo)))
        else:  # negative side: magnitude shrinks from left to right
            mlo, mhi = max(-hi, 1e-300), -lo
            value = -math.exp(math.log(mhi) - frac * (math.log(mhi) - math.log(mlo)))
        out[i] = value
    if vmin is not None and math.isfinite(vmin):
        out = np.maximum(out, vmin)
    if vmax is not None and math.isfinite(vmax):
        out = np.minimum(out, vmax)
    return out
