"""Console output: each finding as a TrainingHealthWarning and one line on the ``nnhealth`` logger.

The warning goes through the ``warnings`` filters (so users can ignore it or
turn it into an error), but is displayed once, by the logger, instead of by
``warnings.showwarning``: that keeps one readable line per finding and lets
the line be written around a tqdm progress bar instead of through it.
"""
from __future__ import annotations

import logging
import sys
import warnings

from ..finding import Finding, TrainingHealthWarning
from .base import Sink

log = logging.getLogger("nnhealth")

_LEVEL = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}


class ProgressBarSafeHandler(logging.StreamHandler):
    """Writes through ``tqdm.write`` when tqdm is in use, so bars are not garbled."""

    def emit(self, record):
        try:
            msg = self.format(record)
            tqdm = sys.modules.get("tqdm")
            if tqdm is not None and getattr(tqdm, "tqdm", None) is not None and getattr(tqdm.tqdm, "_instances", None):
                tqdm.tqdm.write(msg, file=self.stream)
            else:
                self.stream.write(msg + self.terminator)
                self.flush()
        except Exception:  # never let printing break training
            self.handleError(record)


def install_default_handler() -> None:
    """Give the ``nnhealth`` logger a console handler unless logging is configured already."""
    if log.handlers or logging.getLogger().handlers:
        if log.level == logging.NOTSET:
            log.setLevel(logging.INFO)
        return
    handler = ProgressBarSafeHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(logging.WARNING)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


class ConsoleSink(Sink):
    def write_finding(self, finding: Finding) -> None:
        line = finding.line()
        with warnings.catch_warnings(record=True) as caught:
            # the user's filters still apply: "error" raises here, "ignore" records nothing
            warnings.warn(TrainingHealthWarning(line, finding), stacklevel=4)
        if caught:
            log.log(_LEVEL[finding.severity], line)


def summary_table(findings: list[Finding]) -> str:
    """The findings of a run as a fixed-width table (symptom, where, first step, message)."""
    if not findings:
        return "nnhealth: no findings."
    rows = [(f.severity, f.symptom, f.where or "-", str(f.step), f.message) for f in findings]
    head = ("severity", "symptom", "where", "step", "message")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    fmt = "  ".join(f"{{:{w}}}" for w in widths) + "  {}"
    lines = [f"nnhealth: {len(findings)} finding(s)", fmt.format(*head)]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(lines)
