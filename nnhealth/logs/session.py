"""The runs under some log folders, read and replayed together, and polled again while they grow."""
from __future__ import annotations

import logging
from pathlib import Path

from .discovery import check_logdir, find_runs
from .render import run_report
from .replay import Replay
from .runlog import RunLog

log = logging.getLogger("nnhealth")


class Session:
    """What ``nnhealth check`` looks at: every run found under ``logdirs``, one :class:`Replay` each."""

    def __init__(self, logdirs, *, overrides: dict | None = None, tag_overrides: dict | None = None,
                 num_classes: int | None = None, preset: str = "auto"):
        self.logdirs = [str(d) for d in logdirs]
        for d in self.logdirs:
            check_logdir(d)
        self.options = dict(overrides=overrides, tag_overrides=tag_overrides, num_classes=num_classes,
                            preset=preset)
        self.replays: dict[Path, Replay] = {}

    def empty_logdirs(self) -> list[str]:
        """The log folders in which no run was found."""
        found = {r.log.spec.path.resolve() for r in self.replays.values()}
        return [d for d in self.logdirs
                if not any(p == Path(d).resolve() or Path(d).resolve() in p.parents for p in found)]

    def poll(self, final: bool = False) -> list[dict]:
        """Find new runs, read what was written since the last poll, replay it; returns the reports."""
        for d in self.logdirs:
            try:
                specs = find_runs(d)
            except OSError:  # removed or replaced while followed: keep what was read
                continue
            for spec in specs:
                key = spec.path.resolve()
                if key not in self.replays:
                    self.replays[key] = Replay(RunLog(spec), **self.options)
                elif len(spec.parts) > len(self.replays[key].log.spec.parts):
                    self.replays[key].log.spec = spec  # e.g. Keras' validation/ folder appeared later
        for replay in self.replays.values():
            try:
                replay.log.poll()
                if final:
                    replay.log.finish()
                replay.advance(final=final)
            except Exception as e:  # one unreadable run must not hide the others
                log.debug("reading %s failed", replay.log.name, exc_info=True)
                replay.log.add_problem(f"{replay.log.spec.path}: reading failed ({type(e).__name__}: {e}); "
                                "the data read before is kept")
        return self.reports()

    def reports(self) -> list[dict]:
        return [run_report(r) for _, r in sorted(self.replays.items(), key=lambda kv: kv[1].log.name)]
