"""A mergeable summary of one tensor: the sufficient statistics every rule needs.

A summary is a flat vector of sums (plus a min and a max), laid out by a
:class:`Layout`. Two summaries of the same layout merge by adding the vectors
(taking min/max of the extremes), and the merge equals the summary of the
concatenated data. That one property lets the same code combine micro-batches,
repeated calls of a layer, sampled steps over a window, and the ranks of a
distributed job (one collective on one packed vector).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from . import histogram
from .backend import NUMPY

#: scalar fields at the start of every packed vector, in order
HEADER = (
    "count",      # finite values seen
    "sum",        # of finite values
    "sumsq",      # of finite values squared
    "abssum",     # of |finite values|
    "min",        # smallest finite value (+inf when none)
    "max",        # largest finite value (-inf when none)
    "nonfinite",  # NaN and +-Inf values
    "zeros",      # exact zeros
    "positive",   # values > 0 (a ReLU-like unit "fires")
    "saturated",  # values where the activation's derivative is below 5% of its maximum
    "samples",    # rows along the non-unit axes (what per-unit counts are out of)
)
H = {name: i for i, name in enumerate(HEADER)}
MIN, MAX = H["min"], H["max"]


@dataclass(frozen=True)
class Layout:
    """Which optional parts a packed vector holds after the header."""

    hist: bool = False       # fixed-edge histogram (histogram.NUM_BUCKETS counts)
    units: int = 0           # per-unit fired and saturated counts
    moments: bool = False    # per-unit sum and sum of squares (input feature scales)
    #: numbers in the packed vector (computed once: every Summary made checks its vector against it)
    size: int = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "size", len(HEADER) + self.hist * histogram.NUM_BUCKETS
                           + self.units * (2 + 2 * self.moments))

    def slices(self) -> dict[str, slice]:
        return _slices(self)

    def _compute_slices(self) -> dict[str, slice]:
        out, at = {}, len(HEADER)
        for name, n, on in (
            ("hist", histogram.NUM_BUCKETS, self.hist),
            ("unit_fired", self.units, self.units > 0),
            ("unit_saturated", self.units, self.units > 0),
            ("unit_sum", self.units, self.units > 0 and self.moments),
            ("unit_sumsq", self.units, self.units > 0 and self.moments),
        ):
            if on:
                out[name] = slice(at, at + n)
                at += n
        return out

    def common(self, other: "Layout") -> "Layout":
        """The largest layout both can be cut down to (for merging mismatched calls)."""
        same_units = self.units == other.units
        return Layout(
            hist=self.hist and other.hist,
            units=self.units if same_units else 0,
            moments=self.moments and other.moments and same_units,
        )

    def to_json(self) -> dict:
        return {"hist": self.hist, "units": self.units, "moments": self.moments}

    @classmethod
    def from_json(cls, d: dict) -> "Layout":
        return cls(hist=bool(d.get("hist")), units=int(d.get("units", 0)), moments=bool(d.get("moments")))


@lru_cache(maxsize=None)
def _slices(layout: Layout) -> dict[str, slice]:
    return layout._compute_slices()


def cut(ops, vector, layout: Layout, to: Layout):
    """The part of ``vector`` (in ``layout``) that ``to`` keeps, in vector's own library."""
    if layout == to:
        return vector
    src = layout.slices()
    return ops.pack([vector[: len(HEADER)]] + [vector[src[name]] for name in to.slices()])


def merge_vectors(ops, a, layout_a: Layout, b, layout_b: Layout):
    """Merge two packed vectors on their device; returns (layout, vector)."""
    layout = layout_a.common(layout_b)
    a, b = cut(ops, a, layout_a, layout), cut(ops, b, layout_b, layout)
    out = a + b
    # rebuilt rather than assigned in place, so immutable arrays (JAX) merge too; MAX == MIN + 1
    out = ops.pack([out[:MIN], ops.minimum(a[MIN], b[MIN]), ops.maximum(a[MAX], b[MAX]), out[MAX + 1:]])
    return layout, out


