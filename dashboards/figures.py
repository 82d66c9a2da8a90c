"""The report's figures, one function per panel, each saying what it needs and what was missing.

Figures are drawn with matplotlib's object API (``Figure`` + the Agg canvas):
no pyplot, no global figure state, safe in a process that plots elsewhere.
Names go through :func:`label`, so a layer called ``a$b$`` is printed as it is named, not as math.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from itertools import groupby

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .rebin import moments, quantiles, rebin
from .run_data import TRAIN_LOSS_TAGS, VAL_LOSS_TAGS, RunData

SEVERITY_COLORS = {"info": "#4c78a8", "warning": "#f58518", "critical": "#d62728"}
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
#: the update/parameter norm ratio the lecture calls healthy: about 1e-3, within a decade either way
HEALTHY_RATIO = (1e-4, 1e-2)
TARGET_RATIO = 1e-3
TRAIN_ACC_TAGS = ("accuracy/train", "train/accuracy", "train_acc", "acc", "accuracy", "train/acc",
                  "epoch_accuracy")
VAL_ACC_TAGS = ("accuracy/val", "val/accuracy", "val_acc", "validation_accuracy", "eval/accuracy",
                "val/acc", "eval_accuracy")


@dataclass
class Panel:
    """One section of the report: a figure (None when the run lacks its data) and notes about it."""

    key: str          # file stem with --format png
    title: str
    caption: str      # what the figure shows and how to read it
    figure: Figure | None = None
    notes: list[str] = field(default_factory=list)


def label(name) -> str:
    """A name as matplotlib text: ``$`` escaped, so it is never read as math, and a leading ``_``
    guarded, which would hide the line from the legend."""
    text = str(name).replace("$", r"\$")
    return "\u200b" + text if text.startswith("_") else text


def plain_text(fn):
    """Draw with the report's font size, whatever the caller's matplotlib style."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context({"font.size": 9}):
            return fn(*args, **kwargs)
    return wrapper


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _colors(n: int):
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "viridis"]
    return [cmap(i if n <= 10 else i / max(n - 1, 1)) for i in range(n)]


def _legend(ax, n: int, **kwargs) -> None:
    if n <= 12:
        ax.legend(fontsize=7, **kwargs)
    else:
        ax.text(0.01, 0.01, f"{n} lines; colour by depth (dark = first)", transform=ax.transAxes, fontsize=7)


# -- activation histograms -----------------------------------------------------------------
def choose_steps(available: list[int], wanted: list[int] | None, notes: list[str], k: int = 4) -> list[int]:
    """The wanted steps (each moved to the nearest available one), or ``k`` spread over the run."""
    if not available:
        return []
    if not wanted:
        idx = np.unique(np.linspace(0, len(available) - 1, min(k, len(available))).round().astype(int))
        return [available[i] for i in idx]
    out = []
    arr = np.asarray(available)
    for w in wanted:
        near = int(arr[np.argmin(np.abs(arr - w))])
        if near != w:
            notes.append(f"step {w} has no histograms; showing the nearest, step {near}")
        if near not in out:
            out.append(near)
    return out


def _spread(layers: list[str], k: int) -> list[str]:
    if len(layers) <= k:
        return layers
    idx = np.unique(np.linspace(0, len(layers) - 1, k).round().astype(int))
    return [layers[i] for i in idx]


def _value_range(histograms: list[np.ndarray]) -> tuple[float, float]:
    """The x range of the grid: 0.05% cut from each end against lone outliers, unless that cuts
    away most of the range (a spike holding nearly every value, as in a dead layer)."""
    if not histograms:
        return -1.0, 1.0
    ends = np.array([quantiles(b, [0.0005, 0.9995]) for b in histograms])
    lo, hi = float(np.nanmin(ends[:, 0])), float(np.nanmax(ends[:, 1]))
    full_lo = float(min(b[:, :2].min() for b in histograms))
    full_hi = float(max(b[:, :2].max() for b in histograms))
    if not hi - lo >= 0.05 * (full_hi - full_lo):
        return full_lo, full_hi
    return lo, hi


