"""Every layer of one role as arrays, so that rules judge all layers in a few array operations.

A model has hundreds of layers. Reading each layer's summaries one at a time
costs microseconds of Python per layer, and with thousands of objects spread
over memory the cost grows faster than the layer count. A :class:`RoleBlock`
keeps, in column j for the j-th layer of its role in first-seen (depth) order:

- the layer's latest ``window`` summaries (rings of their vectors, layouts and
  steps: the Summary objects themselves, with their header lists, die with the
  step that made them instead of growing the set of long-lived objects that the
  garbage collector walks), its latest and its first summary;
- ``latest``: the header of the layer's latest summary (an (n, len(HEADER)) matrix);
- a ring of the headers of the layer's latest ``window`` summaries: the window's
  sums (:meth:`~RoleBlock.window_header`) and the latest few per-summary
  numbers (:meth:`~RoleBlock.recent`) are array expressions over it;
- for activations, a ring of the per-unit fired and saturated counts, so the
  window's per-unit counts of every layer are one sum (:meth:`~RoleBlock.window_units`);
- for updates, a ring of the update ratios of the steps that had one;
- for parameters, where the per-unit sums of the latest summary are.

A sampled step writes each role's block with a few array assignments: the
common step, every layer of the role in depth order, touches no layer one by one
but to read its header.
"""
from __future__ import annotations

from operator import attrgetter

import numpy as np

from .stats.histogram import NUM_BUCKETS
from .stats.summary import HEADER, MAX, MIN, H, Summary

SAMPLES = H["samples"]
_v, _layout = attrgetter("v"), attrgetter("layout")
_units, _moments, _hist = attrgetter("units"), attrgetter("moments"), attrgetter("hist")

_WIDTH = len(HEADER)
#: the header of no values, what the sums of an unwritten ring slot must be
_EMPTY = np.zeros(_WIDTH)
_EMPTY[MIN], _EMPTY[MAX] = np.inf, -np.inf


def _grow(a, axis: int, size: int, fill):
    """``a`` (an array, or a list along axis 0) with its ``axis`` extended to ``size``, new entries ``fill``."""
    if isinstance(a, list):
        return a + [fill] * (size - len(a))
    shape = list(a.shape)
    shape[axis] = size
    out = np.empty(shape, dtype=a.dtype)
    out[...] = fill
    out[(slice(None),) * axis + (slice(0, a.shape[axis]),)] = a
    return out


