"""One step's summaries split by role, and the per-step numbers kept as series (and plotted), for every
layer of a role at once.

A sampled step of a large model brings hundreds of summaries; deriving their
numbers one summary at a time costs a few microseconds of Python each. Here
the header fields of all summaries of one role become one matrix, and each
number is one vectorised expression over its column (the same IEEE double
arithmetic as :class:`~nnhealth.stats.Summary`'s properties, so the values are
identical). The split (:func:`split`) is made once per step and shared by the
history, which keeps the same matrices in its blocks, and :func:`derive_step`.

>>> import numpy as np
>>> from nnhealth.stats import summary_of
>>> s = summary_of(np.array([[0.0, 2.0], [0.0, 4.0]]), "relu", units=True)
>>> derive_step({("activation", "fc1"): s}, {"fc1": {"kind": "relu"}})[("fc1", "activation/mean")]
1.5
"""
from __future__ import annotations

import math
import weakref
from itertools import chain, compress, repeat
from operator import attrgetter, itemgetter

import numpy as np

from .stats.histogram import NUM_BUCKETS
from .stats.kinds import get_kind
from .stats.summary import HEADER, H

_COUNT, _SUM, _SUMSQ, _ABSSUM = H["count"], H["sum"], H["sumsq"], H["abssum"]
_MIN, _MAX, _NONFINITE = H["min"], H["max"], H["nonfinite"]
_ZEROS, _POSITIVE, _SATURATED, _SAMPLES = H["zeros"], H["positive"], H["saturated"], H["samples"]
#: a ReLU-like unit is dead on a step when it fired in under this fraction of the samples
DEAD_FIRE_FRACTION = 0.01
_NO_META: dict = {}
_h, _v = attrgetter("h"), attrgetter("v")
_layout, _units, _hist = attrgetter("layout"), attrgetter("units"), attrgetter("hist")


def headers(summaries) -> tuple[np.ndarray, bool]:
    """(the header fields of ``summaries`` as an (n, len(HEADER)) matrix, whether they are nothing but
    headers)."""
    n = len(summaries)
    vectors = list(map(_v, summaries))
    if sum(map(len, vectors)) == n * len(HEADER):  # headers only (gradients, updates): one copy
        return np.concatenate(vectors).reshape(n, len(HEADER)), True
    flat = np.fromiter(chain.from_iterable(map(_h, summaries)), dtype=np.float64, count=n * len(HEADER))
    return flat.reshape(n, len(HEADER)), False


