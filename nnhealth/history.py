"""Bounded memory of what the monitor has seen.

Two kinds of records, both bounded so memory stays flat over millions of
steps:

- **series**: one number per (where, stat) per step (loss, metrics, a layer's
  std...). Each keeps its first ``head`` points forever (rules compare with
  the start of training) and a ring buffer of the latest ``capacity`` points.
- **summaries**: the full mergeable :class:`~nnhealth.stats.Summary` of each
  (role, where) on the latest ``window`` sampled steps, which is what
  per-unit rules (dead units, saturation) judge, plus the first one seen
  (initialisation checks).
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np
import pandas as pd

from .stats.summary import MAX, MIN, Summary


class Series:
    """Step/value pairs: the first ``head`` kept, then a ring of the latest ``capacity``.

    Python lists and deques rather than numpy buffers: appends happen for every
    statistic of every layer on every sampled step, and a deque append costs a
    fraction of a numpy element assignment.
    """

    __slots__ = ("_first", "_hs", "_hv", "_rs", "_rv", "capacity", "head", "total")

    def __init__(self, head: int = 64, capacity: int = 1024):
        self.head, self.capacity = head, capacity
        self._hs: list[int] = []
        self._hv: list[float] = []
        self._rs: deque = deque(maxlen=capacity)
        self._rv: deque = deque(maxlen=capacity)
        self.total = 0       # points ever appended
        self._first: dict = {}  # n -> (steps, values) of the first n points, once they can no longer change

    def append(self, step: int, value: float) -> None:
        if self.total < self.head:
            self._hs.append(step)
            self._hv.append(value)
        else:
            self._rs.append(step)
            self._rv.append(value)
        self.total += 1

    def __len__(self) -> int:
        return len(self._hs) + len(self._rs)

    def first(self, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The first ``n`` points (all kept first points when None); read-only arrays, made once
        when they can no longer change (step rules ask for them on every step)."""
        k = len(self._hs) if n is None else min(n, len(self._hs))
        got = self._first.get(k)
        if got is None:
            got = np.array(self._hs[:k], dtype=np.int64), np.array(self._hv[:k], dtype=np.float64)
            if k == self.head or k < len(self._hs) or (n is not None and k >= n):
                for a in got:
                    a.flags.writeable = False
                self._first[k] = got
        return got

    def last_values(self, n: int) -> list[float]:
        """The latest ``n`` values (fewer when fewer are kept), oldest first, as a list."""
        ring = self._rv
        if len(ring) >= n:
            return [ring[i] for i in range(len(ring) - n, len(ring))]
        take = n - len(ring)
        return self._hv[max(len(self._hv) - take, 0):] + list(ring)

    def last(self, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The latest ``n`` points (all kept points when None), oldest first."""
        if n is None:
            return self.arrays()
        values = self.last_values(n)
        ring = self._rs
        k = len(values)
        if len(ring) >= k:
            steps = [ring[i] for i in range(len(ring) - k, len(ring))]
        else:
            steps = self._hs[len(self._hs) - (k - len(ring)):] + list(ring)
        return np.array(steps, dtype=np.int64), np.array(values, dtype=np.float64)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.array(self._hs + list(self._rs), dtype=np.int64),
                np.array(self._hv + list(self._rv), dtype=np.float64))

    @property
    def latest(self) -> float:
        if self.total == 0:
            return float("nan")
        return float(self._rv[-1] if self._rv else self._hv[-1])

    @property
    def latest_step(self) -> int:
        return int(self._rs[-1] if self._rs else self._hs[-1])


#: updates of a running window total before it is recomputed exactly
EXACT_EVERY = 64


def _summable(s: Summary) -> bool:
    """A summary a running total can add and later subtract exactly enough: finite sums (NaN or Inf
    would stay in the total after the summary left the window) and at least one value."""
    h = s.h
    return h[0] > 0 and math.isfinite(h[1]) and math.isfinite(h[2]) and math.isfinite(h[3])


class History:
    """Everything the rules can look at, bounded; exported with :meth:`to_dataframe`.

    Recording is the hot path (every statistic of every layer on every sampled
    step), so it does the least it can: an append per series and per summary.
    A window of summaries is merged when a rule first asks for it; from then on
    its running total is kept (one addition and one subtraction per step, with
    an exact recomputation now and then, since floats drift), so only the
    windows that rules read (activations, inputs) cost anything.
    """

    def __init__(self, capacity: int = 1024, head: int = 64, window: int = 5):
        self.capacity, self.head, self.window = capacity, head, window
        self._series: dict[tuple[str | None, str], Series] = {}
        self._summaries: dict[tuple[str, str], deque] = {}
        self._window_cache: dict[tuple[str, str], Summary] = {}
        #: running totals of the windows read so far: key -> [packed sum, layout, updates since exact]
        self._totals: dict[tuple[str, str], list] = {}
        self._first: dict[tuple[str, str], tuple[int, Summary]] = {}
        #: names per role in the order first seen: depth order for the layer rules
        self.order: dict[str, list[str]] = {}
        #: per-name facts given by the caller (activation kind, fan-in, ...)
        self.meta: dict[str, dict] = {}
        self.last_step: int | None = None
        #: results of :meth:`memo`, valid until the next record
        self._memo: dict = {}

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
        series, head = self._series, self.head
        for key, value in values.items():
            s = series.get(key)
            if s is None:
                s = series[key] = Series(head, self.capacity)
            value = float(value)
            if s.total < head:  # Series.append, inlined: this loop runs for every statistic of every layer
                s._hs.append(step)
                s._hv.append(value)
            else:
                s._rs.append(step)
                s._rv.append(value)
            s.total += 1

    def record_summary(self, step: int, role: str, where: str, summary: Summary) -> None:
        self.record_summaries(step, {(role, where): summary})

    def record_summaries(self, step: int, summaries: dict) -> None:
        """Keep ``{(role, where): Summary}`` of one step (``update_base`` entries are not kept)."""
        kept, totals = self._summaries, self._totals
        for key, summary in summaries.items():
            q = kept.get(key)
            if q is None:
                if key[0] == "update_base":
                    continue
                q = kept[key] = deque(maxlen=self.window)
                self._first[key] = (step, summary)
                self.order.setdefault(key[0], []).append(key[1])
            tracked = totals.get(key)
            if tracked is not None:
                if tracked[2] < EXACT_EVERY and summary.layout == tracked[1] and _summable(summary):
                    tracked[0] += summary.v
                    if len(q) == q.maxlen:
                        tracked[0] -= q[0][1].v
                    tracked[2] += 1
                else:  # merged afresh when next read
                    del totals[key]
            q.append((step, summary))
        self._window_cache.clear()
        self._memo.clear()

    def memo(self, key, compute):
        """``compute()``, computed once until something new is recorded: what several rules derive
        from the same data at one step (gradient norms by depth, update ratios) is derived once."""
        try:
            return self._memo[key]
        except KeyError:
            value = self._memo[key] = compute()
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

    def summaries(self, role: str, where: str) -> list[tuple[int, Summary]]:
        """(step, summary) of the latest sampled steps, oldest first."""
        return list(self._summaries.get((role, where), ()))

    def window_size(self, role: str, where: str) -> int:
        """How many sampled steps the window of (role, where) holds (without copying it)."""
        q = self._summaries.get((role, where))
        return len(q) if q is not None else 0

    def latest_summary(self, role: str, where: str) -> Summary | None:
        q = self._summaries.get((role, where))
        return q[-1][1] if q else None

    def first_summary(self, role: str, where: str) -> tuple[int, Summary] | None:
        return self._first.get((role, where))

    def window_summary(self, role: str, where: str) -> Summary | None:
        """The window's summaries merged into one (unit counts summed), computed once per step."""
        key = (role, where)
        cached = self._window_cache.get(key)
        if cached is not None:
            return cached
        q = self._summaries.get(key)
        if not q:
            return None
        members = [s for _, s in q]
        layout = members[0].layout
        tracked = self._totals.get(key)
        if len(members) == 1:
            merged = members[0]
        elif tracked is not None or all(s.layout == layout for s in members):
            # sums add up; the extremes come from the members' headers
            if tracked is None:
                total = members[0].v + members[1].v
                for s in members[2:]:
                    total += s.v
                if all(_summable(s) for s in members):
                    self._totals[key] = [total.copy(), layout, 0]
            else:
                total = tracked[0].copy()
            merged = Summary(layout, total)
            merged.v[MIN] = merged.h[MIN] = min(s.h[MIN] for s in members)
            merged.v[MAX] = merged.h[MAX] = max(s.h[MAX] for s in members)
        else:
            merged = members[0]
            for s in members[1:]:
                merged = merged.merge(s)
        self._window_cache[key] = merged
        return merged

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
