"""The records of one TensorBoard event file, read from where the last read stopped.

An event file is a TFRecord file: each record is a little-endian uint64
length, a masked CRC-32C of those 8 bytes, the payload, and a masked CRC-32C
of the payload. TensorBoard's own loader (``event_file_loader``) treats a
damaged record like the end of the file (logged at debug level, everything
after it lost), and its pure-Python fallback reads as many bytes as a header
announces before checking them. This reader frames records itself so it can:

- tell a truncated last record (a writer killed mid-write, or still writing)
  from corruption, and say which file and byte;
- skip a record whose payload fails its checksum and go on with the next one;
- find the next intact record after a damaged header;
- refuse a length larger than the file or than ``max_record_bytes`` before
  reading it.

Checksums use ``google_crc32c`` when it is installed (C, hardware CRC) and
TensorBoard's own ``masked_crc32c`` otherwise, so the result is the same.
"""
from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

try:  # optional accelerator: the same checksum, ~1000x faster than pure Python
    import google_crc32c

    if getattr(google_crc32c, "implementation", "c") != "c":
        raise ImportError("google_crc32c without its C extension")

    def masked_crc32c(data: bytes) -> int:
        x = google_crc32c.value(bytes(data))
        return (((x >> 15) | (x << 17)) + 0xA282EAD8) & 0xFFFFFFFF
except ImportError:
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

HEADER = 12     # uint64 length + uint32 masked CRC of the length
FOOTER = 4      # uint32 masked CRC of the payload
#: the largest payload accepted; TensorBoard's own writers stay far below it
MAX_RECORD_BYTES = 256 << 20
_SCAN_CHUNK = 1 << 20


class RecordFile:
    """Incremental, checked reader of one TFRecord file.

    ``read()`` yields the payloads of the complete records written since the
    previous call. ``problems`` collects one message per damaged place;
    ``pending`` is the size of an incomplete record at the end of the file,
    which the next ``read()`` retries (a writer may still be writing it).
    """

    def __init__(self, path, max_record_bytes: int = MAX_RECORD_BYTES):
        self.path = Path(path)
        self.max_record_bytes = max_record_bytes
        self.offset = 0          # where the next record starts
        self.records = 0         # intact records read so far
        self.pending = 0         # bytes of an incomplete last record
        self.problems: list[str] = []

    def _problem(self, message: str) -> None:
        self.problems.append(f"{self.path}: {message}")

    def read(self) -> Iterator[bytes]:
        with open(self.path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < self.offset:
                self._problem(f"the file shrank from {self.offset} to {size} bytes while being read "
                              "(replaced or truncated by another program); the records read before are kept")
                self.offset = size
            while True:
                remaining = size - self.offset
                self.pending = 0
                if remaining == 0:
                    return
                if remaining < HEADER:
                    self.pending = remaining
                    return
                fh.seek(self.offset)
                head = fh.read(HEADER)
                length, = struct.unpack("<Q", head[:8])
                crc, = struct.unpack("<I", head[8:])
                if masked_crc32c(head[:8]) != crc:
                    self._skip_damage(fh, size, "corrupt record header (its length fails its checksum)")
                    continue
                if length > self.max_record_bytes:
                    self._skip_damage(fh, size, f"record announces {length} bytes, over the "
                                                f"{self.max_record_bytes}-byte limit")
                    continue
                total = HEADER + length + FOOTER
                if total > remaining:
                    self.pending = remaining
                    return
                data = fh.read(length)
                crc, = struct.unpack("<I", fh.read(FOOTER))
                at = self.offset
                self.offset += total
                if masked_crc32c(data) != crc:
                    self._problem(f"corrupt record at byte {at} ({length} bytes fail their checksum); skipped, "
                                  "reading on from the next record")
                    continue
                self.records += 1
                yield data

    def _skip_damage(self, fh, size: int, what: str) -> None:
        """Report the damage at ``offset`` and move to the next intact record (or the end)."""
        at = self.offset
        found = self._next_intact(fh, at + 1, size)
        if found is None:
            self.offset = size
            if self.records == 0 and at == 0:
                self._problem(f"not a TensorBoard event file, or corrupt from its first byte: no intact record "
                              f"in its {size} bytes")
            else:
                self._problem(f"{what} at byte {at}; no intact record after it, the last {size - at} bytes "
                              "are skipped")
        else:
            self.offset = found
            self._problem(f"{what} at byte {at}; skipped {found - at} bytes to the next intact record")

    def _next_intact(self, fh, start: int, size: int) -> int | None:
        """Offset of the first intact record at or after ``start``.

        A record's length is below 4 GiB, so its header's bytes 4-7 are zero:
        only those places are checked (header checksum, then payload checksum).
        """
        base = start
        while base + HEADER + FOOTER <= size:
            fh.seek(base)
            buf = fh.read(_SCAN_CHUNK + HEADER)
            i = buf.find(b"\0\0\0\0", 4)
            while i != -1 and i - 4 < _SCAN_CHUNK:
                at = base + i - 4
                if self._intact_at(fh, at, size):
                    return at
                i = buf.find(b"\0\0\0\0", i + 1)
            base += _SCAN_CHUNK
        return None

    def _intact_at(self, fh, at: int, size: int) -> bool:
        fh.seek(at)
        head = fh.read(HEADER)
        if len(head) < HEADER:
            return False
        length, = struct.unpack("<Q", head[:8])
        if at + HEADER + length + FOOTER > size or length > self.max_record_bytes:
            return False
        if masked_crc32c(head[:8]) != struct.unpack("<I", head[8:])[0]:
            return False
        data = fh.read(length)
        return masked_crc32c(data) == struct.unpack("<I", fh.read(FOOTER))[0]

    def truncation(self) -> str | None:
        """The message for an incomplete last record, once the writer is known to be gone."""
        if not self.pending:
            return None
        return (f"{self.path}: truncated last record at byte {self.offset} ({self.pending} bytes of an incomplete "
                f"record: the writer was killed mid-write or is still writing); the {self.records} records "
                "before it were read")
