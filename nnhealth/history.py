"""Bounded memory of what the monitor has seen.

Two kinds of records, both bounded so memory stays flat over millions of
steps:

- **series**: one number per (where, stat) per step (loss, metrics, a layer's
  std...). Each keeps its first ``head`` points forever (rules compare with
  the start of training) and a ring buffer of the latest ``capacity`` points.
- **summaries**: the full mergeable :class:`~nnhealth.stats.Summary` of each
  (role, where) on the latest ``window`` sampled steps, plus the first one
  seen (initialisation checks); and, per role, the same numbers for all
  layers at once as arrays (:class:`~nnhealth.blocks.RoleBlock`), which is
  what the layer rules judge.
"""
from __future__ import annotations

from array import array
from collections import deque
from itertools import repeat

import numpy as np
import pandas as pd

from .blocks import RoleBlock
from .derived import split
from .stats.summary import MAX, MIN, H, Summary

COUNT, SAMPLES = H["count"], H["samples"]

_append = array.append
_UNSET = object()


class Series:
    """Step/value pairs: the first ``head`` kept, then a ring of the latest ``capacity``.

    Two typed arrays (:mod:`array`), steps and values, rather than lists or
    deques of Python numbers: appending costs the same, a point takes 16 bytes
    instead of about 60, and the garbage collector, which walks every list and
    deque on each full collection (millions of points with many layers), has
    nothing to walk. The first ``head`` points are never removed; past them,
    every ``capacity // 4`` points beyond ``capacity`` the oldest are cut.
    """

    __slots__ = ("_dropped", "_first", "_limit", "_of_first", "_s", "_v", "capacity", "head")

    def __init__(self, head: int = 64, capacity: int = 1024):
        self.head, self.capacity = head, capacity
        self._s, self._v = array("q"), array("d")
        #: points cut so far; the length past which the arrays are cut back (a quarter of capacity later)
        self._dropped = 0
        self._limit = head + capacity + max(capacity // 4, 1)
        #: n -> (steps, values) of the first n points, once they can no longer change (made when first asked);
        #: (n, f) -> f(their values) likewise (:meth:`of_first`)
        self._first: dict | None = None
        self._of_first: dict | None = None

    @property
    def total(self) -> int:
        """Points ever appended."""
        return self._dropped + len(self._v)

    def append(self, step: int, value: float) -> None:
        self._v.append(value)
        try:
            self._s.append(step)
        except BaseException:
            del self._v[-1]
            raise
        if len(self._v) > self._limit:
            self._trim()

    def _trim(self) -> None:
        """Drop the points older than the latest ``capacity`` past the head."""
        excess = len(self._v) - self.head - self.capacity
        if excess > 0:
            del self._s[self.head:self.head + excess], self._v[self.head:self.head + excess]
            self._dropped += excess

    def _kept(self, a: array) -> array:
        """``a``'s kept points: the head, and the latest ``capacity`` after it."""
        extra = len(a) - self.head - self.capacity
        return a if extra <= 0 else a[:self.head] + a[self.head + extra:]

    def __len__(self) -> int:
        return min(len(self._v), self.head + self.capacity)

    def first(self, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The first ``n`` points (all kept first points when None); read-only arrays, made once
        when they can no longer change (step rules ask for them on every step)."""
        in_head = min(len(self._v), self.head)
        k = in_head if n is None else min(n, in_head)
        if self._first is None:
            self._first = {}
        got = self._first.get(k)
        if got is None:
            got = np.array(self._s[:k], dtype=np.int64), np.array(self._v[:k], dtype=np.float64)
            if self._first_settled(n):
                for a in got:
                    a.flags.writeable = False
                self._first[k] = got
        return got

    def _first_settled(self, n: int | None) -> bool:
        """Whether the first ``n`` points (all the head keeps, when None) can no longer change: all ``n``
        are there, or the head is full."""
        return len(self._v) >= self.head or (n is not None and n <= len(self._v))

    def of_first(self, n: int, compute):
        """``compute(values of the first n points)`` (:meth:`first`), computed once those can no longer
        change: what rules derive from the start of training on every step (a median) is derived once."""
        key = (n, compute)
        if self._of_first is not None and key in self._of_first:
            return self._of_first[key]
        got = compute(self.first(n)[1])
        if self._first_settled(n):
            if self._of_first is None:
                self._of_first = {}
            self._of_first[key] = got
        return got

    def last_values(self, n: int) -> list[float]:
        """The latest ``n`` values (fewer when fewer are kept), oldest first, as a list."""
        if n <= 0:
            return []
        if n <= min(len(self._v) - self.head, self.capacity):  # all kept points past the head
            return self._v[len(self._v) - n:].tolist()
        kept = self._kept(self._v)
        return kept[max(len(kept) - n, 0):].tolist()

    def last(self, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The latest ``n`` points (all kept points when None), oldest first."""
        if n is None:
            return self.arrays()
        if n <= 0:
            return np.empty(0, dtype=np.int64), np.empty(0)
        if n <= min(len(self._v) - self.head, self.capacity):
            return (np.array(self._s[len(self._s) - n:], dtype=np.int64),
                    np.array(self._v[len(self._v) - n:], dtype=np.float64))
        steps, values = self._kept(self._s), self._kept(self._v)
        return (np.array(steps[max(len(steps) - n, 0):], dtype=np.int64),
                np.array(values[max(len(values) - n, 0):], dtype=np.float64))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array(self._kept(self._s), dtype=np.int64), np.array(self._kept(self._v), dtype=np.float64)

    @property
    def hidden(self) -> int:
        """Points past the head that the kept points no longer include: while this stays the same, the
        kept points (:meth:`arrays`) only grow at their end."""
        return self._dropped + max(len(self._v) - self.head - self.capacity, 0)

    @property
    def latest(self) -> float:
        return self._v[-1] if self._v else float("nan")

    @property
    def latest_step(self) -> int:
        return self._s[-1]


class History:
    """Everything the rules can look at, bounded; exported with :meth:`to_dataframe`.

    Recording is the hot path (every statistic of every layer on every sampled
    step), so it does the least it can: an append per series and per summary,
    and per role a few array writes into its block.
    """

    def __init__(self, capacity: int = 1024, head: int = 64, window: int = 5):
        self.capacity, self.head, self.window = capacity, head, window
        self._series: dict[tuple[str | None, str], Series] = {}
        #: key count -> what record_many needs of the series of recent key lists (see _targets)
        self._recent_targets: dict[int, list] = {}
        self._window_cache: dict[tuple[str, str], Summary] = {}
        #: per role, all its layers as arrays
        self._blocks: dict[str, RoleBlock] = {}
        #: (role, stat) -> ((series count, layer count) when looked up, the layers' series)
        self._series_of: dict[tuple[str, str], tuple] = {}
        #: the step's summaries split by role, held from recording them until recording the numbers derived
        #: from them, so that deriving finds it (and no longer: the summaries are then free to go)
        self._step = None
        #: names per role in the order first seen: depth order for the layer rules
        self.order: dict[str, list[str]] = {}
        #: per-name facts given by the caller (activation kind, fan-in, ...)
        self.meta: dict[str, dict] = {}
        self.last_step: int | None = None
        #: results of :meth:`memo`, valid until the next record
        self._memo: dict = {}
        #: what the rules carry from one step to the next (how far a search along a series got, what they
        #: made of the layers' facts), kept for the run: each entry says itself when it is still valid
        self.carry: dict = {}

    # -- writing -------------------------------------------------------------
    def record(self, step: int, where: str | None, stat: str, value: float) -> None:
        self._memo.clear()
        key = (where, stat)
        s = self._series.get(key)
        if s is None:
            s = self._series[key] = Series(self.head, self.capacity)
        s.append(step, float(value))

    def record_many(self, step: int, values: dict) -> None:
        """Record ``{(where, stat): value}`` at ``step``: :meth:`record` for many series at once."""
        self._memo.clear()
        self._step = None
        got = self._targets(values)
        _, targets, steps, points, _ = got
        array("q", [step])  # a step that does not fit raises here, before anything was appended
        try:  # every series' arrays appended in two C loops
            deque(map(_append, points, values.values()), maxlen=0)
        except BaseException:  # a value that is not a number: every series is left as it was
            for s in targets:
                if len(s._v) > len(s._s):
                    del s._v[-1]
            raise
        deque(map(_append, steps, repeat(step)), maxlen=0)
        got[4] -= 1
        if got[4] <= 0:  # now and then, each series cut back to its capacity
            got[4] = self.capacity // 4 or 1
            for s in targets:
                if len(s._v) > s._limit:
                    s._trim()

    def _targets(self, values: dict) -> list:
        """[keys, their series, the series' step arrays, their value arrays, record_many calls left before
        the next cut] for ``values``' keys (new series made). Steps bring the same keys again and again
        (sampled steps all layers' numbers, the others the loss): the last few key lists are remembered,
        so such a step looks up no key (one comparison of the key lists)."""
        keys = list(values)
        got = self._recent_targets.get(len(keys))
        if got is not None and got[0] == keys:
            return got
        series, targets = self._series, []
        for key in keys:
            s = series.get(key)
            if s is None:
                s = series[key] = Series(self.head, self.capacity)
            targets.append(s)
        if len(self._recent_targets) >= 4:
            self._recent_targets.clear()
        got = self._recent_targets[len(keys)] = [keys, targets, [s._s for s in targets], [s._v for s in targets],
                                                 self.capacity // 4 or 1]
        return got

    def record_summary(self, step: int, role: str, where: str, summary: Summary) -> None:
        self.record_summaries(step, {(role, where): summary})

    def record_summaries(self, step: int, summaries: dict) -> None:
        """Keep ``{(role, where): Summary}`` of one step (``update_base`` entries, the parameters before
        their updates, only give the update ratios)."""
        self._step = step_ = split(summaries)
        for role, (names, items) in step_.roles.items():
            if role == "update_base":
                continue
            block = self._blocks.get(role)
            if block is None:
                block = self._blocks[role] = RoleBlock(self.window, units=role == "activation",
                                                       ratios=role == "update", moments=role == "parameter")
                self.order[role] = block.names
            units = ((step_.unit_layout()[0], step_.unit_parts(0), step_.unit_parts(1)) if role == "activation"
                     else None)
            ratios = step_.update_ratios() if role == "update" else None
            block.record(step, names, items, step_.headers(role), step_.headers_only(role), units, ratios)
        self._window_cache.clear()
        self._memo.clear()

    def memo(self, key, compute):
        """``compute()``, computed once until something new is recorded: what several rules derive
        from the same data at one step (gradient norms by depth, update ratios) is derived once."""
        value = self._memo.get(key, _UNSET)  # every key is new on every step: no KeyError raised and caught
        if value is _UNSET:
            value = self._memo[key] = compute()
        return value

    def reuse(self, key, facts, compute):
        """``compute()``, kept in :attr:`carry` under ``key`` from step to step and made anew only when
        ``facts`` (what it is made of: layer names, kinds) differ from those it was made of."""
        last = self.carry.get(key)
        if last is not None and last[0] == facts:
            return last[1]
        value = compute()
        self.carry[key] = (facts, value)
        return value

    # -- reading -------------------------------------------------------------
    def series(self, where: str | None, stat: str) -> Series | None:
        return self._series.get((where, stat))

    def values(self, where: str | None, stat: str, last: int | None = None) -> np.ndarray:
        s = self._series.get((where, stat))
        if s is None:
            return np.empty(0)
        if last is None:
            return s.arrays()[1]
        return np.array(s.last_values(last), dtype=np.float64)

    def last_values(self, where: str | None, stat: str, n: int) -> list[float]:
        """The latest ``n`` values of a series as a list (fewer when fewer are kept; empty when none):
        :meth:`values` without building an array, for the rules' short windows."""
        s = self._series.get((where, stat))
        return s.last_values(n) if s is not None else []

    def names(self, role: str) -> list[str]:
        """Names seen for ``role``, in depth (first seen) order."""
        return self.order.get(role, [])

    def _column(self, role: str, where: str) -> tuple[RoleBlock | None, int | None]:
        block = self._blocks.get(role)
        return (block, block.index.get(where)) if block is not None else (None, None)

    def summaries(self, role: str, where: str) -> list[tuple[int, Summary]]:
        """(step, summary) of the latest sampled steps, oldest first."""
        block, j = self._column(role, where)
        return block.column_window(j) if j is not None else []

    def window_size(self, role: str, where: str) -> int:
        """How many sampled steps the window of (role, where) holds."""
        block, j = self._column(role, where)
        return min(int(block.seen[j]), self.window) if j is not None else 0

    def latest_summary(self, role: str, where: str) -> Summary | None:
        block, j = self._column(role, where)
        return block.latest_summary(j) if j is not None else None

    def first_summary(self, role: str, where: str) -> tuple[int, Summary] | None:
        block, j = self._column(role, where)
        return block.first[j] if j is not None else None

    def window_summary(self, role: str, where: str) -> Summary | None:
        """The window's summaries merged into one (unit counts summed), computed once per step."""
        key = (role, where)
        cached = self._window_cache.get(key)
        if cached is not None:
            return cached
        members = [s for _, s in self.summaries(role, where)]
        if not members:
            return None
        layout = members[0].layout
        if len(members) == 1:
            merged = members[0]
        elif all(s.layout == layout for s in members):  # sums add up; the extremes come from the headers
            total = members[0].v + members[1].v
            for s in members[2:]:
                total += s.v
            merged = Summary(layout, total)
            merged.v[MIN] = merged.h[MIN] = min(s.h[MIN] for s in members)
            merged.v[MAX] = merged.h[MAX] = max(s.h[MAX] for s in members)
        else:
            merged = members[0]
            for s in members[1:]:
                merged = merged.merge(s)
        self._window_cache[key] = merged
        return merged

    def window_moments(self, role: str, where: str) -> tuple | None:
        """(samples, count, per-unit sums, per-unit sums of squares) of the window of (role, where): what
        its merged summary (:meth:`window_summary`) holds, added the same way, without adding the rest of
        the vectors (an input of a thousand features has as many per-unit counts, and a histogram). None
        when the window has no samples, or its summaries do not all have one layout with per-unit moments
        (:meth:`window_summary` merges those); read-only."""
        block, j = self._column(role, where)
        moments = block.window_moments(j) if j is not None else None
        if moments is None:
            return None
        head = block.window_sums()[j]  # whole numbers: their sums do not depend on the order
        samples = float(head[SAMPLES])
        if not samples:
            return None
        units = len(moments) // 2
        return samples, float(head[COUNT]), moments[:units], moments[units:]

    def latest_of(self, role: str, stat: str) -> np.ndarray:
        """The latest value of the series (name, ``stat``) of every layer of ``role`` in depth order (NaN
        where there is none). The series objects are looked up once, and again only when series or
        layers were added."""
        names = self.order.get(role, [])
        key = (role, stat)
        cached = self._series_of.get(key)
        if cached is None or cached[0] != (len(self._series), len(names)):
            cached = self._series_of[key] = ((len(self._series), len(names)),
                                             [self._series.get((name, stat)) for name in names])
        return np.array([s.latest if s is not None else np.nan for s in cached[1]], dtype=np.float64)

    def block(self, role: str) -> RoleBlock | None:
        """All layers of ``role`` as arrays (None before any was recorded)."""
        return self._blocks.get(role)

    def keys(self) -> list[tuple[str | None, str]]:
        return list(self._series)

    def to_dataframe(self) -> pd.DataFrame:
        """Tidy frame with columns step, where, stat, value (one row per point)."""
        frames = []
        for (where, stat), s in self._series.items():
            steps, values = s.arrays()
            frames.append(pd.DataFrame({"step": steps, "where": where, "stat": stat, "value": values}))
        if not frames:
            return pd.DataFrame({"step": pd.Series(dtype="int64"), "where": pd.Series(dtype="object"),
                                 "stat": pd.Series(dtype="object"), "value": pd.Series(dtype="float64")})
        df = pd.concat(frames, ignore_index=True)
        return df.sort_values(["step", "stat"], kind="stable", ignore_index=True)