class Step:
    """One step's ``{(role, where): Summary}`` split by role, {role: (names, summaries)} in the dict's
    order, with what the history and the derived numbers both read computed once, when first asked:
    each role's header matrix, the activations' per-unit counts, the update ratios.

    The names lists are shared with other steps: read them, do not change them.
    """

    __slots__ = ("__weakref__", "_cache", "keys", "plan", "roles", "values")

    def __init__(self, keys: list, values: list, plan: _Plan):
        self.keys, self.values, self.plan = keys, values, plan
        self.roles = {role: (names, pick(values)) for role, names, pick in plan.roles}
        self._cache: dict = {}

    def headers(self, role: str) -> np.ndarray:
        return self._headers(role)[0]

    def headers_only(self, role: str) -> bool:
        """Whether the summaries of ``role`` hold nothing but headers (no histogram, no per-unit parts)."""
        return self._headers(role)[1]

    def _headers(self, role: str) -> tuple[np.ndarray, bool]:
        got = self._cache.get(("headers", role))
        if got is None:
            got = self._cache[("headers", role)] = headers(self.roles[role][1])
        return got

    def unit_layout(self) -> tuple[np.ndarray, np.ndarray]:
        """The activations' (unit counts, where each one's per-unit counts start in its vector: the fired
        counts, then as many saturated counts)."""
        got = self._cache.get("units")
        if got is None:
            layouts = list(map(_layout, self.roles["activation"][1]))
            n = len(layouts)
            units = np.fromiter(map(_units, layouts), dtype=np.int64, count=n)
            # where Layout puts them: after the header and the histogram
            starts = len(HEADER) + NUM_BUCKETS * np.fromiter(map(_hist, layouts), dtype=np.int64, count=n)
            got = self._cache["units"] = units, starts
        return got

    def unit_parts(self, part: int) -> list[np.ndarray]:
        """The per-unit fired (``part`` 0) or saturated (1) counts of the activations with units, in order
        (views of their vectors)."""
        got = self._cache.get(("parts", part))
        if got is None:
            units, starts = self.unit_layout()
            on = np.flatnonzero(units)
            items = self.roles["activation"][1]
            got = self._cache[("parts", part)] = [
                items[i].v[a:a + u] for i, a, u in zip(on.tolist(), (starts[on] + part * units[on]).tolist(),
                                                        units[on].tolist())]
        return got

    def update_ratios(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(whether each update has a ratio, the ratios; in the order of the updates): an update's norm
        over the norm of the parameter before it, where that parameter was given and is not all zeros.
        None without parameters before the updates."""
        if "update" not in self.roles or "update_base" not in self.roles:
            return None
        got = self._cache.get("ratios")
        if got is None:
            (names, _), (base_names, bases) = self.roles["update"], self.roles["update_base"]
            base = np.fromiter((s.h[_SUMSQ] for s in bases), dtype=np.float64, count=len(bases))
            if base_names != names:
                at = {name: i for i, name in enumerate(base_names)}
                found = [at.get(name, -1) for name in names]
                base = np.where(np.array(found) >= 0, base[found], 0.0)
            with np.errstate(divide="ignore", invalid="ignore"):
                got = self._cache["ratios"] = base > 0, np.sqrt(self.headers("update")[:, _SUMSQ]) / np.sqrt(base)
        return got


class _Plan:
    """How one list of keys splits by role, and the series keys of each role's numbers: made once for
    consecutive steps with the same keys, so that neither the split nor the keys are made again."""

    __slots__ = ("_series", "keys", "roles")

    def __init__(self, keys: list):
        at: dict[str, tuple[list, list]] = {}
        for i, (role, where) in enumerate(keys):
            group = at.get(role)
            if group is None:
                group = at[role] = ([], [])
            group[0].append(where)
            group[1].append(i)
        self.keys, self.roles = keys, []
        for role, (names, positions) in at.items():
            # itemgetter picks a tuple of values, but a single value alone: wrapped in a tuple
            pick = itemgetter(*positions) if len(positions) > 1 else _single(positions[0])
            self.roles.append((role, names, pick))
        self._series: dict[tuple[str, str], list] = {}

    def series_keys(self, role: str, names: list, stat: str) -> list[tuple[str, str]]:
        """[(where, "role/stat")] for the layers ``names`` of ``role``."""
        got = self._series.get((role, stat))
        if got is None:
            got = self._series[(role, stat)] = list(zip(names, repeat(f"{role}/{stat}")))
        return got


def _single(i: int):
    return lambda values: (values[i],)


#: the last plan made, and the last Step (held by the history that recorded it), one object each, since
#: threads may share them
_plan = _Plan([])
_last = weakref.ref(Step([], [], _plan))


def split(summaries: dict) -> Step:
    """``summaries`` split by role. The same summaries as the last call (the history records a step, then
    its numbers are derived) give the same :class:`Step` back; the same keys in the same order as the last
    new split (consecutive steps of one training) reuse its plan."""
    global _plan, _last
    keys, values = list(summaries), list(summaries.values())
    last = _last()
    if last is not None and last.keys == keys and last.values == values:
        return last
    plan = _plan
    if keys != plan.keys:
        plan = _plan = _Plan(keys)
    step = Step(keys, values, plan)
    _last = weakref.ref(step)
    return step


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


def _dead_fractions(step: Step, kinds: list[str], samples: np.ndarray) -> list:
    """Per activation summary, the fraction of units that fired in under 1% of the samples (None where
    it does not apply: kinds that cannot die, no per-unit counts): all layers in a few array calls."""
    units, _ = step.unit_layout()
    n = len(units)
    can_die = np.fromiter((_can_die(kind) for kind in kinds), dtype=bool, count=n)
    picked = np.flatnonzero((units > 0) & (samples != 0) & can_die)
    out: list = [None] * n
    if not picked.size:
        return out
    parts = step.unit_parts(0)
    at = (np.cumsum(units > 0) - 1)[picked].tolist()  # where each one's counts are among ``parts``
    dead: list = []
    for chunk in chunks(units[picked].tolist()):
        size = units[picked[chunk]]
        fired = np.concatenate([parts[i] for i in at[chunk]])
        per_unit = np.divide(fired, np.repeat(samples[picked[chunk]], size), out=fired)
        dead.extend((np.add.reduceat(per_unit < DEAD_FIRE_FRACTION, np.cumsum(size) - size, dtype=np.int64)
                     / size).tolist())
    for i, value in zip(picked.tolist(), dead):
        out[i] = value
    return out


#: per-unit arithmetic over many layers is done on at most this many units at a time: temporaries this
#: small are reused by the allocator, while large ones are fresh pages from the OS on every step, which
#: costs more than the arithmetic
CHUNK_UNITS = 16000


def chunks(sizes: list[int]):
    """Slices of consecutive ``sizes`` summing to at most CHUNK_UNITS (a larger size on its own)."""
    start, total = 0, 0
    for i, size in enumerate(sizes):
        if total and total + size > CHUNK_UNITS:
            yield slice(start, i)
            start, total = i, 0
        total += size
    if sizes:
        yield slice(start, len(sizes))


def _columns(role: str, h: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(stat, values) for one role from its header matrix ``h``, values in the order of its rows."""
    if role == "activation":
        mean, std = _moments(h)
        return [("mean", mean), ("std", std), ("zero_fraction", _fraction(h, _ZEROS)),
                ("positive_fraction", _fraction(h, _POSITIVE)), ("saturated_fraction", _fraction(h, _SATURATED))]
    if role == "gradient":
        return [("norm", np.sqrt(h[:, _SUMSQ])), ("mean_abs", h[:, _ABSSUM] / h[:, _COUNT]),
                ("nonfinite", h[:, _NONFINITE])]
    if role == "parameter":
        mean, std = _moments(h)
        return [("norm", np.sqrt(h[:, _SUMSQ])), ("mean", mean), ("std", std)]
    if role == "update":
        return [("norm", np.sqrt(h[:, _SUMSQ]))]
    if role == "input":
        mean, std = _moments(h)
        return [("mean", mean), ("std", std), ("min", h[:, _MIN]), ("max", h[:, _MAX]), ("nonfinite", h[:, _NONFINITE])]
    return []


def derive_step(summaries: dict, meta: dict) -> dict[tuple[str | None, str], float]:
    """{(where, "role/stat"): value} for one step's ``summaries`` ({(role, where): Summary}), plus the
    update ratios (update norm over the norm of the parameter before it) and the total gradient norm
    (infinite when any gradient holds NaN or Inf). ``meta`` gives each activation's kind."""
    step = split(summaries)
    out: dict = {}
    for role, (names, _) in step.roles.items():
        if role == "update_base":
            continue
        h = step.headers(role)
        with np.errstate(divide="ignore", invalid="ignore"):
            columns = [(stat, values.tolist()) for stat, values in _columns(role, h)]
            if role == "activation":
                kinds = [meta.get(n, _NO_META).get("kind") or "linear" for n in names]
                columns.append(("dead_fraction", _dead_fractions(step, kinds, h[:, _SAMPLES])))
        for stat, values in columns:
            keys = step.plan.series_keys(role, names, stat)
            if stat == "dead_fraction":  # only for the layers it applies to
                out.update((k, v) for k, v in zip(keys, values) if v is not None)
            else:
                out.update(zip(keys, values))
        ratios = step.update_ratios() if role == "update" else None
        if ratios is not None:
            has, values = ratios
            out.update(compress(zip(step.plan.series_keys(role, names, "ratio"), values.tolist()), has.tolist()))
        if role == "gradient":
            out[(None, "gradient/total_norm")] = math.sqrt(
                sum(x if bad == 0 else math.inf for x, bad in zip(h[:, _SUMSQ].tolist(), h[:, _NONFINITE].tolist())))
    return out
