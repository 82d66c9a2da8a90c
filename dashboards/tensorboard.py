"""The TensorBoard sink: every step's numbers as TensorBoard event files, written off the training thread.

The Monitor hands over a :class:`~nnhealth.sinks.StepRecord` per processed
step; this sink queues it for its writer thread (:mod:`.background`), which
turns it into one event of scalars and, on sampled steps, one event of
histograms and mergeable states (:mod:`.protos`). The tags are those of
:mod:`.tags`; docs/logdir.md describes them.
"""
from __future__ import annotations

import atexit
import json
import logging
import math
import threading
import time
from functools import lru_cache

from ..sinks.base import Sink, StepRecord
from . import protos, tags
from .background import HISTOGRAMS, KEEP, SCALARS, BackgroundWriter
from .event_file import EventFile
from .layout import nnhealth_layout
from .markdown import findings_table

log = logging.getLogger("nnhealth")

#: memory a queued step holds, to bound the queue: per scalar (key, value, dict slot) and per
#: summary besides its vector (the Summary object, its key and the step's meta)
SCALAR_BYTES = 200
SUMMARY_BYTES = 1000
#: unsampled steps whose scalars are handed to the writer thread as one job (a job per step would
#: cost the training thread a lock, and the writer thread a job, on every step)
SCALAR_BATCH = 10
_NO_FACTS: dict = {}

#: sinks not closed yet, closed at interpreter exit while their daemon threads still run (held
#: strongly, so a Monitor dropped without close() still gets its files flushed)
_OPEN: set[TensorBoardSink] = set()
_OPEN_LOCK = threading.Lock()


@atexit.register
def _close_open_sinks() -> None:
    with _OPEN_LOCK:
        sinks = list(_OPEN)
    for sink in sinks:
        try:
            sink.close()
        except Exception as e:  # at exit there is nobody left to tell but the log
            log.error("nnhealth: TensorBoard files of %s may be incomplete: %s", sink.logdir, e)


