"""The compiled single-pass kernels for host statistics (``_kernels.c``), and numpy as the fallback.

numpy needs a pass over memory per statistic (a sum, a square, a ``log`` for
the histogram, a mask per count); the C kernels read each cache-sized piece
of the data once and take every statistic of it while it is in the cache.
They are built when nnhealth is installed (an optional extension: without a
compiler :func:`kernels` is None and callers use numpy); built ahead of time
they cost nothing at run time, no compiling inside the training loop and no
compiler in the process's memory.

- **Sums vectorise without reassociating**: independent accumulators in the
  data's precision each take a few values of ``x - c`` (c a piece's first
  value), then add up in float64, so the error stays that of a short sum and
  values pinned near a constant keep their spread.
- **Non-finite data stays with numpy**: the kernels' own sums and extremes
  say whether the data was finite (inf and NaN propagate through any order
  of additions), and a kernel that saw any returns nothing; NaN and Inf then
  take the numpy path, which is exact for them, so the loops never test for NaN.
- **The histogram needs no log**: the top bits of a value (exponent and four
  mantissa bits: 1/16 octave, narrower than the 10% between edges) pick a
  candidate bucket from a table, and one integer comparison with the bit
  pattern of the next edge corrects it. The edges are the smallest values
  with ``floor(ln|x| / ln 1.1) >= k`` in float64, the reference definition,
  so every value lands exactly where it says, at powers of 1.1 too. Four
  interleaved sub-histograms keep a run of equal values (the zeros of a
  ReLU) from waiting on its own increments.

``NNHEALTH_KERNELS=0`` switches the kernels off (numpy computes the same).
"""
from __future__ import annotations

import math
import os

import numpy as np

from . import histogram as H
from .kinds import KINDS, SATURATION_DERIVATIVE


def _tables(dtype) -> tuple[np.ndarray, np.ndarray, int]:
    """(table, edges, shift) of the histogram for a float type. A value's slot is 0 for zero, else
    1 + its bucket offset; ``edges[v]`` is the bit pattern of slot v's smallest value (the last one
    above every bit pattern without the sign), and ``table[bits >> shift]`` the slot of the smallest
    value with those top bits."""
    bits = np.dtype(np.uint32 if dtype == np.float32 else np.uint64)
    top = np.iinfo(bits).max >> 1
    edges = np.empty(H.K + 2, dtype=np.uint64)
    edges[0], edges[1], edges[-1] = 0, 1, top + 1  # the last above every magnitude, NaN's too
    edges[2:-1] = H.lower_edges(dtype).view(bits)
    shift = np.finfo(dtype).nmant - 4
    keys = np.arange((top >> shift) + 1, dtype=np.uint64) << np.uint64(shift)
    table = 1 + np.searchsorted(edges[2:-1], keys, side="right")
    table[0] = 0  # key 0 holds zero and subnormals: edges[1] = 1 sends all but zero to slot 1
    return table.astype(np.uint16), edges, int(shift)


#: saturation code of each kind's test (0: none); thresholds as kinds.py writes them
_SATURATION = {
    None: (0, 0.0),
    KINDS["sigmoid"].saturated: (1, SATURATION_DERIVATIVE * 0.25),
    KINDS["tanh"].saturated: (2, SATURATION_DERIVATIVE),
    KINDS["softsign"].saturated: (3, 1.0 - math.sqrt(SATURATION_DERIVATIVE)),
    KINDS["hardtanh"].saturated: (4, 1.0),
    KINDS["hardsigmoid"].saturated: (5, 1.0),
    KINDS["relu6"].saturated: (6, 6.0),
}


class Kernels:
    """The compiled kernels behind plain numpy calls (arrays C-contiguous float32 or float64)."""

    def __init__(self, module):
        self._c = module
        self._hist = {np.dtype(t): _tables(t) for t in (np.float32, np.float64)}

    def activation(self, a3: np.ndarray, kind, hist: bool, per_unit: bool, moments: bool, size: int):
        """The packed vector (``samples`` left 0) of the C-contiguous float (outer, units, inner) array
        ``a3`` in a layout of ``size`` numbers, in one pass; None when the data is not finite (its sums
        say so) or ``kind``'s saturation test is not one the kernel knows."""
        got = _SATURATION.get(kind.saturated)
        if got is None:
            return None
        code, threshold = got  # cast to the data's type by the kernel, as numpy casts it
        table, edges, shift = self._hist[a3.dtype]
        out = np.empty(size)
        finite = self._c.activation(a3.reshape(-1), a3.itemsize, a3.shape[1], a3.shape[2], per_unit, code, 0.0, 1.0,
                                    threshold, table, edges, shift, hist, moments, out)
        return out if finite else None

    def columns(self, a: np.ndarray, extremes: bool) -> tuple:
        """(finite, sumsq, sum, abssum, min, max) of flat float ``a``; min and max only when
        ``extremes`` and the data is finite, +-inf otherwise."""
        return self._finish(extremes, *self._c.columns(a, a.itemsize))

    def columns_copying(self, a: np.ndarray, out: np.ndarray, extremes: bool) -> tuple:
        """:meth:`columns` of ``a``, copying it into ``out`` (flat, same type and size) as it reads it."""
        if out.dtype != a.dtype:
            raise ValueError(f"copy of {a.dtype} values into a {out.dtype} buffer")
        return self._finish(extremes, *self._c.columns(a, a.itemsize, out))

    @staticmethod
    def _finish(extremes: bool, sumsq: float, total: float, abssum: float, lo: float, hi: float) -> tuple:
        finite = math.isfinite(sumsq) and math.isfinite(total) and math.isfinite(abssum)
        if not (extremes and finite):
            lo, hi = math.inf, -math.inf
        return finite, sumsq, total, abssum, lo, hi

    def difference(self, a: np.ndarray, b: np.ndarray) -> float:
        """Sum of (a - b)^2 of flat float arrays of one type and size."""
        if a.dtype != b.dtype:
            raise ValueError(f"difference of {a.dtype} and {b.dtype} values")
        return self._c.difference(a, b, a.itemsize)


_UNSET = object()
_KERNELS = _UNSET


def kernels() -> Kernels | None:
    """The compiled kernels (tables made on the first call); None where the extension was not built
    (no compiler at install time) or with ``NNHEALTH_KERNELS=0``."""
    global _KERNELS
    if _KERNELS is _UNSET:
        _KERNELS = _load()
    return _KERNELS


def _load() -> Kernels | None:
    if os.environ.get("NNHEALTH_KERNELS", "1").strip() == "0":
        return None
    try:
        from . import _kernels
    except ImportError:  # installed without a compiler: numpy computes the same
        return None
    return Kernels(_kernels)
