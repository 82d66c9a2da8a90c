"""findings.jsonl: every finding appended and flushed as it happens, so a crash loses nothing."""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path

from ..finding import Finding
from .base import Sink

FILENAME = "findings.jsonl"


class FindingsFile(Sink):
    def __init__(self, logdir):
        self.path = Path(logdir) / FILENAME
        self._fh = open(self.path, "a", encoding="utf-8")

    def write_finding(self, finding: Finding) -> None:
        self._fh.write(finding.to_json() + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        if os.fstat(self._fh.fileno()).st_nlink == 0:  # appending to a file nobody can open any more
            raise FileNotFoundError(errno.ENOENT, "deleted while the run was writing to it", str(self.path))

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


def read_findings(path, max_bytes: int = 64 << 20) -> tuple[list[Finding], list[str]]:
    """Findings from a findings.jsonl file, and a message per line that could not be read."""
    path = Path(path)
    problems: list[str] = []
    if path.stat().st_size > max_bytes:
        return [], [f"{path}: larger than {max_bytes} bytes, not read"]
    out = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for i, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                out.append(Finding.from_dict(json.loads(line)))
            except (ValueError, TypeError, KeyError, RecursionError) as e:  # RecursionError: [[[[...
                problems.append(f"{path}:{i}: unreadable finding ({type(e).__name__}: {e})"[:300])
    return out, problems
