"""Activation kinds and what "saturated" means for each.

An output is *saturated* where the activation's local derivative is below 5%
of its maximum (``SATURATION_DERIVATIVE``): there the gradient that flows back
through the unit is mostly gone. Because only the output ``y`` is observed,
each test is written in terms of ``y``:

- sigmoid: σ'(x) = y(1−y), maximum 1/4  ->  y(1−y) < 0.05 · 1/4 (y < 0.0128 or y > 0.9872)
- tanh: 1 − y², maximum 1  ->  1 − y² < 0.05 (|y| > 0.9747)
- softsign: (1 − |y|)², maximum 1  ->  |y| > 1 − √0.05
- hardtanh, hardsigmoid, relu6: derivative exactly 0 on their flat ends

ReLU-like kinds never saturate above zero; their failure is to stop firing,
counted separately as ``positive`` / per-unit ``fired``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

SATURATION_DERIVATIVE = 0.05


@dataclass(frozen=True)
class Kind:
    name: str
    #: a unit whose output is <= 0 passes no gradient at all (dead when it never fires)
    can_die: bool = False
    #: outputs are bounded, so spread cannot explode (it saturates instead)
    bounded: bool = False
    #: ops, y -> boolean mask of saturated outputs
    saturated: Optional[Callable] = None


def _sigmoid(ops, y):
    return y * (1.0 - y) < SATURATION_DERIVATIVE * 0.25


def _tanh(ops, y):
    return 1.0 - y * y < SATURATION_DERIVATIVE


def _softsign(ops, y):
    return ops.abs(y) > 1.0 - math.sqrt(SATURATION_DERIVATIVE)


def _hardtanh(ops, y):
    return ops.abs(y) >= 1.0


def _hardsigmoid(ops, y):
    return (y <= 0.0) | (y >= 1.0)


def _relu6(ops, y):
    return y >= 6.0


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("relu", can_die=True),
    Kind("relu6", can_die=True, saturated=_relu6),
    Kind("leaky_relu"),
    Kind("prelu"),
    Kind("rrelu"),
    Kind("elu"),
    Kind("celu"),
    Kind("selu"),
    Kind("gelu"),
    Kind("silu"),
    Kind("mish"),
    Kind("softplus"),
    Kind("hardswish"),
    Kind("maxout"),
    Kind("linear"),
    Kind("tanh", bounded=True, saturated=_tanh),
    Kind("sigmoid", bounded=True, saturated=_sigmoid),
    Kind("softsign", bounded=True, saturated=_softsign),
    Kind("hardtanh", bounded=True, saturated=_hardtanh),
    Kind("hardsigmoid", bounded=True, saturated=_hardsigmoid),
)}

#: other spellings users and frameworks use
ALIASES = {
    "identity": "linear", "none": "linear", "swish": "silu", "leakyrelu": "leaky_relu",
    "logistic": "sigmoid", "hard_tanh": "hardtanh", "hard_sigmoid": "hardsigmoid",
    "hard_swish": "hardswish",
}


def get_kind(name: str) -> Kind:
    """The :class:`Kind` called ``name``; a clear error listing valid names otherwise."""
    if type(name) is str:
        found = KINDS.get(name)  # the canonical spelling, as rules and the history store it
        if found is not None:
            return found
    if not isinstance(name, str):
        raise TypeError(f"activation kind must be a string such as 'relu', got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in KINDS:
        raise ValueError(f"unknown activation kind {name!r}; expected one of: {', '.join(sorted(KINDS))}")
    return KINDS[key]
