"""What a rule is: a pure check of the history, its thresholds, and its documentation page."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from ..history import History
from ..stats.kinds import get_kind
from ..stats.summary import H

#: the roles an observation can have; rules declare which ones they need
ROLES = ("loss", "metrics", "activation", "gradient", "parameter", "update", "input")
SAMPLES, NONFINITE = H["samples"], H["nonfinite"]


@dataclass(frozen=True)
class Detection:
    """A rule's verdict for one place; the engine turns new ones into findings."""

    where: Optional[str]
    message: str
    evidence: dict = field(default_factory=dict)
    #: overrides the rule's severity (e.g. non-finite gradients are critical)
    severity: Optional[str] = None
    #: what "the same place" means for reporting once: the ``where`` by default; network-wide
    #: verdicts (spread by depth) use one key, so a worst layer that moves is not a new finding
    key: Optional[str] = None
    #: overrides the rule's advice when this case calls for different advice
    advice: Optional[str] = None


@dataclass(frozen=True)
class Context:
    """What a check may look at: the history and the facts given to the monitor."""

    history: History
    step: int
    num_classes: Optional[int] = None


@dataclass(frozen=True)
class Rule:
    id: str
    severity: str
    summary: str
    needs: frozenset
    thresholds: type
    check: Callable
    #: "step": judged on every step (loss only, O(1)); "sample": when layer data arrives
    cadence: str
    advice: str
    #: documentation sections: detects, why, how, example, fix
    doc: dict

    def default_thresholds(self):
        return self.thresholds()


RULES: dict[str, Rule] = {}
DOC_SECTIONS = ("detects", "why", "how", "example", "fix")


def rule(id: str, *, severity: str, summary: str, needs, thresholds: type, advice: str,
         cadence: str = "sample", **doc):
    """Register ``check(ctx, thresholds) -> list[Detection] | None`` as the rule ``id``.

    A check returns None when it cannot judge yet (too little data), and a
    list (possibly empty) when it did: places missing from the list are
    healthy, which is what lets a symptom clear and be reported again later.
    """
    missing = [s for s in DOC_SECTIONS if s not in doc and s != "fix"]
    if missing:
        raise ValueError(f"rule {id} lacks documentation sections {missing}")

    def register(check):
        RULES[id] = Rule(id=id, severity=severity, summary=summary, needs=frozenset(needs),
                         thresholds=thresholds, check=check, cadence=cadence, advice=advice,
                         doc={**doc, "fix": doc.get("fix", advice)})
        return check

    return register


def validate_thresholds(rule_id: str, th) -> None:
    """Impossible values are refused with the threshold's full name."""
    for f in dataclasses.fields(th):
        v = getattr(th, f.name)
        name = f"{rule_id}.{f.name}"
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"threshold {name} must be a number, got {v!r}")
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"threshold {name} must be a finite number >= 0, got {v!r}")
        if "fraction" in f.name and v > 1:
            raise ValueError(f"threshold {name} is a fraction and must lie in [0, 1], got {v!r}")
        if f.type in ("int", int) and int(v) != v:
            raise ValueError(f"threshold {name} must be a whole number, got {v!r}")
    check = getattr(th, "validate", None)
    if check is not None:
        problem = check()
        if problem:
            raise ValueError(f"thresholds of {rule_id}: {problem}")


# -- helpers shared by the checks ----------------------------------------------

def median(values) -> float:
    """Median of the finite values (NaN when none); plain Python for the short windows rules use."""
    if len(values) > 64:
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]
        return float(np.median(values)) if values.size else float("nan")
    if isinstance(values, np.ndarray):
        values = values.tolist()  # Python floats: iterating an array makes a numpy scalar per element
    finite = sorted(map(float, filter(math.isfinite, values)))
    n = len(finite)
    if not n:
        return float("nan")
    mid = n // 2
    return finite[mid] if n % 2 else 0.5 * (finite[mid - 1] + finite[mid])


def medians(rows: list[list[float]]) -> np.ndarray:
    """:func:`median` of each of many short lists at once (the latest points of every layer's series)."""
    if not rows:
        return np.empty(0)
    width = max(len(r) for r in rows)
    m = np.full((len(rows), max(width, 1)), np.nan)
    for i, r in enumerate(rows):
        m[i, :len(r)] = r
    return row_medians(m)


