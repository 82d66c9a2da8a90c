"""Replaying a recorded run through the rules, step by step, as if it were live.

A fresh :class:`~nnhealth.Monitor` (no console, no files) receives every
recorded step in step order through :meth:`~nnhealth.Monitor.ingest`: the
curves as ``loss``, ``val_loss``, ``train_acc``, ``val_acc``, and for
nnhealth's own runs every recorded layer state, so all rules judge the run
again with the thresholds given now. The replay is incremental: while a run
is being written, each :meth:`Replay.advance` ingests only the steps that
are complete (below the newest step seen), and starts over when the choice
of tags or preset changes or data arrives late for a step already judged.

Like a live monitor, the replay stops judging at the first critical finding
(``should_stop``): what a run does after it blew up is a consequence, and
advice about it (e.g. "the loss does not decrease: raise the learning
rate") would point the wrong way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..finding import SEVERITIES, Finding
from ..monitor import Monitor
from ..rules import RULES
from . import presets, tags
from .runlog import RunLog

#: a live Monitor's default: the sample-cadence rules judge every 10th step of a per-step curve
DEFAULT_EVERY = 10
#: accuracies above this are read as percentages
PERCENT_ABOVE = 1.5


@dataclass(frozen=True)
class Plan:
    mapping: tags.Mapping
    preset: str
    every: int
    num_classes: int | None = None
    #: signal -> factor applied to its values (percent accuracies -> fractions)
    scales: tuple = ()
    reasons: tuple = field(default=(), compare=False)


class Replay:
    """The findings of one run, recomputed from its logs with the current thresholds."""

    def __init__(self, log: RunLog, *, overrides: dict | None = None, tag_overrides: dict | None = None,
                 num_classes: int | None = None, preset: str = "auto"):
        if preset not in ("auto", *presets.PRESETS):
            raise ValueError(f"preset must be auto, {' or '.join(presets.PRESETS)}; got {preset!r}")
        self.log = log
        self.overrides = dict(overrides or {})
        self.tag_overrides = dict(tag_overrides or {})
        self.num_classes = num_classes
        self.preset = preset
        self.plan: Plan | None = None
        self.monitor: Monitor | None = None
        self.done = -1
        self.steps = 0
        self.stopped_at: int | None = None
        self._lost_states = False

    # -- planning ------------------------------------------------------------
    def _make_plan(self, final: bool) -> Plan:
        log = self.log
        mapping = tags.resolve(log.scalars, self.tag_overrides)
        loss = log.scalars.get(mapping.signals.get("loss", ""), {})
        reasons = []
        preset = self.preset
        if preset == "auto":
            if log.description is not None or log.roles:  # nnhealth logs the loss at every step
                preset = "step"
            elif mapping.per_epoch:
                preset = "epoch"
                reasons.append(f"{mapping.signals['loss']} holds one loss per epoch")
            elif final and 0 < len(loss) < presets.MIN_STEP_POINTS:
                preset = "epoch"
                reasons.append(f"its loss curve has only {len(loss)} points, taken for one per epoch")
            else:
                preset = "step"
        scales = []
        for signal in ("train_acc", "val_acc"):
            tag = mapping.signals.get(signal)
            values = [v for _, v in log.scalars.get(tag, {}).values() if math.isfinite(v)] if tag else []
            if values and PERCENT_ABOVE < max(values) <= 100:
                scales.append((signal, 0.01))
        desc = log.description or {}
        every = desc.get("every") or DEFAULT_EVERY
        return Plan(mapping=mapping, preset=preset, every=every,
                    num_classes=self.num_classes or desc.get("num_classes"), scales=tuple(scales),
                    reasons=tuple(reasons))

    def _start(self, plan: Plan) -> None:
        if self.monitor is not None and self.log.roles and self.done >= 0:
            self._lost_states = True  # recorded states already ingested are gone; replay the curves again
        self.plan = plan
        self.monitor = Monitor(console=False, thresholds=presets.thresholds_for(plan.preset, self.overrides),
                               num_classes=plan.num_classes, every=plan.every,
                               disable=list(presets.SKIPPED[plan.preset]))
        self.done, self.steps, self.stopped_at = -1, 0, None

    # -- replaying -----------------------------------------------------------
    def advance(self, final: bool = False) -> list[Finding]:
        """Ingest the steps that are complete (all of them when ``final``); returns the new findings."""
        log = self.log
        changed = log.take_changes()
        plan = self._make_plan(final)
        late = changed is not None and changed <= self.done and not log.roles
        if plan != self.plan or late:
            self._start(plan)
        if self.stopped_at is not None:
            log.states.clear()  # nothing after a critical finding is judged: do not keep it
            return []
        curves = {s: log.scalars.get(t, {}) for s, t in plan.mapping.signals.items() if s in tags.SIGNALS}
        if not curves and not log.states:
            return []
        pending = {s for c in curves.values() for s in c if s > self.done}
        pending.update(s for s in log.states if s > self.done)
        if not final:  # the newest step may still be getting its other curves: wait for a later one
            newest = max([max(c) for c in curves.values() if c] + [max(log.states, default=-1)])
            pending = {s for s in pending if s < newest}
        order = sorted(pending)
        scales = dict(plan.scales)
        new: list[Finding] = []
        for i, step in enumerate(order):
            values = {s: c[step][1] * scales.get(s, 1.0) for s, c in curves.items() if step in c}
            recorded = log.states.pop(step, {})
            summaries = {key: summary for key, (summary, _) in recorded.items()}
            meta: dict = {}
            for (_, where), (_, facts) in recorded.items():
                if facts:
                    meta.setdefault(where, {}).update(facts)
            sampled = self._sampled(step, values, summaries, plan, last=final and i == len(order) - 1)
            new.extend(self.monitor.ingest(step, values, summaries, sampled=sampled, meta=meta))
            self.done = step
            self.steps += 1
            if self.monitor.should_stop:
                self.stopped_at = step
                break
        for step in [s for s in log.states if s <= self.done]:  # arrived after their step was judged
            del log.states[step]
        return new

    def _sampled(self, step, values, summaries, plan: Plan, last: bool) -> bool:
        """Mirror a live monitor: sample-cadence rules judge every ``every`` steps."""
        if self.log.description is not None:
            return step % plan.every == 0
        if summaries:
            return any(role not in ("update", "update_base") for role, _ in summaries)
        if plan.preset == "epoch" or last:
            return True
        return self.steps % plan.every == 0 or "val_loss" in values or "val_acc" in values

    # -- results -------------------------------------------------------------
    @property
    def findings(self) -> list[Finding]:
        return list(self.monitor.findings) if self.monitor is not None else []

    def available(self) -> set[str]:
        """What this replay could judge: the inputs rules declare in ``needs``."""
        signals = self.plan.mapping.signals if self.plan else {}
        out = set(self.log.roles & {"activation", "gradient", "parameter", "update", "input"})
        if "loss" in signals:
            out.add("loss")
        if any(s in signals for s in ("val_loss", "train_acc", "val_acc")):
            out.add("metrics")
        return out

    def recorded_shown(self) -> list[Finding]:
        """findings.jsonl's findings the replay cannot judge again (their inputs were not recorded)."""
        available = self.available()
        return [f for f in self.log.recorded
                if f.symptom not in RULES or not RULES[f.symptom].needs <= available]

    def epoch_of(self, step: int):
        """The epoch a step belonged to, from an ``epoch`` tag (Lightning, Hugging Face), or None."""
        if self.plan is None or self.plan.mapping.epoch_axis:
            return None
        tag = self.plan.mapping.signals.get("epoch")
        series = self.log.scalars.get(tag, {}) if tag else {}
        before = [s for s in series if s <= step]
        if not before:
            return None
        value = series[max(before)][1]
        return int(value) if float(value).is_integer() else round(value, 2)

    def notes(self) -> list[str]:
        plan, out = self.plan, []
        if plan is None:
            return out
        if plan.preset == "epoch":
            why = "; ".join(plan.reasons) or "--preset epoch"
            out.append(f"per-epoch thresholds ({why}); --preset step overrides")
            out.extend(f"{rid} not judged: {why}" for rid, why in presets.SKIPPED["epoch"].items())
        for signal, factor in plan.scales:
            out.append(f"{plan.mapping.signals[signal]} looks like a percentage: divided by {round(1 / factor)}")
        out.extend(plan.mapping.notes)
        if self.stopped_at is not None:
            unit = "epoch" if plan.mapping.epoch_axis else "step"
            out.append(f"judging stopped at {unit} {self.stopped_at} after a critical finding (a live monitor "
                       f"would have stopped the run there); later {unit}s are consequences")
        if self._lost_states:
            out.append("the replay restarted after its layer states were consumed: layer rules judged part of "
                       "the run only")
        out.extend(dict.fromkeys(self.log.notes))
        return out

    def problems(self) -> list[str]:
        out = self.log.problems()
        if self.plan is not None:
            out.extend(self.plan.mapping.missing)
            has_signal = any(s in self.plan.mapping.signals for s in tags.SIGNALS)
            if not has_signal and not self.log.roles and not self.log.recorded and self.log.events:
                present = sorted(self.log.scalars) + sorted(self.log.other_tags)
                shown = ", ".join(present[:12]) + (f" and {len(present) - 12} more" if len(present) > 12 else "")
                out.append(f"{self.log.spec.path}: no known tags: none of its tags is a loss or accuracy curve "
                           f"nnhealth knows (found: {shown}); map one with --tag loss=TAG")
        return out


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)
