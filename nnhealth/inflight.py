"""Steps whose numbers are on their way from an accelerator to the host, in step order.

A step's device values (packed summaries, the loss tensor) are copied to
the host without blocking, one copy per array library, and read once the
copy is done: a later step asks whether it is (asking does not wait), and
reads it at the latest one transfer later, when it is long done. Nothing
here ever waits on the training's own kernels.

An unsampled step on a GPU has only its loss (and metrics) on the device.
Copying that every step costs the CPU a few launches, a pinned buffer and
an event, several percent of a small model's step: so such steps are held
back, their values left on the device, and fetched together, with the next
step that copies anything or after ``limit`` held steps (``every``, at most
:data:`MAX_HELD`), in one copy. Rules then judge those losses up to ``limit``
steps later, in step order.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .stats.backend import Ready, start_fetch

#: the most unsampled steps whose losses wait, on the device here or on the host (Monitor._defer):
#: with a sparse ``every`` (statistics every 1000 steps) a NaN loss is still found within a few steps,
#: and one copy per this many steps costs nothing measurable
MAX_HELD = 16


class _Part:
    """One step's share of a transfer several steps share (read once, cut per step)."""

    def __init__(self, transfer, start: int, stop: int, cache: dict):
        self.transfer, self.start, self.stop, self._cache = transfer, start, stop, cache

    def ready(self) -> bool:
        return self.transfer.ready()

    def result(self):
        host = self._cache.get("host")
        if host is None:
            host = self._cache["host"] = self.transfer.result()
        return host[self.start:self.stop]


@dataclass
class Outgoing:
    """A step to send: its host numbers, and its device summaries and scalars."""

    step: int
    sampled: bool
    numbers: dict
    #: [(key, ops, layout, vector)]: packed summaries
    items: list = field(default_factory=list)
    #: {name: (ops, vector)}: device scalars (loss, metrics)
    scalars: dict = field(default_factory=dict)


class InFlight:
    """Held steps and sent ones, oldest first."""

    def __init__(self, limit: int):
        self.limit = min(limit, MAX_HELD)
        self.held: list[Outgoing] = []
        #: (step, sampled, numbers, transfers, generation, host bytes); transfers: [(keys, scalars, transfer)];
        #: host bytes is None for a step with a copy from a device
        self.queue: deque = deque()
        #: queued steps with a copy from a device (the others' numbers are in host memory already)
        self.copying = 0
        #: bytes of the vectors the queued host steps hold
        self.host_bytes = 0
        self._generation = 0

    def __bool__(self) -> bool:
        return bool(self.held or self.queue)

    def hold(self, out: Outgoing) -> bool:
        """Keep ``out`` on the device; True when ``limit`` steps are held (time to :meth:`send`)."""
        self.held.append(out)
        return len(self.held) >= self.limit

    def send(self, current: Outgoing | None = None) -> None:
        """Start copying the held steps and ``current`` (in that order), one transfer per array
        library."""
        steps = self.held + ([current] if current is not None else [])
        self.held = []
        if not steps:
            return
        self._generation += 1
        groups: dict[int, tuple] = {}  # array library -> (ops, vectors, [(entry, keys, scalars, start)])
        for i, out in enumerate(steps):
            per_ops: dict[int, tuple] = {}
            for key, ops, layout, vec in out.items:
                per_ops.setdefault(id(type(ops)), (ops, [], []))[1].append((key, layout, vec))
            for name, (ops, vec) in out.scalars.items():
                per_ops.setdefault(id(type(ops)), (ops, [], []))[2].append((name, vec))
            for lib, (ops, keys, scalars) in per_ops.items():
                _, vectors, owners = groups.setdefault(lib, (ops, [], []))
                owners.append((i, keys, scalars, len(vectors)))
                vectors.extend([v for _, _, v in keys] + [v for _, v in scalars])
        transfers: list[list] = [[] for _ in steps]
        for ops, vectors, owners in groups.values():
            transfer = start_fetch(ops, vectors)
            cache: dict = {}
            for i, keys, scalars, start in owners:
                stop = start + len(keys) + len(scalars)
                transfers[i].append((keys, scalars, _Part(transfer, start, stop, cache)))
        for out, parts in zip(steps, transfers):
            if any(not isinstance(part.transfer, Ready) for *_, part in parts):
                size = None
                self.copying += 1
            else:
                size = sum(getattr(vec, "nbytes", 0) for *_, vec in out.items)
                self.host_bytes += size
            self.queue.append((out.step, out.sampled, out.numbers, parts, self._generation, size))

    def arrived(self, wait: bool):
        """Sent steps to process now, oldest first: all of them when ``wait``; else those of transfers
        older than the newest (sent at least a step ago: done), and the newest's once its copy is done."""
        newest = self.queue[-1][4] if self.queue else None
        while self.queue:
            step, sampled, numbers, transfers, generation, size = self.queue[0]
            if not wait and generation == newest and not all(t.ready() for *_, t in transfers):
                return
            self.queue.popleft()
            if size is None:
                self.copying -= 1
            else:
                self.host_bytes -= size
            yield step, sampled, numbers, transfers
