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
            bar = getattr(tqdm, "tqdm", None) if tqdm is not None else None
            if bar is not None and getattr(bar, "_instances", None):
                bar.write(msg, file=self.stream)
            else:
                self.stream.write(msg + self.terminator)
                self.flush()
        except Exception:  # never let printing break training
            self.handleError(record)


def _prints_to_console(handler) -> bool:
    return (isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
            and getattr(handler, "stream", None) in (sys.stderr, sys.stdout))


def install_default_handler() -> None:
    """Make findings visible on the console without duplicating the user's own logging setup.

    If the ``nnhealth`` logger or the root logger already prints to the console, records
    just propagate there; otherwise a progress-bar-safe handler on stderr is added (records
    still propagate, so file handlers and test capture see them too).
    """
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)
    if any(isinstance(h, ProgressBarSafeHandler) or _prints_to_console(h) for h in log.handlers):
        return
    if any(_prints_to_console(h) for h in logging.getLogger().handlers):
        return
    handler = ProgressBarSafeHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(logging.WARNING)
    log.addHandler(handler)


#: places named on a grouped line before "+N more"
MAX_PLACES = 3


def group_line(findings: list[Finding]) -> str:
    """One line for findings of one symptom at one step (e.g. every layer of a deep net)."""
    first = findings[0]
    if len(findings) == 1:
        return first.line()
    places = [f.where or "-" for f in findings]
    shown = ", ".join(places[:MAX_PLACES]) + (f" +{len(places) - MAX_PLACES} more" if len(places) > MAX_PLACES else "")
    evidence = f" ({first.evidence_text()})" if first.evidence else ""
    advice = f" -> {first.advice}" if first.advice else ""
    return (f"nnhealth {first.severity} {first.symptom} at step {first.step} in {len(findings)} places "
            f"[{shown}]: {first.where}: {first.message}{evidence}{advice}")


class ConsoleSink(Sink):
    """One line per symptom and step; each line is one TrainingHealthWarning."""

    def write_finding(self, finding: Finding) -> None:
        self.write_findings([finding])

    def write_findings(self, findings: list[Finding]) -> None:
        groups: dict[tuple, list[Finding]] = {}
        for f in findings:
            groups.setdefault((f.symptom, f.severity, f.step), []).append(f)
        for group in groups.values():
            line = group_line(group)
            if _passes_filters(TrainingHealthWarning(line, group[0])):
                log.log(_LEVEL[group[0].severity], line)


def _passes_filters(warning: Warning, stacklevel: int = 5) -> bool:
    """Issue ``warning`` through the user's filters ("error" raises here, "ignore" drops it), placed as
    ``warnings.warn(warning, stacklevel)`` called by our caller would place it, and say whether it came
    through, without letting ``warnings.showwarning`` print it.

    Not with ``catch_warnings()``: it changes the filters, and every change makes Python show again each
    warning it shows once per place (a training loop's own repeated warnings, after every finding). And
    with a registry of its own on each call, so that a finding line repeated (a second run in the same
    process) is shown again, as before; a user's "once" filter still holds."""
    try:
        frame = sys._getframe(stacklevel)
        place = (frame.f_code.co_filename, frame.f_lineno, frame.f_globals.get("__name__", "<string>"))
    except ValueError:  # a shallower stack: placed here
        place = (__file__, 0, __name__)
    shown = []
    previous = warnings.showwarning
    warnings.showwarning = lambda *args, **kwargs: shown.append(args)
    try:
        warnings.warn_explicit(warning, type(warning), *place, registry={})
    finally:
        warnings.showwarning = previous
    return bool(shown)


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
