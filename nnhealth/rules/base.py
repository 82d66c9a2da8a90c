"""What a rule is: a pure check of the history, its thresholds, and its documentation page."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from ..history import History

#: the roles an observation can have; rules declare which ones they need
ROLES = ("loss", "metrics", "activation", "gradient", "parameter", "update", "input")


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
    finite = sorted(float(v) for v in values if math.isfinite(v))
    n = len(finite)
    if not n:
        return float("nan")
    mid = n // 2
    return finite[mid] if n % 2 else 0.5 * (finite[mid - 1] + finite[mid])


def medians(rows: list[list[float]]) -> np.ndarray:
    """:func:`median` of each of many short lists at once (the latest points of every layer's series):
    one sort of a NaN-padded matrix instead of a Python sort per layer; the same values."""
    if not rows:
        return np.empty(0)
    width = max(len(r) for r in rows)
    m = np.full((len(rows), max(width, 1)), np.nan)
    for i, r in enumerate(rows):
        m[i, :len(r)] = r
    m[~np.isfinite(m)] = np.nan
    m.sort(axis=1)  # NaN last
    n = np.count_nonzero(~np.isnan(m), axis=1)
    i = np.arange(len(rows))
    lo, hi = m[i, np.maximum((n - 1) // 2, 0)], m[i, np.minimum(n // 2, m.shape[1] - 1)]
    return np.where(n == 0, np.nan, np.where(n % 2 == 1, lo, 0.5 * (lo + hi)))


def window_median(history: History, where, stat: str, points: int) -> float:
    """Median of the latest ``points`` values of a series (NaN when too few)."""
    v = history.values(where, stat, last=points)
    if len(v) < points:
        return float("nan")
    return median(v)


def weight_names(history: History, role: str) -> list[str]:
    """Names of weight tensors (2-D or more) seen for ``role``, in depth order."""
    out = []
    for name in history.names(role):
        if history.meta.get(name, {}).get("ndim", 2) >= 2:
            out.append(name)
    return out


def layer_names(history: History, predicate=None) -> list[str]:
    """Activation layers in depth order, optionally filtered on their kind."""
    names = history.names("activation")
    if predicate is None:
        return names
    return [n for n in names if predicate(history.meta.get(n, {}).get("kind"))]
