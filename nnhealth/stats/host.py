"""The summary of an array in host memory, in a few vectorised numpy passes.

Used for numpy arrays and for PyTorch tensors on the CPU (viewed as numpy
arrays without a copy): numpy's reductions, comparisons and ``log`` are
vectorised for the machine and several times faster on a CPU than the same
element-wise ops dispatched one by one, and ``count_nonzero`` of a mask is
almost free. The result is the packed vector :func:`~.compute.summarize`
defines, field for field. Where the C kernels were built, :mod:`.compiled` computes
the same vector for finite data in one pass over each cache-sized piece; this
numpy path is the fallback, and always the path for data with NaN or Inf.

Three things keep the passes few:

- **Finite data is the common case, and on the host it is known for free**:
  the plain sum is finite only when every value is, and reading it waits for
  nothing (the values are computed when the call returns). Only data with
  NaN or Inf takes the masked path, which replaces them by zeros once and
  corrects the few fields they touch.
- **The sign of the data is known from min and max**: non-negative data (the
  output of a ReLU) needs no ``abs`` (abssum is the sum), no negative-side
  count and no sign in the histogram index.
- **The histogram is computed in chunks** that stay in the cache, on a wide
  index range covering every representable magnitude, and folded onto the
  fixed buckets afterwards; zeros are counted exactly and moved to the zero
  bucket, so no per-element clipping or zero test is needed.
"""
from __future__ import annotations

import math
import sys
import threading
from functools import lru_cache

import numpy as np

from . import compiled
from . import histogram as H
from .kinds import Kind
from .summary import HEADER, Layout

#: elements per histogram chunk: a chunk, its scratch copy and its int32 indices stay in the cache
CHUNK = 1 << 17
#: the smallest magnitude given its own wide bucket (everything below lands in the lowest fixed bucket)
TINY = H.TINY
#: wide magnitude index 0 is the bucket of TINY; ln|x| / ln 1.1 - KLOW >= 0 for every |x| >= TINY
KLOW = math.floor(math.log(TINY) / H.LOG_RATIO)
#: wide magnitude buckets needed for the largest finite value of each float type
WIDTH = {np.dtype(t): int(math.log(np.finfo(t).max) / H.LOG_RATIO) - KLOW + 2 for t in (np.float32, np.float64)}


def _fold_map(width: int) -> np.ndarray:
    """Fixed positive-side bucket offset (0..K-1) of every wide magnitude bucket (the ends clamped)."""
    k = np.arange(width) + KLOW
    return np.clip(k, H.K_MIN, H.K_MAX) - H.K_MIN


_FOLD = {dt: _fold_map(w) for dt, w in WIDTH.items()}


def _jitter(dtype) -> np.ndarray:
    """TINY x 1.1^(i mod 16), added to magnitudes before the log: it keeps log() away from 0, changes
    no magnitude that has a bucket of its own (it is far below their precision), and spreads zeros
    over 16 wide buckets (all folded into the lowest fixed one), so counting a mostly-zero ReLU
    output does not increment one counter over and over."""
    return (TINY * H.RATIO ** (np.arange(CHUNK) % 16)).astype(dtype)


_JITTER = {dt: _jitter(dt) for dt in WIDTH}
#: CHUNK ones per float type (read-only): a BLAS dot product with them is a fast, accurate sum
ONES = {dt: np.ones(CHUNK, dtype=dt) for dt in WIDTH}
for _ones in ONES.values():
    _ones.flags.writeable = False
#: the integer type with the float type's width (its sign bit is the float's)
_SIGN_BITS = {np.dtype(np.float32): np.int32, np.dtype(np.float64): np.int64}


def _counter():
    """``bincount`` of int32 indices: torch's when torch is loaded (about twice numpy's speed, on the
    same memory without a copy), numpy's otherwise."""
    torch = sys.modules.get("torch")
    if torch is None:
        return lambda idx, n: np.bincount(idx, minlength=n)[:n]
    return lambda idx, n: torch.bincount(torch.from_numpy(idx), minlength=n)[:n].numpy()