class Summary:
    """Host-side view of a packed vector, with the derived quantities rules use."""

    # thousands are made per step in a big model: no per-object dict for the garbage collector to walk
    __slots__ = ("layout", "v", "_h")

    def __init__(self, layout: Layout, vector):
        vector = np.asarray(vector, dtype=np.float64)
        if vector.shape != (layout.size,):
            raise ValueError(f"packed statistics have shape {vector.shape}, layout expects ({layout.size},)")
        self.layout = layout
        self.v = vector
        self._h = None

    @property
    def h(self) -> list[float]:
        """The header as Python floats, made when first read (most summaries of a big model's step are
        only kept, their headers read through their role's block): the fields are read from it."""
        h = self._h
        if h is None:
            h = self._h = self.v[: len(HEADER)].tolist()
        return h

    @classmethod
    def empty(cls, layout: Layout = Layout()) -> "Summary":
        v = np.zeros(layout.size)
        v[MIN], v[MAX] = np.inf, -np.inf
        return cls(layout, v)

    def merge(self, other: "Summary") -> "Summary":
        layout = self.layout.common(other.layout)
        layout, out = merge_vectors(NUMPY, self.v, self.layout, other.v, other.layout)
        return Summary(layout, out)

    def _part(self, name: str):
        """The optional part ``name`` of the vector (a view), None when the layout has none."""
        sl = _slices(self.layout).get(name)
        return self.v[sl] if sl is not None else None

    # -- derived quantities -------------------------------------------------
    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else float("nan")

    @property
    def var(self) -> float:
        if not self.count:
            return float("nan")
        m = self.mean
        return max(self.sumsq / self.count - m * m, 0.0)

    @property
    def std(self) -> float:
        return float(np.sqrt(self.var))

    @property
    def norm(self) -> float:
        """L2 norm of the finite values."""
        return float(np.sqrt(self.sumsq))

    @property
    def mean_abs(self) -> float:
        return self.abssum / self.count if self.count else float("nan")

    @property
    def total(self) -> float:
        """All values seen, finite or not."""
        return self.count + self.nonfinite

    def fraction(self, field: str) -> float:
        n = self.total
        return getattr(self, field) / n if n else float("nan")

    def unit_fraction(self, field: str = "unit_fired"):
        """Per unit, the fraction of samples with the property (fired, saturated)."""
        counts = getattr(self, field)
        if counts is None or not self.samples:
            return None
        return counts / self.samples

    def unit_means(self):
        if self.unit_sum is None or not self.samples:
            return None
        return self.unit_sum / self.samples

    def unit_stds(self):
        if self.unit_sumsq is None or not self.samples:
            return None
        m = self.unit_means()
        return np.sqrt(np.maximum(self.unit_sumsq / self.samples - m * m, 0.0))

    def quantiles(self, qs):
        if self.hist is None:
            return np.full(np.shape(np.atleast_1d(qs)), np.nan)
        return histogram.quantiles(self.hist, qs, self.min, self.max)

    def __repr__(self) -> str:
        return (f"Summary(count={self.count:g}, mean={self.mean:.4g}, std={self.std:.4g}, "
                f"min={self.min:.4g}, max={self.max:.4g}, nonfinite={self.nonfinite:g}, units={self.layout.units})")


def _header_property(index: int):
    return property(lambda self: self.h[index], doc=f"header field {HEADER[index]!r}")


def _part_property(name: str):
    return property(lambda self: self._part(name), doc=f"the {name!r} part (None when the layout has none)")


for _i, _name in enumerate(HEADER):
    setattr(Summary, _name, _header_property(_i))
for _name in ("hist", "unit_fired", "unit_saturated", "unit_sum", "unit_sumsq"):
    setattr(Summary, _name, _part_property(_name))
