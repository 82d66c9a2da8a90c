"""Is the best value of each parameter safely inside its searched range, and what to search next.

The lecture's rule for hyperparameter search: choose ranges so that the best
value falls in the middle; a best value at an edge means the optimum may lie
beyond it. For a log-scale parameter (a learning rate, a weight decay) the
edge is the outer tenth of the log range. A best value at an edge gets a
range of the same width centred on it; a best value inside gets the next,
finer range: the span of the best trials around it.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import optuna
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from .pruning import PRUNED_BY


def _g(x: float) -> str:
    return f"{x:.3g}"


@dataclass(frozen=True)
class ParamReview:
    """Where the best value of one numeric parameter lies in its range, and the range to search next."""

    name: str
    low: float
    high: float
    log: bool
    best: float
    position: float          # 0 at ``low``, 1 at ``high``; measured in log space for a log-scale parameter
    edge: str | None         # "low" or "high" when the best value lies in the outer ``edge_fraction`` at that end
    next_low: float
    next_high: float
    advice: str

    @property
    def at_edge(self) -> bool:
        return self.edge is not None

    def line(self) -> str:
        space = "log range" if self.log else "range"
        where = (f"AT THE {self.edge.upper()} EDGE" if self.edge else "inside the range")
        return (f"{self.name}: best {_g(self.best)} in [{_g(self.low)}, {_g(self.high)}] at {self.position:.2f} of "
                f"the {space}, {where} -> next [{_g(self.next_low)}, {_g(self.next_high)}]: {self.advice}")


@dataclass(frozen=True)
class Review:
    """The verdict on a study: the best trial, each numeric parameter's place in its range, and the pruned trials."""

    direction: str
    best_value: float | None
    best_trial: int | None
    params: tuple[ParamReview, ...]
    complete: int
    pruned: int
    pruned_by: dict = field(default_factory=dict)      # {reason: count}; reasons are symptom ids or optuna:<pruner>
    pruned_ranges: dict = field(default_factory=dict)  # {reason: {param: (lowest, highest) value pruned so}}

    @property
    def at_edge(self) -> list[ParamReview]:
        return [p for p in self.params if p.at_edge]

    @property
    def next_ranges(self) -> dict[str, tuple[float, float]]:
        return {p.name: (p.next_low, p.next_high) for p in self.params}

    def __getitem__(self, name: str) -> ParamReview:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(f"no numeric parameter {name!r} reviewed; have: {', '.join(p.name for p in self.params)}")

    def __str__(self) -> str:
        total = self.complete + self.pruned
        if self.best_trial is None:
            lines = [f"no trial completed ({total} finished, {self.pruned} pruned)"]
        else:
            lines = [f"best: trial {self.best_trial}, value {_g(self.best_value)} ({self.direction}); "
                     f"{self.complete} complete, {self.pruned} pruned"]
        if self.pruned_by:
            reasons = []
            for by, n in sorted(self.pruned_by.items(), key=lambda kv: (-kv[1], kv[0])):
                spans = "; ".join(f"{name} {_g(lo)}" + (f" to {_g(hi)}" if hi != lo else "")
                                  for name, (lo, hi) in self.pruned_ranges.get(by, {}).items())
                reasons.append(f"{by} x{n}" + (f" ({spans})" if spans else ""))
            lines.append("pruned: " + ", ".join(reasons))
        lines.extend(p.line() for p in self.params)
        return "\n".join(lines)


def _to_unit(value: float, log: bool) -> float:
    return math.log(value) if log else float(value)


def _from_unit(u: float, log: bool) -> float:
    return math.exp(u) if log else u


