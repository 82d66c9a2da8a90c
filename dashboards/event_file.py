"""An append-only TensorBoard event file, with a checksum that does not hold the GIL for milliseconds.

The format is TensorBoard's: ``event_pb2.Event`` protos framed as TFRecords
(length, masked CRC-32C of the length, data, masked CRC-32C of the data).
TensorBoard's own ``RecordWriter`` computes the CRC in pure Python, about
33 ms per 120 kB on the machine this was measured on - the size of one
sampled step's mergeable states - and that time holds the GIL, so a writer
thread would slow the training thread just the same. Here the CRC comes from
``google-crc32c`` (or ``crc32c``) when installed, a few microseconds, and
falls back to TensorBoard's pure-Python one otherwise.
"""
from __future__ import annotations

import errno
import itertools
import os
import socket
import struct
import time
from pathlib import Path

from tensorboard.compat.proto import event_pb2


def _crc32c_function():
    """(crc32c(bytes) -> int, name) of the fastest implementation available."""
    try:
        import google_crc32c

        if google_crc32c.implementation == "c":
            return google_crc32c.value, "google-crc32c"
    except ImportError:
        pass
    try:
        import crc32c

        return crc32c.crc32c, "crc32c"
    except ImportError:
        pass
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import crc32c as slow

    return slow, "pure Python (slow; pip install google-crc32c)"


CRC32C, CRC32C_IMPLEMENTATION = _crc32c_function()
_UID = itertools.count()


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C (rotated and offset so a CRC of CRCs is not trivial)."""
    crc = CRC32C(data) & 0xFFFFFFFF
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def frame_parts(data: bytes) -> tuple[bytes, bytes]:
    """What a TFRecord puts before and after ``data``."""
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)), struct.pack("<I", masked_crc32c(data))


def frame(data: bytes) -> bytes:
    """One TFRecord: the bytes TensorBoard's RecordWriter writes for ``data``."""
    head, tail = frame_parts(data)
    return head + data + tail


class EventFile:
    """``events.out.tfevents.<time>.<host>.<pid>.<n>.nnhealth`` in ``logdir``, opened for appending events.

    Not thread-safe: one writer thread owns it. The name never clobbers
    another writer's file (exclusive create), e.g. a PyTorch SummaryWriter
    started in the same second by the same process.
    """

    def __init__(self, logdir):
        logdir = Path(logdir)
        logdir.mkdir(parents=True, exist_ok=True)
        host = socket.gethostname().replace(os.sep, "_")
        while True:
            name = f"events.out.tfevents.{int(time.time()):010d}.{host}.{os.getpid()}.{next(_UID)}.nnhealth"
            try:
                self._fh = open(logdir / name, "xb")
                break
            except FileExistsError:
                continue
        self.path = logdir / name
        self.last_flush = time.monotonic()
        self.dirty = False
        self.add_event(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2",
                                       source_metadata=event_pb2.SourceMetadata(writer="nnhealth")))
        self.flush()

    def add_event(self, event: event_pb2.Event | bytes) -> None:
        """Append an event, or the bytes of a serialised one (what the sink builds, see :mod:`.protos`)."""
        data = event if isinstance(event, bytes) else event.SerializeToString()
        head, tail = frame_parts(data)
        self._fh.write(head)  # three writes rather than one: a sampled step's event is 100 kB, not copied again
        self._fh.write(data)
        self._fh.write(tail)
        self.dirty = True

    def flush(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            self._check_linked()
        self.dirty = False
        self.last_flush = time.monotonic()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            try:
                self._check_linked()
            finally:
                self._fh.close()

    def abandon(self) -> None:
        """Close after a write failed: what is still buffered cannot be written, and that was said."""
        try:
            self._fh.close()
        except OSError:
            pass

    def _check_linked(self) -> None:
        """Writes to a file whose folder was deleted succeed and are lost: say so instead."""
        if os.fstat(self._fh.fileno()).st_nlink == 0:
            raise FileNotFoundError(errno.ENOENT, "deleted while the run was writing to it", str(self.path))
