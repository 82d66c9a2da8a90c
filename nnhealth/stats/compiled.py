"""Compiled single-pass kernels for the host statistics (numba), with numpy as the fallback.

numpy needs a pass over memory per statistic (a sum, a square, a ``log`` for
the histogram, a mask per count); these kernels read each cache-sized piece
of the data once and take every statistic of it while it is in the cache:

- **Sums vectorise in float32**: they accumulate in the data's precision over
  blocks of BLOCK values (an inner loop the compiler turns into SIMD lanes,
  reassociation allowed) and the blocks add up in float64, so the error stays
  that of a 4096-term sum.
- **Non-finite data stays with numpy**: numpy's min and max (vectorised, and
  NaN-propagating) say whether the data is finite before the activation
  kernel runs; for parameters, a finite sum proves it (inf and NaN propagate
  through any order of additions). Either way, NaN and Inf take the numpy
  path, which is exact for them, so the kernels never test for NaN.
- **The histogram needs no log**: the top bits of a value (exponent and four
  mantissa bits: 1/16 octave, narrower than the 10% between edges) pick a
  candidate bucket from a table, and one integer comparison with the bit
  pattern of the next edge corrects it. The edges are the smallest values
  with ``floor(ln|x| / ln 1.1) >= k`` in float64, the reference definition,
  so every value lands exactly where it says, at powers of 1.1 too. Four
  interleaved sub-histograms keep a run of equal values (the zeros of a
  ReLU) from waiting on its own increments.

numba is imported on the first :func:`kernels` call; without it (or with
``NNHEALTH_JIT=0``) :func:`kernels` is None and callers use numpy. Each
kernel compiles once per float type (``cache=True`` keeps it across runs).
"""
from __future__ import annotations

import math
import os

import numpy as np

from . import histogram as H
from .kinds import KINDS, SATURATION_DERIVATIVE
from .summary import HEADER

#: values per float32 accumulator block: its rounding error stays small, its loop vectorises
BLOCK = 4096
#: values per piece read once for every statistic (float64: 256 KiB, within a core's L2 cache)
PIECE = 1 << 15
#: reassociation for sums, never "no NaN/Inf": that would let the compiler drop what detects them
SUMS = {"reassoc", "contract", "nsz", "arcp"}
NB, ZERO = H.NUM_BUCKETS, H.ZERO
FIELDS = len(HEADER)
#: the histogram's index arithmetic, unsigned
ONE, NOUGHT, LANES, NBU, ZEROU = np.uint64(1), np.uint64(0), np.uint64(3), np.uint64(NB), np.uint64(ZERO)

_DEFERRED: dict = {}


def _compiled(signatures=None, **options):
    """Registers a kernel, compiled by :func:`kernels` (numba is imported only then); helpers come
    before the kernels that call them, since kernels with signatures compile when registered."""
    def mark(fn):
        _DEFERRED[fn.__name__] = (fn, signatures, options)
        return fn
    return mark


@_compiled(fastmath=SUMS)
def _sums(p, zero):
    """(sum, sum of squares, sum of |x|) of ``p``, float64 from blocks in p's precision (``zero`` is
    0 of that type). Helpers take views indexed from 0: an offset index defeats vectorisation."""
    s_all = q_all = m_all = 0.0
    blocks = p.size // BLOCK
    for k in range(blocks):
        base = k * BLOCK
        s = q = m = zero
        for j in range(BLOCK):
            x = p[base + j]
            s += x
            q += x * x
            m += abs(x)
        s_all += s
        q_all += q
        m_all += m
    rest = p[blocks * BLOCK:]  # a block too, shorter: vectorised like the others
    s = q = m = zero
    for j in range(rest.size):
        x = rest[j]
        s += x
        q += x * x
        m += abs(x)
    return s_all + s, q_all + q, m_all + m