def _magnitude_hist(m: np.ndarray, scratch: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Counts per wide magnitude bucket of ``m`` (flat, >= 0, finite): floor(ln m / ln 1.1) - KLOW,
    with everything below TINY (zeros included) in bucket 0."""
    width = WIDTH[m.dtype]
    counts = np.zeros(width, dtype=np.int64)
    count = _counter()
    for start in range(0, m.size, CHUNK):
        part = m[start:start + CHUNK]
        f = scratch[:part.size]
        np.add(part, _JITTER[m.dtype][:part.size], out=f)
        np.log(f, out=f)
        np.divide(f, H.LOG_RATIO, out=f)
        np.floor(f, out=f)                # before the offset: adding it first could round up an edge value
        np.subtract(f, KLOW, out=f)
        idx = index[:part.size]
        np.copyto(idx, f, casting="unsafe")
        counts += count(idx, width)
    return counts


def _signed_hist(z: np.ndarray, scratch: np.ndarray, index: np.ndarray, sign: np.ndarray) -> tuple[np.ndarray, float]:
    """Counts per wide signed bucket of ``z`` (flat, finite, mixed signs): positive magnitudes above
    ``width``, negative ones mirrored below it, zeros with the smallest positive magnitudes; and the
    sum of |z|, taken from the magnitudes while they are in the cache."""
    width = WIDTH[z.dtype]
    counts = np.zeros(2 * width + 1, dtype=np.int64)
    count = _counter()
    ones = ONES[z.dtype]
    abssum = 0.0
    # wide index = width + m for x >= +0 and width - m for x < 0, m = 1 + floor(f) (floored before
    # the sign is applied, so exact powers of 1.1 too); the sign is applied in integers, from the
    # sign bit: with s = 0 or -1, (m ^ s) - s is m or -m
    bits = _SIGN_BITS[z.dtype]
    signs = work_array(np.int32, "signs")
    for start in range(0, z.size, CHUNK):
        part = z[start:start + CHUNK]
        f = scratch[:part.size]
        np.abs(part, out=f)
        abssum += float(np.dot(f, ones[:part.size]))
        np.add(f, _JITTER[z.dtype][:part.size], out=f)
        np.log(f, out=f)
        np.divide(f, H.LOG_RATIO, out=f)
        np.floor(f, out=f)                # before the offset: adding it first could round up an edge value
        np.subtract(f, KLOW - 1, out=f)
        idx = index[:part.size]
        np.copyto(idx, f, casting="unsafe")
        s = sign[:part.size]
        np.add(part, 0.0, out=s)          # -0.0 + 0.0 is +0.0: every zero counts on the positive side
        neg = signs[:part.size]
        np.right_shift(s.view(bits), 8 * s.itemsize - 1, out=neg, casting="unsafe")  # 0, or -1 below zero
        np.bitwise_xor(idx, neg, out=idx)
        np.subtract(idx, neg, out=idx)
        np.add(idx, width, out=idx)
        counts += count(idx, 2 * width + 1)
    return counts, abssum


_LOCAL = threading.local()


def work_array(dtype, kind: str = "values", size: int = CHUNK) -> np.ndarray:
    """A work array of ``dtype`` with at least ``size`` elements (flat) for this thread, reused from
    call to call: fresh arrays this large are mapped from the operating system and paged in again on
    every call (a page fault per 4 KiB), which costs more than the arithmetic done in them. ``kind``
    tells apart arrays needed at the same time. Pools keep the largest size asked for."""
    pool = getattr(_LOCAL, "pool", None)
    if pool is None:
        pool = _LOCAL.pool = {}
    key = (np.dtype(dtype), kind)
    got = pool.get(key)
    if got is None or got.size < size:
        got = pool[key] = np.empty(max(size, CHUNK), dtype=dtype)
    return got


def _scratch(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return work_array(z.dtype), work_array(np.int32, "index")


def _one_sided_hist(z: np.ndarray, negative: bool, zeros: int) -> np.ndarray:
    """The fixed-edge histogram of flat finite ``z`` whose values all have one sign."""
    out = np.zeros(H.NUM_BUCKETS, dtype=np.float64)
    side = np.bincount(_FOLD[z.dtype], weights=_magnitude_hist(np.negative(z) if negative else z, *_scratch(z)),
                       minlength=H.K)
    if negative:
        out[:H.ZERO] = side[::-1]
        out[H.ZERO - 1] -= zeros  # zeros sat in the smallest magnitude bucket: they have their own
    else:
        out[H.ZERO + 1:] = side
        out[H.ZERO + 1] -= zeros
    out[H.ZERO] = zeros
    return out


def _fold_signed(wide: np.ndarray, fold: np.ndarray, zeros: int) -> np.ndarray:
    """The fixed-edge histogram from the wide signed counts of :func:`_signed_hist`."""
    width = fold.size
    out = np.zeros(H.NUM_BUCKETS, dtype=np.float64)
    out[H.ZERO + 1:] = np.bincount(fold, weights=wide[width + 1:], minlength=H.K)
    out[:H.ZERO] = np.bincount(fold, weights=wide[:width][::-1], minlength=H.K)[::-1]
    out[H.ZERO + 1] -= zeros  # every zero was counted on the positive side
    out[H.ZERO] = zeros
    return out


def sum_of_abs(x: np.ndarray) -> float:
    """Sum of |x| of flat ``x``, a cache-sized piece at a time (BLAS dot products with ones)."""
    ones, total = ONES[x.dtype], 0.0
    buf = work_array(x.dtype)
    for start in range(0, x.size, CHUNK):
        part = np.abs(x[start:start + CHUNK], out=buf[:min(CHUNK, x.size - start)])
        total += float(np.dot(part, ones[:part.size]))
    return total


def _sum(x: np.ndarray) -> float:
    """Sum of flat ``x`` (pairwise): torch's vectorised cascade for float32 when torch is loaded."""
    torch = sys.modules.get("torch")
    if torch is not None and x.dtype == np.float32:
        return float(torch.from_numpy(x).sum().numpy())  # a CPU value: read through numpy, no .item()
    return float(np.add.reduce(x))


def sum_of_squares(x: np.ndarray) -> float:
    """Sum of squares of flat ``x``: BLAS dot products over cache-sized pieces, added in float64."""
    if x.size <= CHUNK:
        return float(np.dot(x, x))
    return math.fsum(float(np.dot(p, p)) for p in (x[i:i + CHUNK] for i in range(0, x.size, CHUNK)))


def centred_sums(x: np.ndarray, total: float) -> tuple[float, float]:
    """(sum, sum of squares) of flat finite float32 ``x``, from sums of ``x - c`` (c its first value)
    taken back in float64: float32 sums of x itself round away the variance of values pinned near c
    (a saturated sigmoid at 0.999 +- 1e-4 has a variance of 1e-8, below their rounding). ``total``:
    the plain sum, returned as is when ``x`` is not float32 or ``c`` is 0."""
    c = float(x[0]) if x.size else 0.0
    if x.dtype != np.float32 or c == 0.0 or abs(c) >= 1e15:
        return total, sum_of_squares(x)
    work, shift = work_array(np.float32, "centred"), np.float32(c)
    dsum = dsq = 0.0
    for i in range(0, x.size, CHUNK):
        d = np.subtract(x[i:i + CHUNK], shift, out=work[:min(CHUNK, x.size - i)])
        dsum += _sum(d)
        dsq += float(np.dot(d, d))
    n = float(x.size)
    return dsum + n * c, dsq + 2.0 * c * dsum + n * c * c


def _unit_view(z: np.ndarray, axis: int | None, default_axis) -> tuple[np.ndarray, int]:
    """``z`` as (outer, units, inner) without copying, and the number of samples per unit."""
    if z.ndim == 1:
        return z.reshape(1, -1, 1), 1
    axis = default_axis(z.ndim) if axis is None else axis
    axis = axis % z.ndim
    outer = math.prod(z.shape[:axis])
    inner = math.prod(z.shape[axis + 1:])
    return z.reshape(outer, z.shape[axis], inner), outer * inner


def _per_unit_count(mask3: np.ndarray) -> np.ndarray:
    """Per-unit number of True entries of an (outer, units, inner) mask, exact."""
    outer, _, inner = mask3.shape
    m = mask3.view(np.uint8)
    if inner > 1:
        m = np.add.reduce(m, axis=2, dtype=_counter_dtype(inner))
    else:
        m = m[:, :, 0]
    return np.add.reduce(m, axis=0, dtype=_counter_dtype(outer * inner)).astype(np.float64)


def _counter_dtype(n: int):
    """The narrowest integer type that counts ``n`` things exactly: narrow sums are faster."""
    return np.uint16 if n < 2**16 else np.int64


#: rows up to which per-unit sums accumulate in the data's own precision (sequentially, down a column)
SHORT_COLUMNS = 4096


def _per_unit_sum(x3: np.ndarray, square: bool = False) -> np.ndarray:
    """Per-unit sum (of squares) of an (outer, units, inner) array, as float64: pairwise along the
    contiguous axis, then down the columns (in float64 unless they are short)."""
    if x3.shape[2] > 1:
        if square:
            x3 = np.square(x3, out=work_array(x3.dtype, "squares", x3.size)[:x3.size].reshape(x3.shape))
        x3 = np.add.reduce(x3, axis=2)
    elif x3.shape[0] <= SHORT_COLUMNS:
        x2 = x3[:, :, 0]
        return (np.einsum("ij,ij->j", x2, x2) if square else np.add.reduce(x2, axis=0)).astype(np.float64)
    else:
        x3 = np.square(x3[:, :, 0]) if square else x3[:, :, 0]
    return np.add.reduce(x3, axis=0, dtype=np.float64)


def summarize_host(a: np.ndarray, kind: Kind, *, hist: bool, units: bool, moments: bool,
                   unit_axis: int | None, default_axis) -> tuple[Layout, np.ndarray]:
    """Packed summary of a non-empty float32/float64 array ``a`` (see the module doc)."""
    return _summarize(a if a.flags.c_contiguous else np.ascontiguousarray(a), kind, hist, units, moments,
                      unit_axis, default_axis)


def _summarize(a, kind, hist, units, moments, unit_axis, default_axis):
    kernels = compiled.kernels()
    if kernels is not None:
        got = _summarize_compiled(kernels, a, kind, hist, units, moments, unit_axis, default_axis)
        if got is not None:
            return got
    with np.errstate(all="ignore"):  # inf - inf in a sum is how non-finite data is detected
        return _summarize_numpy(a, kind, hist, units, moments, unit_axis, default_axis)


@lru_cache(maxsize=1024)
def _layout(hist: bool, units: int, moments: bool) -> Layout:
    """The (immutable) Layout of these parts, made once: every activation of every sampled step has one."""
    return Layout(hist=hist, units=units, moments=moments)


def _summarize_compiled(kernels, a, kind, hist, units, moments, unit_axis, default_axis):
    """The same packed vector from the compiled single-pass kernel; None for data it leaves to numpy
    (non-finite values, a saturation test it does not know)."""
    per_unit = (units or moments) and a.ndim >= 1
    z3, samples = _unit_view(a, unit_axis, default_axis) if per_unit else (a.reshape(1, 1, -1), a.size)
    layout = _layout(bool(hist), z3.shape[1] if per_unit else 0, bool(moments and per_unit))
    out = kernels.activation(z3, kind, hist, per_unit, layout.moments, layout.size)
    if out is None:
        return None
    out[len(HEADER) - 1] = samples
    return layout, out


def _summarize_numpy(a, kind, hist, units, moments, unit_axis, default_axis):
    from .backend import NUMPY

    n = a.size
    flat = a.reshape(-1)
    total = _sum(flat)
    finite = None
    if math.isfinite(total):
        z, nonfinite = a, 0
        lo, hi = float(flat.min()), float(flat.max())
    else:  # NaN or Inf somewhere (or a sum that overflowed): replace them by zeros once
        finite = np.isfinite(a)
        nonfinite = n - int(np.count_nonzero(finite))
        z = np.where(finite, a, a.dtype.type(0))
        flat = z.reshape(-1)
        total = _sum(flat)
        lo = float(np.min(a, where=finite, initial=np.inf))
        hi = float(np.max(a, where=finite, initial=-np.inf))
    count = n - nonfinite
    total, sumsq = centred_sums(flat, total)
    positive_mask = np.greater(z, 0, out=work_array(np.bool_, "positive", n)[:n].reshape(z.shape))
    positive = int(np.count_nonzero(positive_mask))
    counted = None
    if lo >= 0:        # includes "no finite value": then every z is a replaced zero
        abssum, negative = total, 0
    elif hi <= 0:
        abssum, negative = -total, count - int(np.count_nonzero(np.equal(z, 0))) + nonfinite
    elif hist:         # the histogram's pass gives the sum of magnitudes and the negative count
        work, index = _scratch(flat)
        wide, abssum = _signed_hist(flat, work, index, work_array(flat.dtype, "sign"))
        negative = int(wide[:WIDTH[flat.dtype]].sum())
        counted = _fold_signed(wide, _FOLD[flat.dtype], count - positive - negative + nonfinite)
    else:
        abssum = sum_of_abs(flat)
        negative = int(np.count_nonzero(np.less(z, 0)))
    zeros = count - positive - negative
    saturated_mask = None
    if kind.saturated is not None:
        saturated_mask = kind.saturated(NUMPY, z)
        if finite is not None:
            saturated_mask &= finite
    saturated = int(np.count_nonzero(saturated_mask)) if saturated_mask is not None else 0

    n_units, samples, unit_parts = 0, n, []
    if (units or moments) and a.ndim >= 1:
        z3, samples = _unit_view(z, unit_axis, default_axis)
        n_units = z3.shape[1]
        unit_parts.append(_per_unit_count(positive_mask.reshape(z3.shape)))
        unit_parts.append(_per_unit_count(saturated_mask.reshape(z3.shape)) if saturated_mask is not None
                          else np.zeros(n_units))
        if moments:
            unit_parts.append(_per_unit_sum(z3))
            unit_parts.append(_per_unit_sum(z3, square=True))
    layout = Layout(hist=hist, units=n_units, moments=moments and n_units > 0)
    header = np.array([count, total, sumsq, abssum, lo if count else np.inf, hi if count else -np.inf,
                       nonfinite, zeros, positive, saturated, samples], dtype=np.float64)
    parts = [header]
    if hist:
        if counted is None:  # values of one sign (non-negative includes "no finite value")
            counted = _one_sided_hist(flat, lo < 0, zeros + nonfinite)
        counted[H.ZERO] -= nonfinite  # the replaced values are not data
        parts.append(counted)
    parts.extend(unit_parts)
    out = np.concatenate(parts)
    assert out.size == layout.size and len(header) == len(HEADER)
    return layout, out
