"""The per-step numbers kept as series (and plotted) for each role, for every layer of a role at once.

A sampled step of a large model brings hundreds of summaries; deriving their
numbers one summary at a time costs a few microseconds of Python each. Here
the header fields of all summaries of one role become one matrix, and each
number is one vectorised expression over its column (the same IEEE double
arithmetic as :class:`~nnhealth.stats.Summary`'s properties, so the values are
identical).

>>> import numpy as np
>>> from nnhealth.stats import summary_of
>>> s = summary_of(np.array([[0.0, 2.0], [0.0, 4.0]]), "relu", units=True)
>>> derive_step({("activation", "fc1"): s}, {"fc1": {"kind": "relu"}})[("fc1", "activation/mean")]
1.5
"""
from __future__ import annotations

import math
from itertools import chain, repeat

import numpy as np

from .stats.histogram import NUM_BUCKETS
from .stats.kinds import get_kind
from .stats.summary import HEADER, H

_COUNT, _SUM, _SUMSQ, _ABSSUM = H["count"], H["sum"], H["sumsq"], H["abssum"]
_MIN, _MAX, _NONFINITE = H["min"], H["max"], H["nonfinite"]
_ZEROS, _POSITIVE, _SATURATED, _SAMPLES = H["zeros"], H["positive"], H["saturated"], H["samples"]
#: a ReLU-like unit is dead on a step when it fired in under this fraction of the samples
DEAD_FIRE_FRACTION = 0.01


def _headers(summaries: list) -> np.ndarray:
    """The header fields of ``summaries`` as an (n, len(HEADER)) matrix."""
    n = len(summaries)
    flat = np.fromiter(chain.from_iterable(s.h for s in summaries), dtype=np.float64, count=n * len(HEADER))
    return flat.reshape(n, len(HEADER))


# A count of 0 comes with sums of 0, so x / count is 0 / 0 = NaN there: the Summary properties'
# "NaN when nothing was counted" without a mask (derive_step ignores the division warnings).

def _moments(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    count = h[:, _COUNT]
    mean = h[:, _SUM] / count
    return mean, np.sqrt(np.maximum(h[:, _SUMSQ] / count - mean * mean, 0.0))


def _fraction(h: np.ndarray, field: int) -> np.ndarray:
    return h[:, field] / (h[:, _COUNT] + h[:, _NONFINITE])


def _can_die(kind: str, cache: dict = {}) -> bool:  # noqa: B006 (a per-process cache on purpose)
    got = cache.get(kind)
    if got is None:
        got = cache[kind] = get_kind(kind).can_die
    return got


def _dead_fractions(summaries: list, kinds: list[str]) -> list:
    """Per activation summary, the fraction of units that fired in under 1% of the samples (None where
    it does not apply: kinds that cannot die, no per-unit counts): all layers in a few array calls."""
    out: list = [None] * len(summaries)
    picked, parts, samples = [], [], []
    for i, (s, kind) in enumerate(zip(summaries, kinds)):
        layout, n = s.layout, s.h[_SAMPLES]
        if layout.units and n and _can_die(kind):
            start = len(HEADER) + NUM_BUCKETS * layout.hist  # where Layout puts the per-unit fired counts
            picked.append(i)
            parts.append(s.v[start:start + layout.units])
            samples.append(n)
    if not picked:
        return out
    sizes = np.array([p.size for p in parts])
    per_unit = np.concatenate(parts) / np.repeat(np.array(samples, dtype=np.float64), sizes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    dead = np.add.reduceat((per_unit < DEAD_FIRE_FRACTION).astype(np.float64), starts) / sizes
    for i, value in zip(picked, dead.tolist()):
        out[i] = value
    return out


def _columns(role: str, summaries: list, kinds: list[str]) -> list[tuple[str, list]]:
    """(stat, values) for one role, values in the order of ``summaries``."""
    h = _headers(summaries)
    if role == "activation":
        mean, std = _moments(h)
        cols = [("mean", mean), ("std", std), ("zero_fraction", _fraction(h, _ZEROS)),
                ("positive_fraction", _fraction(h, _POSITIVE)), ("saturated_fraction", _fraction(h, _SATURATED))]
        out = [(stat, values.tolist()) for stat, values in cols]
        out.append(("dead_fraction", _dead_fractions(summaries, kinds)))
        return out
    if role == "gradient":
        cols = [("norm", np.sqrt(h[:, _SUMSQ])), ("mean_abs", h[:, _ABSSUM] / h[:, _COUNT]),
                ("nonfinite", h[:, _NONFINITE])]
    elif role == "parameter":
        mean, std = _moments(h)
        cols = [("norm", np.sqrt(h[:, _SUMSQ])), ("mean", mean), ("std", std)]
    elif role == "update":
        cols = [("norm", np.sqrt(h[:, _SUMSQ]))]
    elif role == "input":
        mean, std = _moments(h)
        cols = [("mean", mean), ("std", std), ("min", h[:, _MIN]), ("max", h[:, _MAX]),
                ("nonfinite", h[:, _NONFINITE])]
    else:
        return []
    return [(stat, values.tolist()) for stat, values in cols]


def derive_step(summaries: dict, meta: dict) -> dict[tuple[str | None, str], float]:
    """{(where, "role/stat"): value} for one step's ``summaries`` ({(role, where): Summary}), plus the
    update ratios (update norm over the norm of the parameter before it) and the total gradient norm
    (infinite when any gradient holds NaN or Inf). ``meta`` gives each activation's kind."""
    by_role: dict[str, tuple[list, list]] = {}
    for (role, where), s in summaries.items():
        group = by_role.get(role)
        if group is None:
            group = by_role[role] = ([], [])
        group[0].append(where)
        group[1].append(s)
    bases = by_role.pop("update_base", None)
    out: dict = {}
    for role, (names, items) in by_role.items():
        kinds = [meta.get(n, {}).get("kind") or "linear" for n in names] if role == "activation" else []
        with np.errstate(divide="ignore", invalid="ignore"):
            columns = _columns(role, items, kinds)
        for stat, values in columns:
            keys = zip(names, repeat(f"{role}/{stat}"))
            if stat == "dead_fraction":  # only for the layers it applies to
                out.update((k, v) for k, v in zip(keys, values) if v is not None)
            else:
                out.update(zip(keys, values))
        if role == "update" and bases is not None:
            base_of = dict(zip(*bases))
            for where, s in zip(names, items):
                base = base_of.get(where)
                if base is not None and base.h[_SUMSQ] > 0:
                    out[(where, "update/ratio")] = s.norm / base.norm
        if role == "gradient":
            out[(None, "gradient/total_norm")] = math.sqrt(
                sum(s.h[_SUMSQ] if s.h[_NONFINITE] == 0 else math.inf for s in items))
    return out