class RoleBlock:
    """The layers of one role: their summaries, latest headers, windows of headers, per-unit counts, ratios."""

    def __init__(self, window: int, units: bool = False, ratios: bool = False, moments: bool = False):
        self.window = window
        self.names: list[str] = []
        self.index: dict[str, int] = {}
        self.n = 0
        #: summaries recorded per layer; the k-th (from 0) sits in ring slot k % window
        self.seen = np.zeros(0, dtype=np.int64)
        self.latest = np.empty((0, _WIDTH))
        self.ring = np.empty((window, 0, _WIDTH))
        self.steps = np.zeros((window, 0), dtype=np.int64)
        #: per slot, per layer, the summary's vector and layout
        self.vectors: list[list] = [[] for _ in range(window)]
        self.layouts: list[list] = [[] for _ in range(window)]
        #: each layer's latest vector and layout, and its first (step, Summary)
        self.latest_vectors: list = []
        self.latest_layouts: list = []
        self.first: list = []
        self._last_names: list[str] = []
        self._last_cols = np.zeros(0, dtype=np.intp)
        self._last_in_order = True
        #: the activations' per-unit counts
        self.unit_ring = UnitRing(window) if units else None
        #: what was derived from the arrays since the last record
        self._cache: dict = {}
        #: the summaries (update ratios) every layer has recorded, when all have as many (the usual step:
        #: their latest ones then share ring slots); None when they differ
        self._common: int | None = 0
        self._rcommon: int | None = 0
        #: the window sizes once every window is full
        self._full = np.zeros(0, dtype=np.int64)
        self._ratios = ratios
        if ratios:
            self.rring = np.zeros((window, 0))
            self.rseen = np.zeros(0, dtype=np.int64)
        self._moments = moments
        if moments:
            #: per layer, where the per-unit sums start in its latest vector, and how many (0: none)
            self.moffset = np.zeros(0, dtype=np.int64)
            self.munits = np.zeros(0, dtype=np.int64)

    # -- writing -------------------------------------------------------------
    def _columns(self, names: list[str]) -> np.ndarray:
        """The columns of ``names`` (new names get new columns): the same names as last time are the
        common case, answered with one list comparison."""
        if names == self._last_names:
            return self._last_cols
        index = self.index
        for name in names:
            if name not in index:
                index[name] = len(self.names)
                self.names.append(name)
        if len(self.names) > self.n:
            self._add_columns(len(self.names))
        cols = np.fromiter((index[name] for name in names), dtype=np.intp, count=len(names))
        self._last_names, self._last_cols = list(names), cols
        self._last_in_order = bool((cols == np.arange(len(cols))).all())
        return cols

    def _add_columns(self, n: int) -> None:
        cap = self.latest.shape[0]
        if n > cap:
            cap = max(n, 2 * cap, 8)
            self.seen = _grow(self.seen, 0, cap, 0)
            self.latest = _grow(self.latest, 0, cap, np.nan)
            self.ring = _grow(self.ring, 1, cap, _EMPTY)
            self.steps = _grow(self.steps, 1, cap, 0)
            self.vectors = [_grow(v, 0, cap, None) for v in self.vectors]
            self.layouts = [_grow(v, 0, cap, None) for v in self.layouts]
            if self.unit_ring is not None:
                self.unit_ring.add_layers(cap)
            if self._ratios:
                self.rring = _grow(self.rring, 1, cap, np.nan)
                self.rseen = _grow(self.rseen, 0, cap, 0)
            if self._moments:
                self.moffset = _grow(self.moffset, 0, cap, 0)
                self.munits = _grow(self.munits, 0, cap, 0)
        for column in (self.latest_vectors, self.latest_layouts, self.first):
            column.extend([None] * (n - self.n))
        self.n = n

    def record(self, step: int, names: list[str], summaries, head: np.ndarray, headers_only: bool = False,
               units: tuple | None = None, ratios: tuple | None = None) -> None:
        """One step's ``summaries`` of the layers ``names``, with their header matrix ``head`` and whether
        they hold nothing but headers; ``units``: their unit counts, and the per-unit fired and saturated
        counts of those with units (the activation block); ``ratios``: which have an update ratio this
        step, and the ratios (the update block). :class:`~nnhealth.derived.Step` computes these."""
        self._cache.clear()
        cols = self._columns(names)
        vectors, layouts = list(map(_v, summaries)), list(map(_layout, summaries))
        n = self.n
        seen = self.seen[:n]
        if self._last_in_order and len(cols) == n and (seen == seen[0]).all():
            # the common step: every layer, in depth order, each with as many summaries before
            slot = int(seen[0]) % self.window
            if not seen[0]:
                self.first[:] = [(step, s) for s in summaries]
            self.latest[:n] = head
            self.ring[slot, :n] = head
            self.steps[slot, :n] = step
            seen += 1
            self._common = int(seen[0])
            self.latest_vectors[:] = self.vectors[slot][:n] = vectors
            self.latest_layouts[:] = self.layouts[slot][:n] = layouts
            slots = np.full(n, slot)
        else:
            self._common = None
            seen = self.seen[cols]
            slots = seen % self.window
            for i in np.flatnonzero(seen == 0).tolist():  # layers seen for the first time
                self.first[cols[i]] = (step, summaries[i])
            self.latest[cols] = head
            self.ring[slots, cols] = head
            self.steps[slots, cols] = step
            self.seen[cols] = seen + 1
            for j, slot, v, layout in zip(cols.tolist(), slots.tolist(), vectors, layouts):
                self.latest_vectors[j] = self.vectors[slot][j] = v
                self.latest_layouts[j] = self.layouts[slot][j] = layout
        if self.unit_ring is not None:
            self.unit_ring.record(cols, slots, *units, every=self._common is not None)
        if self._ratios and ratios is not None:
            has, values = ratios
            rcols = cols[has]
            rseen = self.rseen[rcols]
            self.rring[rseen % self.window, rcols] = values[has]
            self.rseen[rcols] = rseen + 1
            every = self._common is not None and self._rcommon is not None and bool(has.all())
            self._rcommon = self._rcommon + 1 if every else None
        elif self._common is None:
            self._rcommon = None  # new layers may have come, without ratios
        if self._moments:
            self._record_moments(cols, layouts, headers_only)

    def _record_moments(self, cols: np.ndarray, layouts: list, headers_only: bool) -> None:
        if headers_only:
            self.munits[cols] = 0
            return
        n = len(layouts)
        units = np.fromiter(map(_units, layouts), dtype=np.int64, count=n)
        units *= np.fromiter(map(_moments, layouts), dtype=bool, count=n)
        hist = np.fromiter(map(_hist, layouts), dtype=bool, count=n)
        self.munits[cols] = units
        self.moffset[cols] = np.where(units > 0, _WIDTH + NUM_BUCKETS * hist + 2 * units, 0)

    # -- reading -------------------------------------------------------------
    def latest_summary(self, j: int) -> Summary:
        """Layer ``j``'s latest summary."""
        return Summary(self.latest_layouts[j], self.latest_vectors[j])

    def _window_slots(self, j: int) -> list[int]:
        """The ring slots of layer ``j``'s window, oldest first."""
        seen = int(self.seen[j])
        return [k % self.window for k in range(max(seen - self.window, 0), seen)]

    def column_window(self, j: int) -> list[tuple]:
        """(step, Summary) of layer ``j``'s window, oldest first."""
        return [(int(self.steps[slot, j]), Summary(self.layouts[slot][j], self.vectors[slot][j]))
                for slot in self._window_slots(j)]

    def window_moments(self, j: int) -> np.ndarray | None:
        """Layer ``j``'s per-unit sums and sums of squares (one array, the sums first) added over its window
        oldest first, as merging its summaries adds them; None when they do not all have one layout (a
        merge cuts differing ones down first) with per-unit moments. Read-only."""
        slots = self._window_slots(j)
        if not slots:
            return None
        layout = self.layouts[slots[0]][j]
        if not (layout.units and layout.moments) or any(self.layouts[slot][j] != layout for slot in slots[1:]):
            return None
        parts = layout.slices()
        part = slice(parts["unit_sum"].start, parts["unit_sumsq"].stop)
        vectors = [self.vectors[slot][j][part] for slot in slots]
        if len(vectors) == 1:
            return vectors[0]
        total = vectors[0] + vectors[1]
        for v in vectors[2:]:
            total += v
        return total

    def window_size(self) -> np.ndarray:
        """Summaries each layer's window holds; read-only."""
        out = self._cache.get("size")
        if out is None:
            if self._common is not None and self._common >= self.window:  # all full: kept from step to step
                if len(self._full) != self.n:
                    self._full = np.full(self.n, self.window)
                    self._full.flags.writeable = False
                out = self._full
            else:
                out = np.minimum(self.seen[:self.n], self.window)
            self._cache["size"] = out
        return out

    def window_header(self) -> np.ndarray:
        """Each layer's window merged into one header (sums added, extremes of the extremes); read-only."""
        out = self._cache.get("window")
        if out is None:
            ring = self.ring[:, :self.n]
            out = self._cache["window"] = self.window_sums().copy()
            out[:, MIN] = ring[:, :, MIN].min(axis=0)
            out[:, MAX] = ring[:, :, MAX].max(axis=0)
        return out

    def window_sums(self) -> np.ndarray:
        """:meth:`window_header` but for the extremes (its MIN and MAX hold nothing meaningful): the rules
        read the sums only; read-only."""
        out = self._cache.get("sums")
        if out is None:
            out = self._cache["sums"] = np.add.reduce(self.ring[:, :self.n], axis=0)
        return out

    def window_units(self) -> np.ndarray:
        """Per layer, its unit count where all summaries of its window have that many per-unit counts
        (else 0: the window merges to no per-unit counts); read-only."""
        out = self._cache.get("units")
        if out is None:
            ring = self.unit_ring
            out = self._cache["units"] = (ring.units[:self.n] if ring.quiet >= self.window  # all, the usual case
                                          else ring.consistent(self.n, self.window_size()))
        return out

    def count_units(self, part: int, threshold: float, above: bool = False) -> np.ndarray:
        """Per layer, how many of its units fired (``part`` 0) or saturated (1) in under (``above``: in
        over) ``threshold`` of its window's samples; meaningful where :meth:`window_units` is not 0."""
        key = ("fractions", part)
        if key not in self._cache:  # per-unit window fractions, once per step and part
            self._cache[key] = self.unit_ring.fractions(part, self.window_sums()[:, SAMPLES])
        return self.unit_ring.count(self._cache[key], threshold, above, self.n)

    def recent(self, points: int) -> np.ndarray:
        """The headers of each layer's latest ``points`` summaries, newest first, NaN where it has fewer: an
        (n, points, len(HEADER)) array, read-only. Needs ``points <= window``."""
        return _recent(self.ring, self.seen[:self.n], points, self.window, self._common)

    def with_ratios(self, cols: np.ndarray, points: int) -> np.ndarray:
        """The layers among ``cols`` with at least ``points`` update ratios."""
        if self._rcommon is not None:  # every layer has as many
            return cols if self._rcommon >= points else cols[:0]
        return cols[self.rseen[cols] >= points]

    def recent_ratios(self, points: int) -> np.ndarray:
        """Each layer's latest ``points`` update ratios, newest first, NaN where it has fewer; read-only.
        Needs ``points <= window``."""
        return _recent(self.rring, self.rseen[:self.n], points, self.window, self._rcommon)


