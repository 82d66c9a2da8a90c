"""The parameters at watch time: what the initialisation checks judge.

Each parameter is summarised once when the model is watched (weights with
per-output-unit sums, which is what ``weights-symmetric`` compares), and its
facts go to ``monitor.history.meta``: ``ndim``, ``fan_in`` and, for weights,
the initial scale as a *gain* ``init_std * sqrt(fan_in)``: about 1 for Xavier,
sqrt(2) ~ 1.41 for He, 0.01 * sqrt(fan_in) for ``0.01 * randn``. Once the first
sampled forward shows which activation follows each layer, the gain the
lecture recommends for it and the ratio between the two are added
(``recommended_gain``, ``init_scale``): evidence a rule or a report can
quote next to a vanishing or exploding spread.
"""
from __future__ import annotations

import logging
import math

import torch
from torch import nn

from nnhealth.stats import Layout, Summary, summarize

from ._torch_fused import header_rows

#: kinds that halve the variance, so He's sqrt(2) gain keeps it; the rest want Xavier's 1
HE_KINDS = frozenset({"relu", "relu6", "leaky_relu", "prelu", "rrelu", "elu", "celu", "gelu", "silu", "mish",
                      "softplus", "hardswish"})


def recommended_gain(kind: str) -> float:
    return math.sqrt(2.0) if kind in HE_KINDS else 1.0


def parameters_by_module(root: nn.Module):
    """(qualified name, parameter, owning module) once per parameter, in definition order."""
    seen = set()
    for mname, module in root.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            yield (f"{mname}.{pname}" if mname else pname), p, module


def unit_axis(module: nn.Module, p: torch.Tensor) -> int:
    """The output-unit axis of a weight: 0 for Linear/Conv (``weight[out, in, ...]``), 1 for transposed convs."""
    return 1 if isinstance(module, nn.modules.conv._ConvTransposeNd) and p.ndim >= 2 else 0


def observe_initial(ctx, root: nn.Module) -> dict[str, str]:
    """Summarise every parameter now and record its facts; returns {weight name: owning module name}."""
    meta = ctx.monitor._history.meta
    weights, owners = [], {}
    module_names = {m: n for n, m in root.named_modules()}
    unmaterialised = []
    for name, p, module in parameters_by_module(root):
        if nn.parameter.is_lazy(p) or p.device.type == "meta":  # no values to judge yet
            unmaterialised.append(name)
            continue
        facts = meta.setdefault(name, {})
        facts["ndim"] = int(p.ndim)
        if p.numel() == 0:
            continue
        x = p.detach()
        if p.ndim >= 2:
            axis = unit_axis(module, p)
            facts["unit_axis"] = axis
            facts["fan_in"] = int(p.numel() // p.shape[axis])
            layout, vec = summarize(x, "linear", units=True, moments=True, unit_axis=axis)
            weights.append((name, x))
            owners[name] = module_names[module]
        else:
            layout, vec = summarize(x, "linear")
        ctx.add("parameter", name, vec, layout)
    _record_scale(meta, weights)
    if unmaterialised:
        shown = ", ".join(unmaterialised[:8]) + (f" +{len(unmaterialised) - 8} more" if len(unmaterialised) > 8 else "")
        ctx.say("unmaterialised", logging.INFO, f"nnhealth: {shown} have no values yet (lazy, or on the meta "
                "device) when watched: the initialisation checks skip them; the other checks start once they have")
    return owners


def _record_scale(meta: dict, weights: list) -> None:
    """init_std and init_gain of every weight: one host copy, at watch time (not inside a step)."""
    if not weights:
        return
    rows = header_rows([x for _, x in weights])  # numpy for CPU weights, tensors on their device otherwise
    on_device = [r for r in rows if isinstance(r, torch.Tensor)]
    if on_device:
        host = iter(torch.stack([r.to(on_device[0].device) for r in on_device]).cpu().numpy())
        rows = [next(host) if isinstance(r, torch.Tensor) else r for r in rows]
    for (name, _), row in zip(weights, rows):
        s = Summary(Layout(), row)
        facts = meta[name]
        facts["init_std"] = s.std
        facts["init_gain"] = s.std * math.sqrt(facts["fan_in"])


def record_follows(meta: dict, owners: dict[str, str], follows: dict[str, str]) -> None:
    """Add the activation that follows each weight's layer, with the gain recommended for it."""
    for weight, module in owners.items():
        kind = follows.get(module)
        facts = meta.get(weight)
        if kind is None or facts is None or "activation" in facts:
            continue
        facts["activation"] = kind
        facts["recommended_gain"] = recommended_gain(kind)
        if "init_gain" in facts:
            facts["init_scale"] = facts["init_gain"] / facts["recommended_gain"]