class TensorBoardSink(Sink):
    """Writes a run's statistics, histograms, findings and dashboard layout as TensorBoard events.

    ``every`` and ``num_classes`` are recorded in the run description
    (``nnhealth/run``) so a reader can replay the run as it was watched.
    ``max_queue_bytes`` bounds the memory held by steps waiting for the disk
    (see :class:`~.background.BackgroundWriter`); ``flush_secs`` is how often
    the file is flushed while the run goes on (TensorBoard sees data that late).
    """

    def __init__(self, logdir, every: int = 10, num_classes: int | None = None, *,
                 max_queue_bytes: int = 64 << 20, flush_secs: float = 5.0, timeout: float = 60.0):
        self.logdir = str(logdir)
        self.timeout = timeout
        self.flush_secs = flush_secs
        self._events = EventFile(self.logdir)
        self.path = self._events.path
        self._queue = BackgroundWriter(max_bytes=max_queue_bytes, name=f"nnhealth-tensorboard:{self.logdir}",
                                       idle=self._flush_if_dirty, idle_secs=flush_secs)
        self._findings: list = []
        self._scalar_batch: list = []  # (step, wall time, scalars) not handed to the writer yet
        self._findings_step: int | None = None     # step of the newest finding not written yet
        self._last_step = 0
        self._dropped_written = dict(self._queue.dropped)
        self._closed = False
        #: (role, where) -> (layout, facts) of its last state metadata, its entries' prefix and size
        self._state_written: dict[tuple, tuple] = {}
        run = {"version": tags.FORMAT_VERSION, "every": every, "num_classes": num_classes}
        start = time.time()
        self._queue.put(lambda: self._write(0, start, [protos.text(tags.RUN, json.dumps(run))]), KEEP)
        self._queue.put(lambda: self._write(0, start, [protos.layout_value(nnhealth_layout())]), KEEP)
        with _OPEN_LOCK:
            _OPEN.add(self)

    # -- called by the Monitor on the training thread ---------------------------
    def write_step(self, record: StepRecord) -> None:
        if self._closed:
            return
        self._queue_findings()
        now = time.time()
        step, scalars = record.step, record.scalars
        self._last_step = max(self._last_step, step)
        self._scalar_batch.append((step, now, scalars))
        if record.summaries:
            # one job for the step's scalars and its histograms and states; should the queue be full,
            # its fallback writes the scalars alone
            batch, self._scalar_batch = self._scalar_batch, []
            summaries = dict(record.summaries)
            # copied here: the Monitor keeps adding facts to these dicts while the writer reads them
            meta = {where: dict(facts) for where, facts in record.meta.items()}
            scalar_cost = SCALAR_BYTES * sum(len(scalars) for _, _, scalars in batch)
            cost = scalar_cost + sum(s.v.nbytes + SUMMARY_BYTES for s in summaries.values())
            self._queue.put(lambda: self._write_sampled(batch, summaries, meta), HISTOGRAMS, cost=cost,
                            fallback=(lambda: self._write_scalars(batch), scalar_cost, len(batch)))
        elif len(self._scalar_batch) >= SCALAR_BATCH or now - self._scalar_batch[0][1] > 1.0:
            self._queue_scalars()

    def write_finding(self, finding) -> None:
        if self._closed:
            return
        self._findings.append(finding)
        step = int(finding.step)
        self._findings_step = step if self._findings_step is None else max(self._findings_step, step)

    def flush(self) -> None:
        if self._closed:
            return
        self._queue_scalars()
        self._queue_findings()
        self._queue_dropped()
        self._queue.put(self._events.flush, KEEP)
        self._queue.flush(self.timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with _OPEN_LOCK:
            _OPEN.discard(self)
        try:
            self._queue_scalars()
            self._queue_findings()
            self._queue_dropped()
            self._queue.put(self._events.close, KEEP)
            self._queue.close(self.timeout)
        finally:
            if not self._queue.running:  # stopped by a write error: its file is still open
                self._events.abandon()
            dropped = self._queue.dropped
            if any(dropped.values()):
                lost = [f"the {kind} of {dropped[kind]} step(s)" for kind in (HISTOGRAMS, SCALARS) if dropped[kind]]
                log.warning("nnhealth: the disk could not keep up with training; not written to %s: %s",
                            self.logdir, ", ".join(lost))

    @property
    def dropped(self) -> dict:
        """Steps whose scalars or histograms were not written because the queue was full."""
        return dict(self._queue.dropped)

    # -- helpers -------------------------------------------------------------------
    def _queue_scalars(self) -> None:
        """Hand the scalars of the steps not written yet to the writer thread, as one job."""
        batch, self._scalar_batch = self._scalar_batch, []
        if batch:
            self._queue.put(lambda: self._write_scalars(batch), SCALARS,
                            cost=SCALAR_BYTES * sum(len(scalars) for _, _, scalars in batch), steps=len(batch))

    def _queue_findings(self) -> None:
        if self._findings_step is None:
            return
        step, findings = self._findings_step, tuple(self._findings)
        self._findings_step = None
        now = time.time()
        self._queue.put(lambda: self._write(step, now, [
            protos.text(tags.FINDINGS, findings_table(findings), "findings so far, oldest first")]), KEEP)

    def _queue_dropped(self) -> None:
        dropped = dict(self._queue.dropped)
        if dropped == self._dropped_written:
            return
        self._dropped_written = dropped
        step, now = self._last_step, time.time()
        values = [protos.scalar(f"{tags.DROPPED_PREFIX}{kind}", n) for kind, n in dropped.items()]
        self._queue.put(lambda: self._write(step, now, values), KEEP)

    # -- on the writer thread ----------------------------------------------------------
    def _write(self, step: int, wall_time: float, pieces: list, size: int | None = None) -> None:
        """One event of ``pieces`` (see :func:`.protos.event`), none when there are none."""
        if pieces:
            self._events.add_event(protos.event(step, wall_time, pieces, size))
            if time.monotonic() - self._events.last_flush > self.flush_secs:
                self._events.flush()

    def _write_scalars(self, batch: list) -> None:
        for step, now, scalars in batch:
            self._write(step, now, _scalar_values(scalars))

    def _write_sampled(self, batch: list, summaries: dict, meta: dict) -> None:
        """The scalars of ``batch``, then the histograms and states of its last step. Two events: the
        scalars first (readers drop a resumed run's later states when its scalars go back), and on
        their own (readers skip TensorBoard's compat conversion for events of plain scalars)."""
        self._write_scalars(batch)
        step, now, _ = batch[-1]
        self._write(step, now, *self._bulk_values(summaries, meta))

    def _bulk_values(self, summaries: dict, meta: dict) -> tuple[list, int]:
        """Histograms of activations and inputs, and the mergeable state of every summary, with
        the state's metadata on a tag's first event and whenever its layout or facts change; as
        pieces of an event's summary, and their size in bytes."""
        pieces = protos.histogram_values([(tags.histogram_tag(role, where), s)
                                          for (role, where), s in summaries.items() if role in tags.HISTOGRAM_ROLES])
        size = sum(map(len, pieces))
        written = self._state_written
        for name, s in summaries.items():
            facts = meta.get(name[1], _NO_FACTS)  # the sink's own copy, never changed after write_step
            vector = protos.state_vector(s)
            last = written.get(name)
            if last is not None and last[1] == facts and (last[0] is s.layout or last[0] == s.layout):
                prefix = protos.state_prefix(name[0], name[1], vector.size)  # cached per size
                pieces += (prefix, vector)
                size += len(prefix) + 8 * vector.size
            else:
                written[name] = (s.layout, facts)
                entry = protos.state_value(name[0], name[1], s, facts, vector)
                pieces.append(entry)
                size += len(entry)
        return pieces, size

    def _flush_if_dirty(self) -> None:
        if self._events.dirty:
            self._events.flush()

    def __repr__(self) -> str:
        return f"TensorBoardSink({self.logdir!r}, pending={self._queue.pending}, dropped={self.dropped})"


class _ScalarLayout:
    """How the scalars of a step with these (where, stat) keys are written: the keys are the same on
    most steps of a run, so their tags are worked out once."""

    def __init__(self, keys: tuple):
        self.block = protos.ScalarBlock([tags.scalar_tag(where, stat) for where, stat in keys])
        #: (position, tag) of each update ratio, whose log10 is written too
        self.ratios = [(i, f"{tags.UPDATE_RATIO_LOG10}/{where}") for i, (where, stat) in enumerate(keys)
                       if stat == "update/ratio" and where is not None]


@lru_cache(maxsize=64)
def _scalar_layout(keys: tuple) -> _ScalarLayout:
    return _ScalarLayout(keys)


def _scalar_values(scalars: dict) -> list[bytes]:
    """The entries of one step's scalars, plus the train-validation gaps when both sides are there
    and the log10 of the update ratios."""
    if not scalars:
        return []
    layout = _scalar_layout(tuple(scalars))
    numbers = list(scalars.values())
    values = [layout.block.entries(numbers)]
    for i, tag in layout.ratios:
        value = numbers[i]
        if value > 0 and math.isfinite(value):
            values.append(protos.scalar(tag, math.log10(value)))
    for tag, minuend, subtrahend in ((tags.LOSS_GAP, "val_loss", "loss"), (tags.ACCURACY_GAP, "train_acc", "val_acc")):
        a, b = scalars.get((None, minuend)), scalars.get((None, subtrahend))
        if a is not None and b is not None and math.isfinite(a) and math.isfinite(b):
            values.append(protos.scalar(tag, a - b))
    return values
