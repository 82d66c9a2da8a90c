"""One writer thread behind a bounded queue, so a training step never waits on the disk.

The training thread only appends a job (a closure over numbers it already
holds on the host); building protobufs and writing them happens on the
writer thread. The queue is bounded by the bytes its jobs hold, so a slow
disk cannot eat the memory of a fast training loop: when it is full,
histogram jobs go first (the oldest queued ones make room for a scalar job),
then new scalar jobs; what was dropped is counted. Jobs marked ``keep``
(findings, the run description, the layout, flushes) are rare and small and
are never dropped.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

KEEP, SCALARS, HISTOGRAMS = "keep", "scalars", "histograms"


class BackgroundWriter:
    """Runs jobs in order on one daemon thread; ``put`` never blocks.

    >>> out = []
    >>> w = BackgroundWriter(max_bytes=1 << 20)
    >>> w.put(lambda: out.append(1), SCALARS, cost=100)
    >>> w.flush(timeout=5)
    >>> w.close(timeout=5)
    >>> out, w.dropped
    ([1], {'scalars': 0, 'histograms': 0})
    """

    def __init__(self, max_bytes: int = 64 << 20, name: str = "nnhealth-writer",
                 idle: Callable[[], None] | None = None, idle_secs: float = 5.0):
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self.dropped = {SCALARS: 0, HISTOGRAMS: 0}
        self._jobs: deque = deque()  # (kind, cost, job)
        self._queued_bytes = 0       # cost of the queued SCALARS and HISTOGRAMS jobs
        self._cond = threading.Condition()
        self._enqueued = 0           # jobs ever accepted
        self._finished = 0           # jobs ever run, evicted or abandoned
        self._error: BaseException | None = None
        self._error_raised = False
        self._closing = False
        #: run on the writer thread once the queue has been empty for idle_secs after some work
        #: (the sink flushes its file there, so a paused run is on disk within seconds)
        self._idle, self.idle_secs = idle, idle_secs
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- training thread -----------------------------------------------------
    def put(self, job: Callable[[], None], kind: str = SCALARS, cost: int = 0, steps: int = 1) -> None:
        """Queue ``job``, which holds about ``cost`` bytes (and writes ``steps`` training steps, what
        ``dropped`` counts); drops instead of waiting when the queue is full (see the module doc)."""
        with self._cond:
            self._raise_error_once()
            if self._closing or self._error is not None:
                return
            if kind == KEEP:
                cost = 0
            elif self._queued_bytes + cost > self.max_bytes:
                if kind == HISTOGRAMS or not self._evict_histograms(cost):
                    self.dropped[kind] += steps
                    return
            self._jobs.append((kind, cost, job))
            self._enqueued += 1
            self._queued_bytes += cost
            self._cond.notify_all()

    def _evict_histograms(self, cost: int) -> bool:
        """Drop the oldest queued histogram jobs until ``cost`` more bytes fit; False if they cannot."""
        histograms = [item for item in self._jobs if item[0] == HISTOGRAMS]
        if self._queued_bytes - sum(c for _, c, _ in histograms) + cost > self.max_bytes:
            return False
        while self._queued_bytes + cost > self.max_bytes:
            item = next(item for item in self._jobs if item[0] == HISTOGRAMS)
            self._jobs.remove(item)
            self._queued_bytes -= item[1]
            self._finished += 1
            self.dropped[HISTOGRAMS] += 1
        return True

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until every job queued before this call has run; raises TimeoutError after ``timeout``."""
        with self._cond:
            self._raise_error_once()
            target = self._enqueued
            deadline = time.monotonic() + timeout
            while self._finished < target and self._error is None:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    raise TimeoutError(f"nnhealth writer thread did not finish {target - self._finished} "
                                       f"queued writes within {timeout:g} s")
                self._cond.wait(left)
            self._raise_error_once()

    def close(self, timeout: float = 60.0) -> None:
        """Run what is queued, then stop the thread. Safe to call twice."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        with self._cond:
            if self._thread.is_alive():
                raise TimeoutError(f"nnhealth writer thread did not finish {self._enqueued - self._finished} "
                                   f"queued writes within {timeout:g} s")
            self._raise_error_once()

    @property
    def running(self) -> bool:
        """Whether the writer thread still runs (it stops at close, and at the first error)."""
        return self._thread.is_alive()

    @property
    def pending(self) -> int:
        with self._cond:
            return self._enqueued - self._finished

    def _raise_error_once(self) -> None:
        if self._error is not None and not self._error_raised:
            self._error_raised = True
            raise self._error

    # -- writer thread -------------------------------------------------------
    def _run(self) -> None:
        idle_due = False
        while True:
            with self._cond:
                if not self._jobs and not self._closing and idle_due and self._idle is not None:
                    self._cond.wait(self.idle_secs)
                if not self._jobs and not self._closing and idle_due and self._idle is not None:
                    job = self._idle
                    idle_due, counted = False, False
                else:
                    while not self._jobs and not self._closing:
                        self._cond.wait()
                    if not self._jobs:
                        return
                    _, cost, job = self._jobs.popleft()
                    self._queued_bytes -= cost
                    idle_due, counted = True, True
            try:
                job()
            except BaseException as e:  # kept for the training thread to see; nothing more is written
                with self._cond:
                    self._error = e
                    self._finished = self._enqueued
                    self._jobs.clear()
                    self._queued_bytes = 0
                    self._cond.notify_all()
                return
            if counted:
                with self._cond:
                    self._finished += 1
                    self._cond.notify_all()