@plain_text
def activation_histograms(run: RunData, steps: list[int] | None = None, max_layers: int = 12,
                          bins: int = 41) -> Panel:
    panel = Panel("activations", "Activation distributions, layer by layer",
                  "Each row is a layer (first at the top), each column a step. Healthy layers keep a spread "
                  "of values all the way down; a spike at 0 is a layer whose units are dead (ReLU) or whose "
                  "activations vanished, mass piled at the ends of the range is saturation (tanh, sigmoid). "
                  "All panels share one x range, so shrinking or growing spread with depth shows.")
    group = run.histogram_group("activation_hist")
    if not group:
        if not run.histograms:
            panel.notes.append("This run has no histograms: nnhealth writes activation_hist/<layer> on "
                               "sampled steps when layer activations are observed.")
            return panel
        group = dict(run.histograms)
        panel.notes.append("This run has no activation_hist/<layer> tags; showing its other histograms.")
    layers = [name for name, h in group.items() if h]
    shown = _spread(layers, max_layers)
    if len(shown) < len(layers):
        panel.notes.append(f"Showing {len(shown)} of {len(layers)} layers, spread over the depth.")
    available = sorted({step for name in shown for step, _ in group[name]})
    chosen = choose_steps(available, steps, panel.notes)
    by_layer = {name: dict(group[name]) for name in shown}
    picked = [b for name in shown for s in chosen if (b := by_layer[name].get(s)) is not None and b.size]
    lo, hi = _value_range(picked)
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi - lo <= 0:
        centre = lo if math.isfinite(lo) else 0.0
        pad = abs(centre) * 0.1 or 1.0
        lo, hi = centre - pad, centre + pad
    edges = np.linspace(lo, hi, bins + 1)

    fig = _figure(1.2 + 2.3 * len(chosen), 0.6 + 1.25 * len(shown))
    axes = fig.subplots(len(shown), len(chosen), sharex=True, squeeze=False)
    for r, name in enumerate(shown):
        kind = run.meta.get(name, {}).get("kind")
        for c, step in enumerate(chosen):
            ax = axes[r][c]
            ax.tick_params(labelsize=7)
            b = by_layer[name].get(step)
            if b is None or not b.size or b[:, 2].sum() <= 0:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
            else:
                frac = rebin(b, edges) / b[:, 2].sum()
                ax.stairs(frac, edges, fill=True, color="#4c78a8")
                mean, std = moments(b)
                ax.text(0.98, 0.95, f"mean {mean:.2g}\nstd {std:.2g}", transform=ax.transAxes, ha="right",
                        va="top", fontsize=7)
            if r == 0:
                ax.set_title(f"step {step}", fontsize=9)
            if c == 0:
                ax.set_ylabel(label(name if not kind else f"{name}\n({kind})"), fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("activation value", fontsize=8)
    fig.supylabel("fraction of values per bin", fontsize=8)
    panel.figure = fig
    return panel


# -- loss and accuracy -------------------------------------------------------------------
def _mark_findings(ax, run: RunData, numbered: bool) -> None:
    numbered = list(enumerate(run.findings, 1))
    for step, items in groupby(sorted(numbered, key=lambda x: x[1].step), key=lambda x: x[1].step):
        items = list(items)
        worst = max((f.severity for _, f in items), key=SEVERITY_RANK.get)
        ax.axvline(step, color=SEVERITY_COLORS[worst], lw=1, ls="--", alpha=0.8)
        if numbered:
            numbers = number_ranges([i for i, _ in items])
            ax.annotate(numbers, xy=(step, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -2),
                        textcoords="offset points", fontsize=7, color=SEVERITY_COLORS[worst], va="top")


def number_ranges(numbers: list[int]) -> str:
    """``[1, 3, 4, 5, 7]`` -> ``"1,3-5,7"``: short labels where many findings share a step."""
    parts, start = [], None
    for i, n in enumerate(numbers):
        if start is None:
            start = n
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            parts.append(str(start) if start == n else f"{start}-{n}")
            start = None
    return ",".join(parts)


def _severity_handles(run: RunData) -> list:
    present = {f.severity for f in run.findings}
    return [Line2D([], [], color=SEVERITY_COLORS[s], ls="--", label=f"finding ({s})")
            for s in ("critical", "warning", "info") if s in present]


def _plot_pair(ax, run: RunData, train_tag: str | None, val_tag: str | None) -> None:
    if train_tag:
        steps, values = run.scalars[train_tag]
        ax.plot(steps, values, lw=1.2, color="#4c78a8", label=label(f"train ({train_tag})"))
    if val_tag:
        steps, values = run.scalars[val_tag]
        ax.plot(steps, values, lw=1.2, color="#e45756", marker="o", ms=2.5, label=label(f"validation ({val_tag})"))


@plain_text
def loss_curves(run: RunData) -> Panel:
    panel = Panel("loss", "Loss and accuracy, with the findings",
                  "Training and validation loss (left) and accuracy (right). Each dashed line is the step "
                  "where a finding appeared; its number is the finding's row in the table below.")
    train, val = run.train_loss_tag, run.val_loss_tag
    train_acc, val_acc = run.first_tag(TRAIN_ACC_TAGS), run.first_tag(VAL_ACC_TAGS)
    if not (train or val):
        panel.notes.append("This run has no loss scalars (looked for: " + ", ".join(TRAIN_LOSS_TAGS + VAL_LOSS_TAGS)
                           + ").")
        return panel
    if not val:
        panel.notes.append("No validation loss in this run: the train-validation gap cannot be judged.")
    has_acc = bool(train_acc or val_acc)
    fig = _figure(11 if has_acc else 7.5, 3.6)
    axes = fig.subplots(1, 2 if has_acc else 1, squeeze=False)[0]
    ax = axes[0]
    _plot_pair(ax, run, train, val)
    finite = np.concatenate([run.scalars[t][1] for t in (train, val) if t])
    finite = finite[np.isfinite(finite)]
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 30:
        ax.set_yscale("log")
    if finite.size < sum(run.scalars[t][1].size for t in (train, val) if t):
        panel.notes.append("Some loss values are NaN or infinite; the curve stops where they begin.")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("loss", fontsize=9)
    _mark_findings(ax, run, numbered=True)
    ax.legend(handles=ax.get_legend_handles_labels()[0] + _severity_handles(run), fontsize=7)
    if has_acc:
        ax = axes[1]
        _plot_pair(ax, run, train_acc, val_acc)
        ax.set_xlabel("step")
        ax.set_ylabel("accuracy")
        ax.set_title("accuracy", fontsize=9)
        _mark_findings(ax, run, numbered=False)
        ax.legend(fontsize=7)
    panel.figure = fig
    return panel


# -- update ratios -----------------------------------------------------------------------
@plain_text
def update_ratios(run: RunData) -> Panel:
    panel = Panel("update_ratio", "Update ratio over time",
                  "||ΔW|| / ||W|| of each parameter for the step actually applied. The shaded band is "
                  f"{HEALTHY_RATIO[0]:g} to {HEALTHY_RATIO[1]:g}, around the {TARGET_RATIO:g} the lecture "
                  "calls healthy: far above it the learning rate is too high, far below too low.")
    group = {name: s for name, s in run.group("update_ratio").items() if s[0].size}
    if not group:
        panel.notes.append("This run has no update_ratio/<parameter> scalars: nnhealth writes them when it "
                           "sees parameter updates (observe_update, or observe_parameter on consecutive steps).")
        return panel
    fig = _figure(9, 3.8)
    ax = fig.subplots()
    ax.axhspan(*HEALTHY_RATIO, color="#54a24b", alpha=0.15, label=f"healthy band {HEALTHY_RATIO[0]:g}-{HEALTHY_RATIO[1]:g}")
    ax.axhline(TARGET_RATIO, color="#54a24b", lw=1, ls=":")
    still, zeros, nonfinite = [], 0, 0
    for color, (name, (steps, values)) in zip(_colors(len(group)), group.items()):
        ok = np.isfinite(values) & (values > 0)
        nonfinite += int((~np.isfinite(values)).sum())
        if np.all(values == 0):
            still.append(name)
        else:
            zeros += int((values == 0).sum())
        ax.plot(steps[ok], values[ok], lw=1, color=color, label=label(name))
    if still:
        panel.notes.append(f"Never moved (update ratio 0 at every step, not drawn): {', '.join(still)}.")
    if zeros:
        panel.notes.append(f"{zeros} {'other ' if still else ''}update ratios of exactly 0 (no change that step) are not drawn on the log scale.")
    if nonfinite:
        panel.notes.append(f"{nonfinite} update ratios are NaN or infinite and are not drawn.")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("update / parameter norm")
    _legend(ax, len(group) + 1, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    panel.figure = fig
    return panel


# -- dead and saturated units --------------------------------------------------------------
@plain_text
def dead_and_saturated(run: RunData) -> Panel:
    panel = Panel("dead_saturated", "Dead and saturated units per layer",
                  "Left: the fraction of a layer's units that never fired (ReLU-like layers) on the sampled "
                  "steps. Right: the fraction of activation values where the activation's slope is below 5% "
                  "of its maximum (pinned tanh or sigmoid units). Both should stay near 0.")
    parts = [("activation_dead_fraction", "dead units (fraction of units)"),
             ("activation_saturated_fraction", "saturated values (fraction)")]
    groups = [(title, {n: s for n, s in run.group(tag).items() if s[0].size}) for tag, title in parts]
    for (tag, _), (_, g) in zip(parts, groups):
        if not g:
            panel.notes.append(f"This run has no {tag}/<layer> scalars.")
    drawn = [(title, g) for title, g in groups if g]
    if not drawn:
        return panel
    fig = _figure(5.2 * len(drawn) + 1.2, 3.4)
    axes = fig.subplots(1, len(drawn), squeeze=False)[0]
    for ax, (title, g) in zip(axes, drawn):
        for color, (name, (steps, values)) in zip(_colors(len(g)), g.items()):
            ax.plot(steps, values, lw=1.2, color=color, label=label(name))
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("step")
        ax.set_title(title, fontsize=9)
        _legend(ax, len(g))
    panel.figure = fig
    return panel


def all_panels(run: RunData, steps: list[int] | None = None) -> list[Panel]:
    """The report's panels, in the order it shows them."""
    return [loss_curves(run), activation_histograms(run, steps), update_ratios(run), dead_and_saturated(run)]