@_compiled(fastmath=SUMS)
def _sums_copying(p, out, zero):
    """:func:`_sums` of ``p`` that also writes ``p`` into ``out`` (as long), in the same pass."""
    s_all = q_all = m_all = 0.0
    blocks = p.size // BLOCK
    for k in range(blocks):
        base = k * BLOCK
        s = q = m = zero
        for j in range(BLOCK):
            x = p[base + j]
            out[base + j] = x
            s += x
            q += x * x
            m += abs(x)
        s_all += s
        q_all += q
        m_all += m
    rest, into = p[blocks * BLOCK:], out[blocks * BLOCK:]
    s = q = m = zero
    for j in range(rest.size):
        x = rest[j]
        into[j] = x
        s += x
        q += x * x
        m += abs(x)
    return s_all + s, q_all + q, m_all + m


@_compiled()
def _histogram(bits, table, edges, shift, counts):
    """Adds the buckets of ``bits`` (unsigned float bit patterns) to 4 interleaved sub-histograms;
    unsigned arithmetic throughout: no negative-index checks in the loop."""
    magnitude = edges[edges.size - 1]  # the unreachable last edge is every bit but the sign
    sign = np.uint64(bits.itemsize * 8 - 1)
    for i in range(bits.size):
        b = np.uint64(bits[i])
        m = b & magnitude
        v = np.uint64(table[m >> shift])  # slot: 0 zero, 1 + offset of the magnitude bucket
        v += np.uint64(m >= edges[v + ONE])
        s = b >> sign                      # 1 below zero: (v ^ -s) + s is -v (mod 2^64), else v
        counts[(np.uint64(i) & LANES) * NBU + ZEROU + (v ^ (NOUGHT - s)) + s] += 1


# one test per kind, in y's precision as numpy computes it (``o`` 1, ``t`` the threshold); a kernel
# takes the test as an argument and compiles once per test, so no loop branches on the kind
@_compiled(inline="always")
def _fires(y, z, o, t):
    return y > z


@_compiled(inline="always")
def _sigmoid(y, z, o, t):
    return y * (o - y) < t


@_compiled(inline="always")
def _tanh(y, z, o, t):
    return o - y * y < t


@_compiled(inline="always")
def _softsign(y, z, o, t):
    return abs(y) > t


@_compiled(inline="always")
def _hardtanh(y, z, o, t):
    return abs(y) >= o


@_compiled(inline="always")
def _hardsigmoid(y, z, o, t):
    return (y <= z) | (y >= o)


@_compiled(inline="always")
def _relu6(y, z, o, t):
    return y >= t


