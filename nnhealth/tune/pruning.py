"""End an Optuna trial as soon as its Monitor finds it sick, and record why on the trial."""
from __future__ import annotations

import optuna

from ..finding import Finding
from ..rules import SYMPTOMS

#: user attributes written on the trial (``trial.user_attrs``)
PRUNED_BY = "nnhealth.pruned_by"     # symptom id, or "optuna:<pruner class>" when the study's pruner decided
REASON = "nnhealth.reason"           # the finding's console line, or the pruner's verdict in words
PRUNED_AT = "nnhealth.pruned_at"     # step of the finding (or of the report) that ended the trial
STEPS = "nnhealth.steps"             # training steps the trial ran
FINDINGS = "nnhealth.findings"       # symptom ids of the warnings and criticals the trial raised


def _as_float(value) -> float:
    """A number, a numpy scalar or a one-element tensor (detached first, so no autograd warning)."""
    detach = getattr(value, "detach", None)
    return float(detach() if callable(detach) else value)


class HealthPruningCallback:
    """Reports a training run to its Optuna trial and prunes it when nnhealth finds it sick.

    Call it once per training step, after ``mon.step(...)``. It raises
    :class:`optuna.TrialPruned` as soon as the monitor has raised a critical
    finding (``loss-nan``, ``loss-exploding``: the lecture's "stop any trial
    whose cost exceeds 3x its start") or one of the warnings in ``stop_on``.
    It also reports ``value`` as the trial's intermediate value every
    ``report_every`` steps, and, with ``use_study_pruner``, lets the study's
    own pruner (median, successive halving, ...) decide as usual. Why a trial
    ended is written on it: :data:`PRUNED_BY`, :data:`REASON`,
    :data:`PRUNED_AT`, :data:`STEPS`, :data:`FINDINGS`. Used as a context
    manager, it also writes the steps and findings of trials that complete.

    >>> import optuna
    >>> from nnhealth import Monitor
    >>> def objective(trial):
    ...     lr = trial.suggest_float("lr", 1e-3, 1e3, log=True)
    ...     loss = 2.3
    ...     with Monitor(console=False) as mon, HealthPruningCallback(trial, mon) as guard:
    ...         for step in range(20):
    ...             loss = loss * (0.9 if lr < 1 else 2.0)   # a run that diverges when lr >= 1
    ...             mon.step(step, loss=loss)
    ...             guard(step, loss)
    ...     return loss
    >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
    >>> study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    >>> study.optimize(objective, n_trials=4)
    >>> sorted((t.user_attrs[STEPS], t.user_attrs.get(PRUNED_BY, "")) for t in study.trials)
    [(4, 'loss-exploding'), (20, ''), (20, ''), (20, '')]
    """

    def __init__(self, trial: optuna.Trial, monitor, *, stop_on: tuple[str, ...] | list[str] = (),
                 report_every: int = 1, use_study_pruner: bool = True):
        unknown = [s for s in stop_on if s not in SYMPTOMS]
        if unknown:
            raise ValueError(f"stop_on: unknown symptom ids {unknown}; known: {', '.join(SYMPTOMS)}")
        if isinstance(report_every, bool) or not isinstance(report_every, int) or report_every < 1:
            raise ValueError(f"report_every must be a whole number of steps >= 1, got {report_every!r}")
        self.trial = trial
        self.monitor = monitor
        self.stop_on = frozenset(stop_on)
        self.report_every = report_every
        self.use_study_pruner = use_study_pruner
        self.steps = 0
        self._seen = 0
        self._symptoms: list[str] = []
        self._reported: set[int] = set()

    def __call__(self, step: int, value: float | None = None) -> None:
        """Judge the trial after training step ``step``; raises :class:`optuna.TrialPruned` to end it.

        ``value`` (a number or a one-element tensor, e.g. the loss) is read only on the steps it is
        reported, so a device tensor is not copied to the host on the others."""
        self.steps = max(self.steps, int(step) + 1)
        fatal = self._new_fatal_finding()
        reported = False
        if value is not None and (fatal is not None or step % self.report_every == 0):
            reported = self._report(_as_float(value), int(step))
        if fatal is not None:
            self._prune(fatal.symptom, fatal.line(), fatal.step)
        if reported and self.use_study_pruner and self.trial.should_prune():
            pruner = type(self.trial.study.pruner).__name__
            self._prune(f"optuna:{pruner}", f"the study's {pruner} judged the trial unpromising at step {step}",
                        int(step))

    def _new_fatal_finding(self) -> Finding | None:
        findings = self.monitor.findings
        new, self._seen = findings[self._seen:], len(findings)
        fatal = None
        for f in new:
            if f.severity != "info" and f.symptom not in self._symptoms:
                self._symptoms.append(f.symptom)
            if fatal is None and (f.severity == "critical" or f.symptom in self.stop_on):
                fatal = f
        return fatal

    def _report(self, value: float, step: int) -> bool:
        if step in self._reported:
            return False   # Optuna keeps the first value of a step and warns about the second
        self._reported.add(step)
        self.trial.report(value, step)
        return True

    def _prune(self, by: str, reason: str, at: int):
        self.trial.set_user_attr(PRUNED_BY, by)
        self.trial.set_user_attr(REASON, reason)
        self.trial.set_user_attr(PRUNED_AT, int(at))
        self._record()
        raise optuna.TrialPruned(reason)

    def _record(self) -> None:
        self.trial.set_user_attr(STEPS, int(self.steps))
        self.trial.set_user_attr(FINDINGS, list(self._symptoms))

    def close(self) -> None:
        """Write the steps run and the symptoms seen on the trial (done by pruning already)."""
        self._new_fatal_finding()   # findings of the last step, possibly after the last call
        self._record()

    def __enter__(self) -> "HealthPruningCallback":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
