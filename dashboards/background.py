"""One writer thread behind a bounded queue, so a training step never waits on the disk.

The training thread only appends a job (a closure over numbers it already
holds on the host); building protobufs and writing them happens on the
writer thread. The queue is bounded by the bytes its jobs hold, so a slow
disk cannot eat the memory of a fast training loop: when it is full,
histogram jobs go first (the oldest queued ones make room for a scalar job),
then new scalar jobs; what was dropped is counted. Jobs marked ``keep``
(findings, the run description, the layout, flushes) are rare and small and
are never dropped.

The writer wakes every ``period`` seconds to run what was queued, not on
every ``put``: waking a sleeping thread costs the training thread a system
call and both threads a context switch, on every step. ``put`` wakes it
only for kept jobs (a flush waits on them) and when the queue is half full.
"""
from __future__ import annotations

import copy
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
                 idle: Callable[[], None] | None = None, idle_secs: float = 5.0, period: float = 0.1):
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self.dropped = {SCALARS: 0, HISTOGRAMS: 0}
        self._jobs: deque = deque()  # (kind, cost, job, fallback)
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
        self.period = period
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- training thread -----------------------------------------------------
    def put(self, job: Callable[[], None], kind: str = SCALARS, cost: int = 0, steps: int = 1,
            fallback: tuple | None = None) -> None:
        """Queue ``job``, which holds about ``cost`` bytes (and writes ``steps`` training steps, what
        ``dropped`` counts); drops instead of waiting when the queue is full (see the module doc).

        ``fallback``: for a histogram job that writes scalars too, the scalar job ``(job, cost, steps)``
        doing only that, queued in its place when it is dropped, so scalars still outlive histograms.
        """
        with self._cond:
            self._raise_error_once()
            if self._closing or self._error is not None:
                return
            self._add(job, kind, cost, steps, fallback)
            if kind == KEEP or 2 * self._queued_bytes > self.max_bytes:
                self._cond.notify_all()

    def _add(self, job, kind: str, cost: int, steps: int, fallback: tuple | None) -> None:
        if kind == KEEP:
            cost = 0
        elif self._queued_bytes + cost > self.max_bytes:
            if kind == HISTOGRAMS or not self._evict_histograms(cost):
                self.dropped[kind] += steps
                if kind == HISTOGRAMS and fallback is not None:
                    job, cost, steps = fallback
                    self._add(job, SCALARS, cost, steps, None)
                return
        self._jobs.append((kind, cost, job, fallback))
        self._enqueued += 1
        self._queued_bytes += cost

    def _evict_histograms(self, cost: int) -> bool:
        """Drop the oldest queued histogram jobs (leaving their fallbacks in their place) until
        ``cost`` more bytes fit; False if they cannot."""
        histograms = [item for item in self._jobs if item[0] == HISTOGRAMS]
        freed = sum(c - (fallback[1] if fallback else 0) for _, c, _, fallback in histograms)
        if self._queued_bytes - freed + cost > self.max_bytes:
            return False
        while self._queued_bytes + cost > self.max_bytes:
            at = next(i for i, item in enumerate(self._jobs) if item[0] == HISTOGRAMS)
            _, c, _, fallback = self._jobs[at]
            self._queued_bytes -= c
            self.dropped[HISTOGRAMS] += 1
            if fallback is None:
                del self._jobs[at]
                self._finished += 1
            else:
                job, c, _ = fallback
                self._jobs[at] = (SCALARS, c, job, None)
                self._queued_bytes += c
        return True

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until every job queued before this call has run; raises TimeoutError after ``timeout``."""
        with self._cond:
            self._raise_error_once()
            target = self._enqueued
            self._cond.notify_all()
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
            # a copy: raised here, the kept error would grow the caller's frames (a training loop's model
            # and monitor) onto its traceback and keep them alive as long as this writer
            try:
                raised = copy.copy(self._error)
            except Exception:  # an exception type that cannot be rebuilt from its arguments
                raise self._error from None
            raise raised.with_traceback(self._error.__traceback__)

    # -- writer thread -------------------------------------------------------
    def _run(self) -> None:
        idle_due = False
        while True:
            with self._cond:
                # wait for jobs, looking every period; after some work, run the idle callback once
                # when nothing came for idle_secs
                idle_at = time.monotonic() + self.idle_secs if idle_due and self._idle is not None else None
                while not self._jobs and not self._closing:
                    left = self.period if idle_at is None else min(self.period, idle_at - time.monotonic())
                    if left <= 0:
                        break
                    self._cond.wait(left)
                if self._jobs:
                    _, cost, job, _ = self._jobs.popleft()
                    self._queued_bytes -= cost
                    idle_due, counted = True, True
                elif self._closing:
                    return
                else:
                    job, idle_due, counted = self._idle, False, False
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