@_compiled(inline="always")
def _count(rows, units, inner, test, c, counts):
    """Per-unit counts of the values of ``rows`` (flat (rows, units, inner)) that pass ``test``."""
    z, o, t = c[0], c[1], c[2]
    for r in range(rows.size // (units * inner)):
        if inner == 1:  # dense layers: the unit axis is contiguous, the counts update as vectors
            row = rows[r * units:(r + 1) * units]
            for u in range(units):
                counts[u] += test(row[u], z, o, t)
            continue
        for u in range(units):
            seg = rows[(r * units + u) * inner:(r * units + u + 1) * inner]
            n = 0
            for j in range(seg.size):
                n += test(seg[j], z, o, t)
            counts[u] += n


@_compiled()
def _unit_counts(rows, units, inner, code, c, fired, saturated):
    """Per-unit counts of values > 0 and of saturated values (by kind ``code``) in ``rows``."""
    _count(rows, units, inner, _fires, c, fired)
    if code == 1:
        _count(rows, units, inner, _sigmoid, c, saturated)
    elif code == 2:
        _count(rows, units, inner, _tanh, c, saturated)
    elif code == 3:
        _count(rows, units, inner, _softsign, c, saturated)
    elif code == 4:
        _count(rows, units, inner, _hardtanh, c, saturated)
    elif code == 5:
        _count(rows, units, inner, _hardsigmoid, c, saturated)
    elif code == 6:
        _count(rows, units, inner, _relu6, c, saturated)


@_compiled(fastmath=SUMS)
def _unit_moments(rows, units, inner, zero, total, squares):
    """Per-unit float64 sums and sums of squares of ``rows``, flat (rows, units, inner)."""
    for r in range(rows.size // (units * inner)):
        if inner == 1:
            row = rows[r * units:(r + 1) * units]
            for u in range(units):
                x = float(row[u])
                total[u] += x
                squares[u] += x * x
            continue
        for u in range(units):
            s, q, _ = _sums(rows[(r * units + u) * inner:(r * units + u + 1) * inner], zero)
            total[u] += s
            squares[u] += q


@_compiled()
def _negatives(p, zero):
    n = 0
    for j in range(p.size):
        n += p[j] < zero
    return n


def _signatures(result: str, *args: str) -> list:
    """numba signatures for float32 and float64 data: ``f`` a float array, ``u`` the unsigned
    integers of its width (bit patterns), ``w`` a float array written to; arrays C-contiguous and the
    ones only read typed read-only (writable ones fit too)."""
    from numba import types as T

    out = []
    for f, u in ((T.float32, T.uint32), (T.float64, T.uint64)):
        names = {"f": T.Array(f, 1, "C", readonly=True), "w": T.Array(f, 1, "C"),
                 "u": T.Array(u, 1, "C", readonly=True),
                 "t": T.Array(T.uint16, 1, "C", readonly=True), "e": T.Array(T.uint64, 1, "C", readonly=True),
                 "o": T.float64[::1], "z": f, "n": T.int64, "b": T.boolean, "d": T.float64, "s": T.uint64,
                 "v": T.void}
        out.append(T.Tuple([names[r] for r in result])(*(names[a] for a in args))
                   if len(result) > 1 else names[result](*(names[a] for a in args)))
    return out


@_compiled(lambda: _signatures("v", "f", "u", "n", "n", "b", "n", "f", "t", "e", "s", "b", "b", "b", "o"))
def _activation(a, bits, units, inner, per_unit, code, c, table, edges, shift, hist, moments, signed, out):
    """Every field of the packed vector but min, max and ``samples`` into ``out`` (zeros), for the
    flat, finite (outer, units, inner) array ``a`` (``signed``: it has values below zero)."""
    n = a.size
    row = units * inner
    group = max(1, PIECE // row) * row  # whole rows, about a piece
    zero = c[0]
    counts = np.zeros(4 * NB if hist else 0, np.int64)
    fired = np.zeros(units, np.int64)
    saturated = np.zeros(units, np.int64)
    total = np.zeros(units)
    squares = np.zeros(units)
    s_all = q_all = m_all = 0.0
    negative = 0
    for g in range(0, n, group):
        rows = a[g:min(g + group, n)]
        for start in range(0, rows.size, PIECE):
            p = rows[start:min(start + PIECE, rows.size)]
            s, q, m = _sums(p, zero)
            s_all += s
            q_all += q
            m_all += m
            if hist:
                _histogram(bits[g + start:g + start + p.size], table, edges, shift, counts)
            elif signed:
                negative += _negatives(p, zero)
        _unit_counts(rows, units, inner, code, c, fired, saturated)
        if moments:
            _unit_moments(rows, units, inner, zero, total, squares)
    positive = fired.sum()
    at = FIELDS
    if hist:
        folded = counts.reshape(4, NB).sum(axis=0)
        negative = folded[:ZERO].sum()
        out[at:at + NB] = folded
        at += NB
    out[0], out[1], out[2], out[3] = n, s_all, q_all, m_all
    out[7], out[8], out[9] = n - positive - negative, positive, saturated.sum()
    if per_unit:
        out[at:at + units] = fired
        out[at + units:at + 2 * units] = saturated
        if moments:
            out[at + 2 * units:at + 3 * units] = total
            out[at + 3 * units:at + 4 * units] = squares


@_compiled(lambda: _signatures("ddd", "f", "z"))
def _columns(a, zero):
    """(sum of squares, sum, sum of |x|) of flat ``a``, a piece at a time (NaN or Inf when it has
    NaN or Inf: inf and NaN propagate through any order of additions)."""
    s_all = q_all = m_all = 0.0
    for start in range(0, a.size, PIECE):
        s, q, m = _sums(a[start:min(start + PIECE, a.size)], zero)
        s_all += s
        q_all += q
        m_all += m
    return q_all, s_all, m_all


@_compiled(lambda: _signatures("ddd", "f", "w", "z"))
def _columns_copying(a, out, zero):
    """:func:`_columns` of flat ``a`` that also copies it into ``out``: a snapshot of the parameters
    taken by the pass that measures them."""
    s_all = q_all = m_all = 0.0
    for start in range(0, a.size, PIECE):
        stop = min(start + PIECE, a.size)
        s, q, m = _sums_copying(a[start:stop], out[start:stop], zero)
        s_all += s
        q_all += q
        m_all += m
    return q_all, s_all, m_all


@_compiled(lambda: _signatures("d", "f", "f", "z"), fastmath=SUMS)
def _difference(a, b, zero):
    """Sum of (a - b)^2, float64 from blocks in the data's precision (NaN or Inf when either is)."""
    total = 0.0
    blocks = a.size // BLOCK
    for k in range(blocks):
        base = k * BLOCK
        q = zero
        for j in range(BLOCK):
            d = a[base + j] - b[base + j]
            q += d * d
        total += q
    for i in range(blocks * BLOCK, a.size):
        e = float(a[i]) - float(b[i])
        total += e * e
    return total


def _bucket(v: float) -> int:
    """The magnitude exponent of ``v`` > 0 as the reference defines it: floor(ln v / ln 1.1)."""
    return math.floor(math.log(v) / H.LOG_RATIO)


def _lower_edges(dtype) -> np.ndarray:
    """The smallest value of float type ``dtype`` in each magnitude bucket K_MIN+1..K_MAX, by the
    float64 log the reference uses (an exact power of 1.1 can fall either side of ``RATIO**k``)."""
    out = np.empty(H.K - 1, dtype=dtype)
    up, down = dtype(np.inf), dtype(0)
    for i, k in enumerate(range(H.K_MIN + 1, H.K_MAX + 1)):
        v = dtype(H.RATIO ** k)
        while _bucket(float(np.nextafter(v, down))) >= k:
            v = np.nextafter(v, down)
        while _bucket(float(v)) < k:
            v = np.nextafter(v, up)
        out[i] = v
    return out


def _tables(dtype) -> tuple[np.ndarray, np.ndarray, np.uint64]:
    """(table, edges, shift) of the histogram for a float type. A value's slot is 0 for zero, else
    1 + its bucket offset; ``edges[v]`` is the bit pattern of slot v's smallest value (the last one
    unreachable), and ``table[bits >> shift]`` the slot of the smallest value with those top bits."""
    bits = np.dtype(np.uint32 if dtype == np.float32 else np.uint64)
    top = np.iinfo(bits).max >> 1
    edges = np.empty(H.K + 2, dtype=np.uint64)
    edges[0], edges[1], edges[-1] = 0, 1, top
    edges[2:-1] = _lower_edges(dtype).view(bits)
    shift = np.finfo(dtype).nmant - 4
    keys = np.arange((top >> shift) + 1, dtype=np.uint64) << np.uint64(shift)
    table = 1 + np.searchsorted(edges[2:-1], keys, side="right")
    table[0] = 0  # key 0 holds zero and subnormals: edges[1] = 1 sends all but zero to slot 1
    return table.astype(np.uint16), edges, np.uint64(shift)


#: saturation code of each kind's test (0: none); thresholds as kinds.py writes them
_SATURATION = {
    KINDS["sigmoid"].saturated: (1, SATURATION_DERIVATIVE * 0.25),
    KINDS["tanh"].saturated: (2, SATURATION_DERIVATIVE),
    KINDS["softsign"].saturated: (3, 1.0 - math.sqrt(SATURATION_DERIVATIVE)),
    KINDS["hardtanh"].saturated: (4, 1.0),
    KINDS["hardsigmoid"].saturated: (5, 1.0),
    KINDS["relu6"].saturated: (6, 6.0),
}


_UNSIGNED = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}


class Kernels:
    """The compiled kernels behind plain numpy calls."""

    def __init__(self):
        self._hist = {np.dtype(t): _tables(t) for t in (np.float32, np.float64)}
        self._zero = {dt: dt.type(0) for dt in self._hist}
        self._constants = {(dt, fn): (code, np.array([0.0, 1.0, value], dtype=dt))
                           for dt in self._hist for fn, (code, value) in _SATURATION.items()}
        for dt in self._hist:
            self._constants[dt, None] = (0, np.array([0.0, 1.0, 0.0], dtype=dt))

    def activation(self, a3: np.ndarray, kind, hist: bool, per_unit: bool, moments: bool, size: int):
        """The packed vector (``samples`` left 0) of the C-contiguous float (outer, units, inner) array
        ``a3`` in a layout of ``size`` numbers; None when the data is not finite or ``kind``'s
        saturation test is not one the kernel knows. numpy's min and max are vectorised passes that
        also say whether the data is finite (they propagate NaN); the kernel does the rest."""
        got = self._constants.get((a3.dtype, kind.saturated))
        if got is None:
            return None
        flat = a3.reshape(-1)
        lo, hi = float(flat.min()), float(flat.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return None
        code, c = got
        table, edges, shift = self._hist[a3.dtype]
        out = np.zeros(size)
        _activation(flat, flat.view(_UNSIGNED[a3.dtype]), a3.shape[1], a3.shape[2], per_unit, code, c, table, edges,
                    shift, hist, moments, lo < 0, out)
        out[4], out[5] = lo, hi
        return out

    def columns(self, a: np.ndarray, extremes: bool) -> tuple:
        """(finite, sumsq, sum, abssum, min, max) of flat float ``a``; min and max (numpy's) only when
        ``extremes`` and the data is finite, +-inf otherwise."""
        return self._finish(a, extremes, *_columns(a, self._zero[a.dtype]))

    @staticmethod
    def _finish(a: np.ndarray, extremes: bool, sumsq: float, total: float, abssum: float) -> tuple:
        finite = math.isfinite(sumsq) and math.isfinite(total) and math.isfinite(abssum)
        lo, hi = (float(a.min()), float(a.max())) if extremes and finite else (math.inf, -math.inf)
        return finite, sumsq, total, abssum, lo, hi

    def columns_copying(self, a: np.ndarray, out: np.ndarray, extremes: bool) -> tuple:
        """:meth:`columns` of ``a``, copying it into ``out`` (flat, same type and size) as it reads it."""
        sumsq, total, abssum = _columns_copying(a, out, self._zero[a.dtype])
        return self._finish(a, extremes, sumsq, total, abssum)

    def difference(self, a: np.ndarray, b: np.ndarray) -> float:
        """Sum of (a - b)^2 of flat float arrays of one type and size."""
        return _difference(a, b, self._zero[a.dtype])


_UNSET = object()
_KERNELS = _UNSET


def kernels() -> Kernels | None:
    """The compiled kernels, compiled (or loaded from numba's cache) on the first call; None without
    numba, when it fails, or with ``NNHEALTH_JIT=0``."""
    global _KERNELS
    if _KERNELS is _UNSET:
        _KERNELS = _load()
    return _KERNELS


def _load() -> Kernels | None:
    if os.environ.get("NNHEALTH_JIT", "1").strip() == "0":
        return None
    try:
        import numba
    except Exception:  # not installed, or an install that does not import (numpy too new for it)
        return None
    try:
        for name, (fn, signatures, options) in _DEFERRED.items():
            jit = numba.njit(signatures() if signatures else None, cache=True, **options)
            globals()[name] = jit(fn)  # kernels find their helpers compiled, as module globals
        return Kernels()
    except Exception:  # a compiler failure must not stop training: numpy computes the same
        for name, (fn, _, _) in _DEFERRED.items():
            globals()[name] = fn
        return None