def _review_param(name: str, dist, best: FrozenTrial, ranked: list[FrozenTrial], edge_fraction: float,
                  top_fraction: float) -> ParamReview | None:
    log = bool(dist.log)
    low, high, value = float(dist.low), float(dist.high), float(best.params[name])
    if not high > low:
        return None
    u_low, u_high, u_best = _to_unit(low, log), _to_unit(high, log), _to_unit(value, log)
    width = u_high - u_low
    position = (u_best - u_low) / width
    edge = "low" if position < edge_fraction else "high" if position > 1 - edge_fraction else None
    if edge:
        u_lo, u_hi = u_best - width / 2, u_best + width / 2
        beyond = "below" if edge == "low" else "above"
        advice = (f"the optimum may lie {beyond} {_g(low if edge == 'low' else high)}: search a range of the same "
                  "width centred on the best value")
        if not log and low >= 0 > _from_unit(u_lo, log):
            u_lo = 0.0
            advice += " (cut at 0; if 0 is a natural bound, the parameter may simply be best at it)"
    else:
        top = ranked[:max(3, math.ceil(top_fraction * len(ranked)))]
        spread = max((abs(_to_unit(float(t.params[name]), log) - u_best) for t in top if name in t.params),
                     default=0.0)
        if spread == 0:
            spread = width / 8
        u_lo, u_hi = max(u_low, u_best - spread), min(u_high, u_best + spread)
        if (u_hi - u_lo) < 0.999 * width:
            advice = f"narrow to where the best {len(top)} trials lie"
        else:
            advice = (f"the best {len(top)} trials span the whole range: the objective barely depends on it here, "
                      "or more trials are needed")
    next_low, next_high = _from_unit(u_lo, log), _from_unit(u_hi, log)
    if isinstance(dist, IntDistribution):
        next_low, next_high = math.floor(next_low), math.ceil(next_high)
        if log:
            next_low = max(1, next_low)
    if len(ranked) < 3:
        advice += f"; only {len(ranked)} complete trial(s): run more before trusting this"
    return ParamReview(name, low, high, log, value, position, edge, next_low, next_high, advice)


def review(study: optuna.Study, params: list[str] | None = None, *, edge_fraction: float = 0.1,
           top_fraction: float = 0.25) -> Review:
    """Review a single-objective study: where each numeric parameter's best value lies, what next.

    ``params`` limits the review to some parameters (default: every float or
    int parameter of the best trial). A best value within ``edge_fraction`` of
    either end of its range (in log space for log-scale parameters) is flagged;
    the next range for an inside value spans the best ``top_fraction`` of the
    complete trials (at least 3) around the best one.

    >>> import optuna
    >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
    >>> study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    >>> study.optimize(lambda t: (math.log10(t.suggest_float("lr", 1e-4, 1e-2, log=True)) + 1) ** 2, n_trials=30)
    >>> r = review(study)
    >>> r["lr"].edge, r["lr"].best > 0.006       # the optimum, 0.1, lies above the searched range
    ('high', True)
    """
    if len(study.directions) > 1:
        raise ValueError("review works on single-objective studies; this one has "
                         f"{len(study.directions)} objectives")
    if not 0 < edge_fraction < 0.5:
        raise ValueError(f"edge_fraction must be in (0, 0.5), got {edge_fraction!r}")
    direction = "maximize" if study.direction == optuna.study.StudyDirection.MAXIMIZE else "minimize"
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None
                and math.isfinite(t.value)]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    reason = {t.number: str(t.user_attrs.get(PRUNED_BY, "pruned by the objective")) for t in pruned}
    pruned_by = Counter(reason.values())
    ranked = sorted(complete, key=lambda t: t.value, reverse=direction == "maximize")
    best = ranked[0] if ranked else None
    numeric = {}
    for t in ([best] if best else []) + pruned:
        for name, dist in t.distributions.items():
            if isinstance(dist, (FloatDistribution, IntDistribution)) and (params is None or name in params):
                numeric.setdefault(name, dist)
    if params is not None:
        missing = [p for p in params if p not in numeric]
        if missing:
            raise ValueError(f"no numeric parameter named {missing} in the study")
    pruned_ranges: dict[str, dict[str, tuple[float, float]]] = {}
    for by in pruned_by:
        for name in numeric:
            values = [float(t.params[name]) for t in pruned if reason[t.number] == by and name in t.params]
            if values:
                pruned_ranges.setdefault(by, {})[name] = (min(values), max(values))
    reviews = []
    if best is not None:
        for name, dist in best.distributions.items():
            if name in numeric:
                r = _review_param(name, dist, best, ranked, edge_fraction, top_fraction)
                if r is not None:
                    reviews.append(r)
    return Review(direction, best.value if best else None, best.number if best else None, tuple(reviews),
                  len(complete), len(pruned), dict(pruned_by), pruned_ranges)
