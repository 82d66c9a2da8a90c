"""Events of one event file, through the same compat layers TensorBoard applies when it loads them.

``tensorboard.backend.event_processing.event_file_loader.EventFileLoader``
parses each record as an ``Event`` and passes it through ``data_compat``
(old-style ``simple_value`` scalars and ``histo`` histograms become tensor
summaries) and ``dataclass_compat`` (each value gets its data class). Doing
the same here means a PyTorch ``simple_value`` and a Keras scalar tensor
arrive in one shape (plain ``simple_value`` scalars skip the round trip
through a tensor: same number, a third of the time). Only the framing
differs: see :mod:`.records`.
"""
from __future__ import annotations

from collections.abc import Iterator

from google.protobuf.message import DecodeError
from tensorboard import data_compat, dataclass_compat
from tensorboard.compat.proto import event_pb2

from .records import RecordFile


class EventFile:
    """Incremental reader of the events in one file (``read()`` yields only new ones)."""

    def __init__(self, path):
        self.records = RecordFile(path)
        #: tag -> the SummaryMetadata of its first value in this file (kept by dataclass_compat)
        self.initial_metadata: dict = {}
        self.bad_events = 0

    @property
    def path(self):
        return self.records.path

    @property
    def problems(self) -> list[str]:
        return self.records.problems

    def _bad(self, what: str) -> None:
        """Report the first few undecodable events of a file (a damaged file could have thousands)."""
        self.bad_events += 1
        if self.bad_events <= 3:
            self.records.problems.append(f"{self.path}: {what}; skipped")
        elif self.bad_events == 4:
            self.records.problems.append(f"{self.path}: more undecodable events skipped (not listed)")

    def read(self) -> Iterator[event_pb2.Event]:
        for data in self.records.read():
            try:
                event = event_pb2.Event.FromString(data)
            except DecodeError as e:
                self._bad(f"record {self.records.records} is not a TensorBoard event ({e})")
                continue
            if event.HasField("summary") and all(v.WhichOneof("value") == "simple_value"
                                                 for v in event.summary.value):
                # plain scalars (PyTorch, Lightning, HF): data_compat would only wrap each in a float32
                # tensor that the reader unwraps again - read them as they are, 3x faster
                yield event
                continue
            try:
                migrated = dataclass_compat.migrate_event(data_compat.migrate_event(event), self.initial_metadata)
            except Exception as e:  # TensorBoard's converters raise on malformed values: skip the event
                self._bad(f"event at step {event.step} cannot be converted by TensorBoard's compat layer "
                          f"({type(e).__name__}: {e})")
                continue
            yield from migrated
