"""Turns rule verdicts into findings: once per place, again only after it cleared."""
from __future__ import annotations

import logging

from .finding import Finding
from .history import History
from .rules import RULES, Context

log = logging.getLogger("nnhealth")


class Engine:
    """Evaluates the enabled rules on a history and remembers which symptoms are active."""

    def __init__(self, thresholds: dict, enabled: list[str], strict: bool = False, clear_after: int = 3):
        self.thresholds = thresholds
        self.rules = [RULES[r] for r in enabled]
        #: what an unsampled step evaluates: the loss rules, judged on every step
        self._every_step = [r for r in self.rules if r.cadence == "step"]
        self.strict = strict
        #: a windowed symptom counts as cleared only after this many healthy verdicts in a row, so a
        #: value hovering at a threshold is not reported again and again (per-step rules clear at once)
        self.clear_after = clear_after
        #: per rule, its active symptoms (place -> healthy verdicts since last seen): each rule's verdict
        #: is matched against its own symptoms only, however many other rules have active ones
        self.active: dict[str, dict[str | None, int]] = {rule.id: {} for rule in self.rules}
        self.broken: set[str] = set()

    def evaluate(self, history: History, step: int, num_classes=None, sampled: bool = True) -> list[Finding]:
        ctx = Context(history=history, step=step, num_classes=num_classes)
        new = []
        for rule in self.rules if sampled else self._every_step:
            if rule.id in self.broken:
                continue
            try:
                detections = rule.check(ctx, self.thresholds[rule.id])
            except Exception:
                if self.strict:
                    raise
                self.broken.add(rule.id)
                log.error("nnhealth: rule %s failed and is disabled for this run", rule.id, exc_info=True)
                continue
            if detections is None:
                continue
            active = self.active[rule.id]
            if not detections and not active:  # the usual verdict: healthy, and nothing to clear
                continue
            seen = set()
            for d in detections:
                key = d.where if d.key is None else d.key
                seen.add(key)
                if key in active:
                    active[key] = 0
                    continue
                active[key] = 0
                new.append(Finding(symptom=rule.id, severity=d.severity or rule.severity, step=step,
                                   where=d.where, message=d.message, evidence=dict(d.evidence),
                                   advice=d.advice or rule.advice))
            if len(seen) == len(active):  # every active symptom was seen again: nothing clears
                continue
            needed = 1 if rule.cadence == "step" else self.clear_after
            for key in [k for k in active if k not in seen]:
                active[key] += 1
                if active[key] >= needed:
                    del active[key]
        return new
