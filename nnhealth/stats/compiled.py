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
- **The histogram needs no log**: the top bits of a value (sign, exponent and
  four mantissa bits: 1/16 octave, narrower than the 10% between edges) pick
  a table entry that packs the bucket of the key's smallest value with the
  offset of the one edge that may fall inside the key; added to the value's
  bits it carries into the next bucket exactly from that edge on, so a value
  costs one load, one add and two shifts, either sign (negative values count
  in a mirrored half of the counts). The edges are the smallest values with
  ``floor(ln|x| / ln 1.1) >= k`` in float64, the reference definition, so
  every value lands exactly where it says, at powers of 1.1 too; the table
  is checked against that search as it is built. Four interleaved
  sub-histograms keep a run of equal values (the zeros of a ReLU) from
  waiting on its own increments; and where a sample of a float32 piece is
  a quarter or more zeros (a ReLU's output), AVX2 packs its other values
  first and the zeros are counted at once.

``NNHEALTH_KERNELS=0`` switches the kernels off (numpy computes the same).
"""
from __future__ import annotations

import math
import os

import numpy as np

from . import histogram as H
from .kinds import KINDS, SATURATION_DERIVATIVE
from .summary import HEADER

#: count slots of each sign: zero, then the K magnitude buckets (NaN and Inf land in the last)
SLOTS = H.K + 1


def _slot_edges(dtype) -> np.ndarray:
    """``edges[v]``: the bit pattern of slot v's smallest magnitude (slot 0 holds zero, slot 1 + k
    magnitude bucket K_MIN + k); the last, one past every pattern without the sign (NaN's too),
    closes slot K."""
    bits = np.dtype(np.uint32 if dtype == np.float32 else np.uint64)
    edges = np.empty(H.K + 2, dtype=np.uint64)
    edges[0], edges[1], edges[-1] = 0, 1, (np.iinfo(bits).max >> 1) + 1
    edges[2:-1] = H.lower_edges(dtype).view(bits)
    return edges


def _slot_index(dtype, patterns: np.ndarray) -> np.ndarray:
    """The count index of each bit pattern (uint64 holding the type's bits) by search: its slot,
    plus SLOTS when the sign is set."""
    width = np.dtype(dtype).itemsize * 8
    sign = patterns >> np.uint64(width - 1)
    slot = np.searchsorted(_slot_edges(dtype), patterns & np.uint64((1 << (width - 1)) - 1), side="right") - 1
    return slot + SLOTS * sign.astype(np.int64)


def _decode(table: np.ndarray, shift: int, patterns: np.ndarray) -> np.ndarray:
    """What the C loop computes of each pattern: ``(table[b >> shift] + b) >> shift``, wrapping."""
    width = table.dtype.itemsize * 8
    b = patterns.astype(np.uint64)
    total = (table[b >> np.uint64(shift)].astype(np.uint64) + b) & np.uint64((1 << width) - 1)
    return (total >> np.uint64(shift)).astype(np.int64)


def _tables(dtype) -> tuple[np.ndarray, int]:
    """(table, shift) of the histogram for a float type: for a value with bit pattern b,
    ``(table[b >> shift] + b) >> shift`` in the unsigned integer of the type's width (wrapping) is
    its count index, the slot plus SLOTS when the sign is set.

    A key (sign, exponent and four mantissa bits) spans 1/16 octave, at most 17/16 wide, less than
    the ratio 1.1 between edges, so at most one edge falls inside it. Its entry holds the index of
    the key's smallest value above ``shift``, and below it, when an edge falls inside at offset t,
    2**shift - t: adding the value's offset carries into the index from the edge on. Less
    ``key << shift``, the entry takes the whole bit pattern, no mask. Every key is checked at its
    ends and on both sides of its edge against the search: as both step at most once within a key,
    every bit pattern lands where the reference says, NaN and Inf within the counts."""
    edges = _slot_edges(dtype)
    width = np.dtype(dtype).itemsize * 8
    shift = np.finfo(dtype).nmant - 4
    span = np.uint64(1 << shift)
    keys = np.arange(1 << (width - shift), dtype=np.uint64)
    start = keys << np.uint64(shift)  # each key's first bit pattern
    index = _slot_index(dtype, start)
    slot = index % SLOTS
    edge = edges[slot + 1] - (start & np.uint64((1 << (width - 1)) - 1))  # the next edge's offset: > 0
    inside = edge < span
    low = np.where(inside, span - np.minimum(edge, span), np.uint64(0))
    table = ((index.astype(np.uint64) << np.uint64(shift)) + low - start) & np.uint64((1 << width) - 1)
    table = table.astype(np.uint32 if width == 32 else np.uint64)
    for offset in (np.zeros_like(edge), np.where(inside, edge - np.uint64(1), 0), np.where(inside, edge, 0),
                   np.full_like(edge, span - np.uint64(1))):
        if not np.array_equal(_decode(table, shift, start + offset), _slot_index(dtype, start + offset)):
            raise AssertionError("histogram table: a key spans two edges")  # not with ratio 1.1
    return table, int(shift)


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
        self._hist = {}  # dtype: (table, shift), built on first use (float64's: 512 KiB)

    def activation(self, a3: np.ndarray, kind, hist: bool, per_unit: bool, moments: bool, size: int):
        """The packed vector (``samples`` left 0) of the C-contiguous float (outer, units, inner) array
        ``a3`` in a layout of ``size`` numbers, in one pass; None when the data is not finite (its sums
        say so) or ``kind``'s saturation test is not one the kernel knows."""
        got = _SATURATION.get(kind.saturated)
        if got is None:
            return None
        code, threshold = got  # cast to the data's type by the kernel, as numpy casts it
        got = self._hist.get(a3.dtype)
        if got is None:
            got = self._hist[a3.dtype] = _tables(a3.dtype)
        table, shift = got
        out = np.empty(size)
        finite = self._c.activation(a3.reshape(-1), a3.itemsize, a3.shape[1], a3.shape[2], per_unit, code, 0.0, 1.0,
                                    threshold, table, shift, SLOTS, hist, moments, out)
        return out if finite else None

    def columns(self, arrays: list, copies: list | None = None) -> np.ndarray:
        """Rows (sum of squares, sum, sum of |x|, min, max), float64, of the C-contiguous float arrays
        ``arrays`` (all of one type), in one call; with ``copies`` (as many arrays of the same types
        and sizes, or None), each array is also copied into its own as it is read. A row of data
        holding NaN or Inf has sums that are not finite (its min and max then mean nothing)."""
        out = np.empty((len(arrays), 5))
        if arrays:
            dtype = _one_float_type(arrays)
            if copies is not None and any(c is not None and c.dtype != dtype for c in copies):
                raise ValueError(f"copy of {dtype} values into a buffer of another type")
            self._c.columns(arrays, dtype.itemsize, out, copies)
        return out

    def difference(self, a: list, b: list) -> np.ndarray:
        """Sum of (a[i] - b[i])^2 for each pair of C-contiguous float arrays of one type and size."""
        out = np.empty(len(a))
        if a:
            dtype = _one_float_type(a)
            if _one_float_type(b) != dtype:
                raise ValueError("difference of arrays that are not of one type")
            self._c.difference(a, b, dtype.itemsize, out)
        return out


class AddressKernels(Kernels):
    """:class:`Kernels` that also read memory given by address (an array library's tensors, without
    a buffer object made for each: on a sampled step of a model with a hundred parameter tensors,
    making those cost more than the rest of the host side of the optimizer hooks)."""

    def columns_at(self, addresses: np.ndarray, counts: np.ndarray, width: int,
                   copies: np.ndarray | None = None) -> np.ndarray:
        """:meth:`columns` of ``len(addresses)`` arrays of ``width``-byte floats (4: float32, 8: float64),
        each starting at an address (int64) and holding ``counts`` values; ``copies``: the addresses
        each is also copied to (0: not copied). The caller keeps that memory valid, contiguous and of
        that type for the call."""
        n = len(addresses)
        out = np.empty((n, 5))
        if n:
            self._c.columns_at(addresses, counts, width, out, np.zeros(n, np.int64) if copies is None else copies)
        return out

    def difference_at(self, a: np.ndarray, b: np.ndarray, counts: np.ndarray, width: int) -> np.ndarray:
        """:meth:`difference` of pairs of arrays given by address (int64), as :meth:`columns_at`."""
        out = np.empty(len(a))
        if len(a):
            self._c.difference_at(a, b, counts, width, out)
        return out


class RowKernels(AddressKernels):
    """:class:`AddressKernels` that also write each array's header row themselves: on a sampled step the
    rows of a role's tensors cost one kernel call, not a dozen array operations between the training's
    own kernels (each several microseconds there, with the interpreter's caches cold)."""

    def header_rows_at(self, addresses: np.ndarray, counts: np.ndarray, width: int, copies: np.ndarray,
                       fields: int) -> tuple[np.ndarray, int]:
        """(header rows (:data:`~.summary.HEADER`, float64) of arrays given by address as :meth:`columns_at`,
        how many of them are not finite): of sum, sum of |x|, min and max only those in the bit mask
        ``fields`` (1, 2, 4, 8), the rest NaN; the non-finite count 0, or NaN where the sums are not finite
        (the caller measures those again). Made by the kernel: no array operation of its own a row."""
        out = np.empty((len(addresses), len(HEADER)))
        bad = self._c.columns_at(addresses, counts, width, out, copies, fields) if len(addresses) else 0
        return out, bad

    def difference_rows_at(self, a: np.ndarray, b: np.ndarray, counts: np.ndarray,
                           width: int) -> tuple[np.ndarray, int]:
        """(header rows of the differences of pairs given by address: count, sum of squares, non-finite 0
        (NaN where the sum is not finite), saturated 0, samples, the rest NaN; how many are not finite)."""
        out = np.empty((len(a), len(HEADER)))
        bad = self._c.difference_at(a, b, counts, width, out) if len(a) else 0
        return out, bad


def _one_float_type(arrays: list) -> np.dtype:
    dtype = arrays[0].dtype
    if dtype not in (np.float32, np.float64) or any(x.dtype != dtype for x in arrays):
        raise ValueError(f"the kernels take arrays of one type, float32 or float64 (got {dtype} first)")
    return dtype


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
    # an extension built before the address entry points (an editable install not rebuilt) reads buffers
    if not hasattr(_kernels, "columns_at"):
        return Kernels(_kernels)
    return RowKernels(_kernels) if getattr(_kernels, "HEADER_ROWS", 0) else AddressKernels(_kernels)
