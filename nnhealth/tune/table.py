"""The trials of a study as a plain-text table: parameters, steps run, value, and how each trial ended."""
from __future__ import annotations

import math

import optuna
from optuna.trial import TrialState

from .pruning import FINDINGS, PRUNED_AT, PRUNED_BY, STEPS


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if math.isfinite(value) else str(value)
    return str(value)


def outcome(trial: optuna.trial.FrozenTrial) -> str:
    """How a trial ended, in words: complete (with the warnings it raised), pruned (by what, when), failed."""
    if trial.state == TrialState.PRUNED:
        by = trial.user_attrs.get(PRUNED_BY)
        if by is None:
            return "pruned"
        at = trial.user_attrs.get(PRUNED_AT)
        return f"pruned at step {at}: {by}" if at is not None else f"pruned: {by}"
    if trial.state == TrialState.COMPLETE:
        warned = trial.user_attrs.get(FINDINGS) or []
        return "complete" + (f" (warned: {', '.join(warned)})" if warned else "")
    return trial.state.name.lower()


def trials_table(study: optuna.Study, attrs: tuple[str, ...] | list[str] = (), *, value_name: str = "value") -> str:
    """One row per trial, in trial order; the best complete trial is marked ``*``.

    ``attrs`` adds columns from the trials' user attributes (e.g. a validation
    accuracy the objective recorded with ``trial.set_user_attr``).
    """
    trials = study.get_trials(deepcopy=False)
    names = sorted({name for t in trials for name in t.params})
    single = len(study.directions) == 1
    best = None
    if single and any(t.state == TrialState.COMPLETE for t in trials):
        best = study.best_trial.number
    header = ["trial", *names, "steps", value_name, *attrs, "outcome"]
    rows = []
    for t in trials:
        steps = t.user_attrs.get(STEPS)
        if steps is None and t.intermediate_values:
            steps = max(t.intermediate_values) + 1
        rows.append([f"{t.number}{'*' if t.number == best else ''}",
                     *(_cell(t.params.get(n)) for n in names), _cell(steps),
                     _cell(None if t.state != TrialState.COMPLETE else t.value if single else t.values),
                     *(_cell(t.user_attrs.get(a)) for a in attrs), outcome(t)])
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    last = len(header) - 1

    def fmt(row):
        return "  ".join(c.ljust(w) if i == last else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    return "\n".join(fmt(r).rstrip() for r in [header] + rows)
