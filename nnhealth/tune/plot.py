"""The objective against each parameter, on log axes for log-scale parameters (matplotlib).

Complete trials are dots and the best one a star; pruned trials, which have
no final value, are crosses along the top, coloured by what ended them. The
outer tenth of each searched range is shaded: a best value there is the
signal to move the range (see :func:`nnhealth.tune.review`).
"""
from __future__ import annotations

import math
import os

import optuna
from matplotlib import ticker
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState

from .pruning import PRUNED_BY

_PRUNED_COLOURS = ("tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive")


def _numeric_params(trials) -> dict[str, tuple[float, float, bool]]:
    """{name: (lowest low, highest high, log)} over every trial's distribution of that parameter."""
    out: dict[str, tuple[float, float, bool]] = {}
    for t in trials:
        for name, d in t.distributions.items():
            if isinstance(d, (FloatDistribution, IntDistribution)):
                lo, hi, log = out.get(name, (d.low, d.high, d.log))
                out[name] = (min(lo, d.low), max(hi, d.high), log and d.log)
    return dict(sorted(out.items()))


def _shade_edges(ax, low: float, high: float, log: bool, edge_fraction: float) -> None:
    if log:
        a, b = math.log10(low), math.log10(high)
        inner = (10 ** (a + edge_fraction * (b - a)), 10 ** (b - edge_fraction * (b - a)))
    else:
        inner = (low + edge_fraction * (high - low), high - edge_fraction * (high - low))
    for i, (lo, hi) in enumerate(((low, inner[0]), (inner[1], high))):
        ax.axvspan(lo, hi, color="0.85", alpha=0.5, lw=0,
                   label=f"outer {edge_fraction:.0%} of the range" if i == 0 else None)
    for x in (low, high):
        ax.axvline(x, color="0.5", lw=0.8, ls="--")


def plot_search(study: optuna.Study, params: list[str] | None = None, path: str | os.PathLike | None = None, *,
                value_name: str = "objective", edge_fraction: float = 0.1) -> Figure:
    """One panel per numeric parameter; saved to ``path`` (any format matplotlib writes) when given."""
    if len(study.directions) > 1:
        raise ValueError("plot_search draws single-objective studies")
    trials = study.get_trials(deepcopy=False)
    ranges = _numeric_params(trials)
    if params is not None:
        missing = [p for p in params if p not in ranges]
        if missing:
            raise ValueError(f"no numeric parameter named {missing} in the study")
        ranges = {p: ranges[p] for p in params}
    if not ranges:
        raise ValueError("the study has no numeric parameter to plot")
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    best = study.best_trial if complete else None
    values = [t.value for t in complete]
    log_y = bool(values) and min(values) > 0 and max(values) / min(values) > 10
    reasons = sorted({str(t.user_attrs.get(PRUNED_BY, "pruned")) for t in pruned})
    colour = {r: _PRUNED_COLOURS[i % len(_PRUNED_COLOURS)] for i, r in enumerate(reasons)}

    ncols = min(3, len(ranges))
    nrows = math.ceil(len(ranges) / ncols)
    fig = Figure(figsize=(4.6 * ncols, 3.6 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (name, (low, high, log)) in zip(axes, ranges.items()):
        if log:
            ax.set_xscale("log")
        if log_y:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
        _shade_edges(ax, low, high, log, edge_fraction)
        have = [t for t in complete if name in t.params]
        ax.scatter([t.params[name] for t in have], [t.value for t in have], s=22, color="tab:blue",
                   label="complete", zorder=3)
        if best is not None and name in best.params:
            ax.scatter([best.params[name]], [best.value], s=140, marker="*", color="tab:orange",
                       edgecolor="black", lw=0.6, label=f"best (trial {best.number})", zorder=4)
        top = blended_transform_factory(ax.transData, ax.transAxes)
        for reason in reasons:
            xs = [t.params[name] for t in pruned if name in t.params
                  and str(t.user_attrs.get(PRUNED_BY, "pruned")) == reason]
            if xs:
                ax.scatter(xs, [0.95] * len(xs), transform=top, marker="x", s=30, color=colour[reason],
                           label=f"pruned: {reason}", zorder=3)
        ax.set_xlabel(name + (" (log scale)" if log else ""))
        ax.set_ylabel(value_name)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    for ax in axes[len(ranges):]:
        ax.set_visible(False)
    direction = "higher" if study.direction == optuna.study.StudyDirection.MAXIMIZE else "lower"
    fig.suptitle(f"{study.study_name}: {value_name} ({direction} is better)", fontsize=10)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
