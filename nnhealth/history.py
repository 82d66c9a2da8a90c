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

from collections import deque
from typing import Iterator

import numpy as np
import pandas as pd

from .stats.summary import MAX, MIN, Summary


class Series:
    """Step/value pairs: the first ``head`` kept, then a ring of the latest ``capacity``.

    Python lists and deques rather than numpy buffers: appends happen for every
    statistic of every layer on every sampled step, and a deque append costs a
    fraction of a numpy element assignment.
    """

    __slots__ = ("head", "capacity", "_hs", "_hv", "_rs", "_rv", "total")

    def __init__(self, head: int = 64, capacity: int = 1024):
        self.head, self.capacity = head, capacity
        self._hs: list[int] = []
        self._hv: list[float] = []
        self._rs: deque = deque(maxlen=capacity)
        self._rv: deque = deque(maxlen=capacity)
        self.total = 0       # points ever appended

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
        k = len(self._hs) if n is None else min(n, len(self._hs))
        return np.array(self._hs[:k], dtype=np.int64), np.array(self._hv[:k], dtype=np.float64)

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


class History:
    """Everything the rules can look at, bounded; exported with :meth:`to_dataframe`."""

    def __init__(self, capacity: int = 1024, head: int = 64, window: int = 5):
        self.capacity, self.head, self.window = capacity, head, window
        self._series: dict[tuple[str | None, str], Series] = {}
        self._summaries: dict[tuple[str, str], deque] = {}
        self._window_cache: dict[tuple[str, str], Summary] = {}
        #: running sum of the window's packed vectors (None when layouts differ within the window)
        self._window_total: dict[tuple[str, str], np.ndarray | None] = {}
        self._counts: dict[tuple[str, str], int] = {}
        self._first: dict[tuple[str, str], tuple[int, Summary]] = {}
        #: names per role in the order first seen: depth order for the layer rules
        self.order: dict[str, list[str]] = {}
        #: per-name facts given by the caller (activation kind, fan-in, ...)
        self.meta: dict[str, dict] = {}
        self.last_step: int | None = None

    # -- writing -------------------------------------------------------------
    def record(self, step: int, where: str | None, stat: str, value: float) -> None:
        key = (where, stat)
        s = self._series.get(key)
        if s is None:
            s = self._series[key] = Series(self.head, self.capacity)
        s.append(step, float(value))

    def record_summary(self, step: int, role: str, where: str, summary: Summary) -> None:
        key = (role, where)
        q = self._summaries.get(key)
        if q is None:
            q = self._summaries[key] = deque(maxlen=self.window)
            self._first[key] = (step, summary)
            self.order.setdefault(role, []).append(where)
        total = self._window_total.get(key)
        evicted = q[0][1] if len(q) == q.maxlen else None
        if not q:
            total = summary.v.copy()
        elif total is not None and summary.layout == q[0][1].layout and all(
                s.layout == summary.layout for _, s in q):
            total = total + summary.v
            if evicted is not None:
                total = total - evicted.v
        else:
            total = None
        q.append((step, summary))
        if (total is None or self._summary_count(key) % 64 == 0) and all(s.layout == summary.layout for _, s in q):
            # exact recomputation now and then: adding and subtracting floats drifts
            total = np.sum([s.v for _, s in q], axis=0)
        self._window_total[key] = total
        self._window_cache.pop(key, None)

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

    def names(self, role: str) -> list[str]:
        """Names seen for ``role``, in depth (first seen) order."""
        return self.order.get(role, [])

    def summaries(self, role: str, where: str) -> list[tuple[int, Summary]]:
        """(step, summary) of the latest sampled steps, oldest first."""
        return list(self._summaries.get((role, where), ()))

    def _summary_count(self, key) -> int:
        self._counts[key] = self._counts.get(key, 0) + 1
        return self._counts[key]

    def latest_summary(self, role: str, where: str) -> Summary | None:
        q = self._summaries.get((role, where))
        return q[-1][1] if q else None

    def first_summary(self, role: str, where: str) -> tuple[int, Summary] | None:
        return self._first.get((role, where))

    def window_summary(self, role: str, where: str) -> Summary | None:
        """The window's summaries merged into one (unit counts summed)."""
        key = (role, where)
        cached = self._window_cache.get(key)
        if cached is not None:
            return cached
        q = self._summaries.get(key)
        if not q:
            return None
        total = self._window_total.get(key)
        if total is not None:
            # sums add up; the extremes come from the members (they cannot be subtracted)
            merged = Summary(q[0][1].layout, total.copy())
            merged.v[MIN] = merged.h[MIN] = min(s.h[MIN] for _, s in q)
            merged.v[MAX] = merged.h[MAX] = max(s.h[MAX] for _, s in q)
            self._window_cache[key] = merged
            return merged
        it: Iterator = iter(q)
        merged = next(it)[1]
        for _, s in it:
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