def row_medians(m: np.ndarray) -> np.ndarray:
    """:func:`median` of the finite values of each row of ``m`` (NaN where none): one sort of the
    matrix instead of a Python sort per row; the same values. ``m`` is overwritten."""
    if not m.size:
        return np.full(len(m), np.nan)
    finite = np.isfinite(m)
    if np.count_nonzero(finite) == m.size:  # the usual case: full rows of finite values
        m.sort(axis=1)
        mid = m.shape[1] // 2
        return m[:, mid] if m.shape[1] % 2 else 0.5 * (m[:, mid - 1] + m[:, mid])
    m[~finite] = np.nan
    m.sort(axis=1)  # NaN last
    n = np.count_nonzero(~np.isnan(m), axis=1)
    i = np.arange(len(m))
    lo, hi = m[i, np.maximum((n - 1) // 2, 0)], m[i, np.minimum(n // 2, m.shape[1] - 1)]
    return np.where(n == 0, np.nan, np.where(n % 2 == 1, lo, 0.5 * (lo + hi)))


def window_median(history: History, where, stat: str, points: int) -> float:
    """Median of the latest ``points`` values of a series (NaN when too few)."""
    v = history.values(where, stat, last=points)
    if len(v) < points:
        return float("nan")
    return median(v)


_NO_META: dict = {}


def weights(history: History, role: str) -> np.ndarray:
    """Columns of ``role``'s block that are weight tensors (2 or more dimensions), in depth order; once
    per step (read-only)."""
    names = tuple(history.names(role))  # the key: roles with the same tensors look them up once
    return history.memo(("weights", names), lambda: _weights(history, role, names))


def _weights(history: History, role: str, names: tuple) -> np.ndarray:
    """:func:`weights` of ``role``'s ``names``, as the tensors' dimensions in ``history.meta`` say now."""
    meta = history.meta
    return _read_only(np.flatnonzero([meta.get(n, _NO_META).get("ndim", 2) >= 2 for n in names]))


def _read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def kind_mask(history: History, flag: str) -> np.ndarray:
    """Per activation layer (block column), whether its kind has ``flag`` (``can_die``, ``bounded``,
    ``saturated``: a true :class:`~nnhealth.stats.kinds.Kind` attribute); False for layers without a kind.
    The kinds are read from ``history.meta`` as they are now, once per step for all flags."""
    return history.memo("kind_flags", lambda: _kind_flags(history))[flag]


_FLAGS = ("can_die", "bounded", "saturated")


def _kind_flags(history: History) -> dict[str, np.ndarray]:
    """The flags of :func:`kind_mask`, made anew only when the layers' kinds changed since the last step
    that asked."""
    meta = history.meta
    kinds = [meta.get(name, _NO_META).get("kind") for name in history.names("activation")]
    return history.reuse("kind_flags", kinds, lambda: _flags_of(kinds))


def _flags_of(kinds: list) -> dict[str, np.ndarray]:
    known, rows = {}, []
    for kind in kinds:
        got = known.get(kind)
        if got is None:
            k = get_kind(kind) if kind is not None else None
            got = known[kind] = tuple(k is not None and bool(getattr(k, flag)) for flag in _FLAGS)
        rows.append(got)
    flags = _read_only(np.array(rows, dtype=bool).reshape(len(rows), len(_FLAGS)))
    return {flag: flags[:, i] for i, flag in enumerate(_FLAGS)}


def series_medians(history: History, role: str, stats: tuple[str, ...], cols: np.ndarray, points: int) -> list:
    """For each of ``stats`` (series ``role/stat``), the median of the latest ``points`` values of the
    layers ``cols`` of ``role`` (fewer where fewer are kept; NaN where none is finite): read from the
    series one layer at a time, for the rare configurations the blocks do not cover (``points`` larger
    than the window)."""
    names = history.names(role)
    return [medians([history.last_values(names[j], f"{role}/{stat}", points) for j in cols.tolist()])
            for stat in stats]


def judged_layers(history: History, layers: np.ndarray, min_samples: float, min_steps: int) -> np.ndarray:
    """Columns of the activation layers among the mask ``layers`` whose window holds per-unit counts, at
    least ``min_samples`` samples and ``min_steps`` sampled steps."""
    if not np.count_nonzero(layers):  # no layer of the kinds judged: nothing else to compute
        return layers.nonzero()[0]
    block = history.block("activation")
    judged = layers & (block.window_units() > 0)
    judged &= block.window_sums()[:, SAMPLES] >= min_samples
    judged &= block.window_size() >= min_steps
    return judged.nonzero()[0]


def nonfinite(history: History, role: str, detection) -> list:
    """``detection(name, count, fraction)`` for each layer of ``role`` whose latest summary holds NaN or Inf
    values, in depth order."""
    bad = history.memo(("nonfinite", role), lambda: _nonfinite(history, role))
    if not bad:
        return []
    block, names = history.block(role), history.names(role)
    out = []
    for j, row in zip(bad, block.latest[bad].tolist()):
        count = row[NONFINITE]
        out.append(detection(names[j], int(count), count / (row[H["count"]] + count)))
    return out


def _nonfinite(history: History, role: str) -> list[int]:
    """The columns of ``role``'s block whose latest summary holds NaN or Inf values (two rules ask, once
    per step)."""
    block = history.block(role)
    if block is None:
        return []
    counts = block.latest[:block.n, NONFINITE]
    return (counts > 0).nonzero()[0].tolist() if np.count_nonzero(counts) else []  # the usual case: none
