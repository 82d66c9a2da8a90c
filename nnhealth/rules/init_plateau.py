"""init-plateau: a long flat start, then a sudden drop."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .base import Detection, median, rule


@dataclass(frozen=True)
class Thresholds:
    #: consecutive values the loss must stay flat from the start to count as a plateau
    min_plateau_points: int = 20
    #: "flat" means within this fraction of the starting loss
    flat_tolerance: float = 0.05
    #: the drop that ends the plateau: the loss falls below (1 - drop_fraction) x start
    drop_fraction: float = 0.3
    #: "sudden": the drop takes at most this fraction of the plateau's length
    max_drop_fraction_of_plateau: float = 0.5
    #: values are smoothed with a running median of this many points first
    smooth: int = 5


def _running_median(values: np.ndarray, k: int) -> np.ndarray:
    """np.median over each window of ``k`` finite values (the same values; a sort costs less than
    np.median's general machinery on short windows)."""
    if len(values) < k:
        return values.copy()
    n = len(values) - k + 1
    windows = values[np.arange(n)[:, None] + np.arange(k)]
    windows.sort(axis=1)
    mid = k // 2
    return windows[:, mid] if k % 2 else (windows[:, mid - 1] + windows[:, mid]) / 2


def _first_below(values: np.ndarray, k: int, limit: float, start: int = 0):
    """(index, value) of the first point from ``start`` on where the running median of ``values`` (over
    ``k`` points) is below ``limit``, or None. Computed a stretch at a time: the answer is usually
    early, and the running median of a whole run is the costliest part of this rule."""
    n = len(values) - k + 1 if len(values) >= k else len(values)
    stretch = 64
    while start < n:
        end = min(n, start + stretch)
        smooth = _running_median(values[start:end + k - 1], k) if len(values) >= k else values[start:end]
        hit = np.flatnonzero(smooth < limit)
        if hit.size:
            return start + int(hit[0]), float(smooth[hit[0]])
        start, stretch = end, 4 * stretch
    return None


def _any_below(values: list[float], k: int, limit: float) -> bool:
    """Whether the running median of the few ``values`` (over ``k``) falls below ``limit`` anywhere:
    :func:`_first_below`'s arithmetic, in Python (a step brings a few points; arrays would cost more)."""
    mid = k // 2
    for i in range(len(values) - k + 1):
        w = sorted(values[i:i + k])
        if (w[mid] if k % 2 else (w[mid - 1] + w[mid]) / 2) < limit:
            return True
    return False


def _still_flat(history, th: Thresholds, series) -> bool:
    """Whether the loss is still on the plateau that the last search (of these thresholds) found no end of,
    judged on the points since alone: while nothing of the series was hidden since, the kept points only
    grew at their end, so the windows searched then are the same and the new ones take in the new points.
    Searching a long plateau from its start on every step would cost ever more."""
    flat = history.carry.get("init-plateau: flat")
    if flat is None or flat[0] is not th or flat[1] != series.hidden:
        return False
    _, hidden, total, limit, tail = flat
    values = tail + [v for v in series.last_values(series.total - total) if math.isfinite(v)]
    if _any_below(values, th.smooth, limit):
        return False
    history.carry["init-plateau: flat"] = (th, hidden, series.total, limit, values[len(values) - th.smooth + 1:])
    return True


@rule(
    "init-plateau", severity="warning", needs={"loss"}, thresholds=Thresholds,
    summary="The loss was flat for a long stretch, then dropped suddenly: a bad initialisation.",
    advice="Initialise for the activation you use (He for ReLU, Xavier for tanh), or add batch "
           "normalisation; the flat stretch is time lost while gradients could barely flow.",
    detects="A loss that stays flat from the start for a long stretch and then falls quickly.",
    why="The lecture's babysitting notes: a loss that does nothing for a while and then suddenly starts "
        "to drop points to a bad initialisation: gradients barely flowed until the weights drifted into "
        "a useful range by chance. A better initialisation gets that time back and makes the run reliable.",
    how="Losses smoothed by a running median of `smooth`; start = median of the first `smooth`. The plateau "
        "lasts while the loss stays above (1 - `flat_tolerance`) x start and must last at least "
        "`min_plateau_points` values; it fires when the loss then falls below (1 - `drop_fraction`) x start "
        "within `max_drop_fraction_of_plateau` x the plateau's length.",
    example="nnhealth warning init-plateau at step 420: loss was flat for 300 steps, then fell 45% in 60 steps "
            "(plateau_steps=300, drop=0.45, drop_steps=60)",
)
def check(ctx, th: Thresholds):
    h = ctx.history
    s = h.series(None, "loss")
    if s is None or s.total < th.min_plateau_points + th.smooth:
        return None
    if h.carry.get("init-plateau: healthy start") is th:
        return []
    if _still_flat(h, th, s):
        return None
    steps, values = s.arrays()
    ok = np.isfinite(values)
    steps, values = steps[ok], values[ok]
    if len(values) < th.min_plateau_points + th.smooth:
        return None
    start = median(values[: th.smooth])
    if not np.isfinite(start) or start <= 0:
        return None
    limit = start * (1 - th.flat_tolerance)
    below = _first_below(values, th.smooth, limit)
    if below is None:  # still on the plateau (or the start is the whole run so far)
        h.carry["init-plateau: flat"] = (th, s.hidden, s.total, limit, values[len(values) - th.smooth + 1:].tolist())
        return None
    h.carry.pop("init-plateau: flat", None)
    leave = below[0]
    if leave < th.min_plateau_points:  # the loss started moving early: a healthy start
        if np.count_nonzero(ok[:s.head]) >= th.min_plateau_points + th.smooth:
            # all that this verdict read (the start, the search up to leave) lies in first points kept
            # for good: it stands for the rest of the run
            h.carry["init-plateau: healthy start"] = th
        return []
    if s.total > len(s) and leave >= len(s.first()[0]) - th.smooth:
        return None  # the plateau ran past the kept first points: where it ended is not known
    dropped = _first_below(values, th.smooth, start * (1 - th.drop_fraction), leave)
    if dropped is None:
        return None
    drop_at, smooth_at_drop = dropped
    plateau_steps = int(steps[leave] - steps[0])
    drop_steps = int(steps[drop_at] - steps[leave])
    # lengths in steps, not points: the kept points have a gap once the ring buffer wrapped
    if drop_at - leave > 1 and drop_steps > th.max_drop_fraction_of_plateau * plateau_steps:
        return []
    drop = 1 - smooth_at_drop / start
    return [Detection(None, f"loss was flat for {plateau_steps} steps, then fell {100 * drop:.0f}% "
                            f"in {drop_steps} steps",
                      {"plateau_steps": plateau_steps, "drop": drop, "drop_steps": drop_steps,
                       "start_loss": start})]

