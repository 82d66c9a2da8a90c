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

from .stats.summary import Summary


class Series:
    """Step/value pairs: the first ``head`` kept, then a ring of ``capacity``."""

    __slots__ = ("head", "capacity", "_hs", "_hv", "_rs", "_rv", "_n", "total")

    def __init__(self, head: int = 64, capacity: int = 1024):
        self.head, self.capacity = head, capacity
        self._hs = np.empty(head, dtype=np.int64)
        self._hv = np.empty(head, dtype=np.float64)
        self._rs = np.empty(capacity, dtype=np.int64)
        self._rv = np.empty(capacity, dtype=np.float64)
        self._n = 0          # points in the ring
        self.total = 0       # points ever appended

    def append(self, step: int, value: float) -> None:
        if self.total < self.head:
            self._hs[self.total], self._hv[self.total] = step, value
        else:
            i = (self.total - self.head) % self.capacity
            self._rs[i], self._rv[i] = step, value
            self._n = min(self._n + 1, self.capacity)
        self.total += 1

    def __len__(self) -> int:
        return min(self.total, self.head) + self._n

    def first(self, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        k = min(self.total, self.head) if n is None else min(n, self.total, self.head)
        return self._hs[:k], self._hv[:k]

    def last(self, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The latest ``n`` points (all kept points when None), oldest first."""
        steps, values = self.arrays()
        if n is not None:
            steps, values = steps[-n:], values[-n:]
        return steps, values

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        h = min(self.total, self.head)
        if self._n == 0:
            return self._hs[:h].copy(), self._hv[:h].copy()
        start = (self.total - self.head) % self.capacity if self._n == self.capacity else 0
        order = np.r_[start:self._n, 0:start] if self._n == self.capacity else np.arange(self._n)
        return np.r_[self._hs[:h], self._rs[order]], np.r_[self._hv[:h], self._rv[order]]

    @property
    def latest(self) -> float:
        if self.total == 0:
            return float("nan")
        if self.total <= self.head:
            return float(self._hv[self.total - 1])
        return float(self._rv[(self.total - self.head - 1) % self.capacity])

    @property
    def latest_step(self) -> int:
        if self.total <= self.head:
            return int(self._hs[self.total - 1])
        return int(self._rs[(self.total - self.head - 1) % self.capacity])


class History:
    """Everything the rules can look at, bounded; exported with :meth:`to_dataframe`."""

    def __init__(self, capacity: int = 1024, head: int = 64, window: int = 5):
        self.capacity, self.head, self.window = capacity, head, window
        self._series: dict[tuple[str | None, str], Series] = {}
        self._summaries: dict[tuple[str, str], deque] = {}
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
        q.append((step, summary))

    # -- reading -------------------------------------------------------------
    def series(self, where: str | None, stat: str) -> Series | None:
        return self._series.get((where, stat))

    def values(self, where: str | None, stat: str, last: int | None = None) -> np.ndarray:
        s = self._series.get((where, stat))
        return np.empty(0) if s is None else s.last(last)[1]

    def names(self, role: str) -> list[str]:
        """Names seen for ``role``, in depth (first seen) order."""
        return self.order.get(role, [])

    def summaries(self, role: str, where: str) -> list[tuple[int, Summary]]:
        """(step, summary) of the latest sampled steps, oldest first."""
        return list(self._summaries.get((role, where), ()))

    def latest_summary(self, role: str, where: str) -> Summary | None:
        q = self._summaries.get((role, where))
        return q[-1][1] if q else None

    def first_summary(self, role: str, where: str) -> tuple[int, Summary] | None:
        return self._first.get((role, where))

    def window_summary(self, role: str, where: str) -> Summary | None:
        """The window's summaries merged into one (unit counts summed)."""
        q = self._summaries.get((role, where))
        if not q:
            return None
        it: Iterator = iter(q)
        merged = next(it)[1]
        for _, s in it:
            merged = merged.merge(s)
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
