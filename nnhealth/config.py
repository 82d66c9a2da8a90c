"""Thresholds: every rule's are a dataclass with documented defaults, overridable by name.

Users override with ``{"dead-relu.max_dead_fraction": 0.7}`` or
``{"dead-relu": {"max_dead_fraction": 0.7}}``; unknown names and impossible
values are refused at construction with the full name of what was wrong.
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Iterable, Mapping

from .rules import RULES
from .rules.base import validate_thresholds


def _suggest(name: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_rule_ids(ids: Iterable[str], argument: str) -> list[str]:
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        example = repr([ids]) if isinstance(ids, str) else "['dead-relu']"
        raise ValueError(f"{argument} must be a list of rule ids, e.g. {example}, got {ids!r}")
    out = []
    for rid in ids:
        if rid not in RULES:
            raise ValueError(f"{argument}: unknown rule id {rid!r}{_suggest(str(rid), RULES)}; "
                             f"known: {', '.join(sorted(RULES))}")
        out.append(rid)
    return out


def parse_value(text: str):
    """A threshold value from the command line."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"threshold value {text!r} is not a number") from None


def resolve_thresholds(overrides: Mapping | None = None) -> dict:
    """{rule id: thresholds instance} with ``overrides`` applied and validated."""
    if overrides is not None and not isinstance(overrides, Mapping):
        raise ValueError(f"thresholds must be a dict such as {{'dead-relu.max_dead_fraction': 0.7}}, "
                         f"got {overrides!r}")
    flat: dict[str, dict] = {}
    for key, value in (overrides or {}).items():
        if isinstance(value, Mapping):
            for field, v in value.items():
                flat.setdefault(str(key), {})[str(field)] = v
        else:
            rid, sep, field = str(key).rpartition(".")
            if not sep:
                raise ValueError(f"thresholds: {key!r} should be 'RULE.NAME', e.g. 'dead-relu.max_dead_fraction'")
            flat.setdefault(rid, {})[field] = value
    out = {}
    for rid, rule in RULES.items():
        changes = flat.pop(rid, {})
        names = {f.name for f in dataclasses.fields(rule.thresholds)}
        for field in changes:
            if field not in names:
                raise ValueError(f"thresholds: rule {rid} has no threshold {field!r}{_suggest(field, names)}; "
                                 f"it has: {', '.join(sorted(names)) or 'none'}")
        th = rule.thresholds(**changes)
        validate_thresholds(rid, th)
        out[rid] = th
    if flat:
        rid = next(iter(flat))
        raise ValueError(f"thresholds: unknown rule id {rid!r}{_suggest(rid, RULES)}")
    return out


def threshold_items(th) -> list[tuple[str, object]]:
    return [(f.name, getattr(th, f.name)) for f in dataclasses.fields(th)]