def _recent(ring: np.ndarray, seen: np.ndarray, points: int, window: int, common: int | None) -> np.ndarray:
    """See :meth:`RoleBlock.recent`; ``common``: the count that every layer has in ``seen``, if known."""
    n = len(seen)
    if common is not None and common >= points:  # every layer's latest points are in the same slots
        newest = (common - 1) % window
        if newest >= points - 1:  # one run of slots: a view, no copy
            out = ring[newest - points + 1:newest + 1, :n][::-1]
        else:  # back from the newest to slot 0, then on from the last slot
            out = np.concatenate((ring[newest::-1, :n], ring[window - 1:window - points + newest:-1, :n]))
        out = out.swapaxes(0, 1)
        out.flags.writeable = False  # a view of the ring: the docstrings promise read-only
        return out
    back = np.arange(points)
    out = ring[(seen[:, None] - 1 - back) % window, np.arange(n)[:, None]]
    out[back >= np.minimum(seen, points)[:, None]] = np.nan
    return out


class UnitRing:
    """The per-unit fired and saturated counts of every activation layer's latest ``window`` summaries.

    Unit columns are reserved per layer, the layers one after another; a ring
    slot holds a (fired, saturated) pair of rows, so each part of every layer
    is one contiguous run and the window's per-unit fractions of all layers are
    a few array operations into buffers kept between steps (arrays of a
    thousand layers' units, made anew each step, would cost more in page
    faults than in arithmetic).
    """

    def __init__(self, window: int):
        self.window = window
        self.ring = np.zeros((window, 2, 0))
        self.width = 0  # columns reserved so far
        #: per layer: its unit count, its first column, the columns reserved for it, and how many
        #: summaries in a row had this unit count
        self.units = np.zeros(0, dtype=np.int64)
        self.start = np.zeros(0, dtype=np.int64)
        self.reserved = np.zeros(0, dtype=np.int64)
        self.streak = np.zeros(0, dtype=np.int64)
        #: per column, the layer it is reserved for; whether the layers' columns follow one another in
        #: layer order, each exactly its unit count wide (the usual case: per-layer sums are then reduceat)
        self.owner = np.zeros(0, dtype=np.intp)
        self.dense = True
        #: the layers with units, and their first columns (what the per-layer sums of dense columns add)
        self._on = np.zeros(0, dtype=np.intp)
        self._on_start = np.zeros(0, dtype=np.int64)
        #: the unit count of every layer with units, when they all have as many and the columns are dense
        self._each = 0
        self._sums = np.zeros((2, 0))
        self._fractions = np.zeros((2, 0))
        self._flags = np.zeros(0, dtype=bool)
        self._running = np.zeros(1, dtype=np.int64)
        #: records in a row that brought every layer, none with a new unit count: from ``window`` on, every
        #: layer's window has one unit count
        self.quiet = 0

    def add_layers(self, cap: int) -> None:
        for name in ("units", "start", "reserved", "streak"):
            setattr(self, name, _grow(getattr(self, name), 0, cap, 0))

    def record(self, cols: np.ndarray, slots: np.ndarray, units: np.ndarray, fired: list, saturated: list,
               every: bool = False) -> None:
        """Write one step's per-unit counts into ring ``slots``: ``units`` of the layers ``cols`` (``every``:
        all the layers), and the ``fired`` and ``saturated`` counts of those with units, in order."""
        changed = units != self.units[cols]
        if changed.any():
            self._reserve(cols[changed], units[changed])
            self.quiet = 0
        else:
            self.quiet = self.quiet + 1 if every else 0
        self.streak[cols] = np.where(changed, 1, self.streak[cols] + 1)
        on = np.flatnonzero(units)
        if not on.size:
            return
        cols, slots, size = cols[on], slots[on], units[on]
        begin = self.start[cols]
        if (slots == slots[0]).all() and (begin[1:] == begin[:-1] + size[:-1]).all():  # one run: no copy between
            lo, hi = int(begin[0]), int(begin[-1] + size[-1])
            np.concatenate(fired, out=self.ring[slots[0], 0, lo:hi])
            np.concatenate(saturated, out=self.ring[slots[0], 1, lo:hi])
            return
        for f, s, slot, b, u in zip(fired, saturated, slots.tolist(), begin.tolist(), size.tolist()):
            self.ring[slot, 0, b:b + u] = f
            self.ring[slot, 1, b:b + u] = s

    def _reserve(self, cols: np.ndarray, units: np.ndarray) -> None:
        """Columns for layers whose unit count is new: their old ones when large enough (cleared), else
        new ones at the end (a layer that keeps changing only ever grows its reservation)."""
        fits = units <= self.reserved[cols]
        for j in cols[fits].tolist():
            self.ring[:, :, self.start[j]:self.start[j] + self.reserved[j]] = 0.0
        grow, end = units[~fits], self.width
        self.width += int(grow.sum())
        if self.width > self.ring.shape[2]:
            cap = max(self.width, 2 * self.ring.shape[2])
            self.ring = _grow(self.ring, 2, cap, 0.0)
            self.owner = _grow(self.owner, 0, cap, 0)
            self._sums, self._fractions = np.zeros((2, cap)), np.zeros((2, cap))
            self._flags, self._running = np.zeros(cap, dtype=bool), np.zeros(cap + 1, dtype=np.int64)
        starts = end + np.cumsum(grow) - grow
        self.owner[end:self.width] = np.repeat(cols[~fits], grow)
        self.start[cols[~fits]] = starts
        self.reserved[cols[~fits]] = grow
        self.units[cols] = units
        on = np.flatnonzero(self.reserved)
        self.dense = bool((self.units == self.reserved).all()
                          and (self.start[on] == np.cumsum(self.reserved[on]) - self.reserved[on]).all())
        self._on = np.flatnonzero(self.units)
        self._on_start = self.start[self._on]
        each = self.units[self._on]
        self._each = int(each[0]) if self.dense and each.size and (each == each[0]).all() else 0

    def consistent(self, n: int, window_size: np.ndarray) -> np.ndarray:
        return np.where(self.streak[:n] >= window_size, self.units[:n], 0)

    def fractions(self, part: int, samples: np.ndarray) -> np.ndarray:
        """Per column, the window count of ``part`` over its layer's window ``samples``."""
        w = self.width
        sums, out = self._sums[part, :w], self._fractions[part, :w]
        np.add.reduce(self.ring[:, part, :w], axis=0, out=sums)
        with np.errstate(divide="ignore", invalid="ignore"):
            if self._each and len(samples) * self._each == w:  # every layer as wide: rows of a matrix
                np.divide(sums.reshape(-1, self._each), samples[:, None], out=out.reshape(-1, self._each))
                return out
            per_column = np.repeat(samples, self.reserved[:len(samples)]) if self.dense else samples[self.owner[:w]]
            return np.divide(sums, per_column, out=out)

    def count(self, fractions: np.ndarray, threshold: float, above: bool, n: int) -> np.ndarray:
        """Per layer, how many of its columns' ``fractions`` are under (``above``: over) ``threshold``."""
        w = self.width
        flags = (np.greater if above else np.less)(fractions, threshold, out=self._flags[:w])
        if self.dense:
            if not self._on.size:
                return np.zeros(n, dtype=np.int64)
            counts = np.add.reduceat(flags, self._on_start, dtype=np.int64)
            if self._on.size == n:  # every layer has units: the sums are the counts
                return counts
            out = np.zeros(n, dtype=np.int64)
            out[self._on] = counts
            return out
        np.cumsum(flags, out=self._running[1:w + 1])
        start, units = self.start[:n], self.units[:n]
        return self._running[start + units] - self._running[start]
