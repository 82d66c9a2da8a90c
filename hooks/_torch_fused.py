"""Header-only summaries of many tensors at once, with PyTorch's fused ``_foreach`` reductions.

Gradients, parameters and updates are summarised per tensor, but there are
hundreds of tensors: one :func:`~nnhealth.stats.summarize` each would cost
a dozen small kernels per tensor. The ``_foreach`` family (the one
``clip_grad_norm_`` uses) reduces a whole list per call instead, so a
sampled step costs a few calls whatever the number of parameters.

The rows hold the :data:`~nnhealth.stats.summary.HEADER` fields the rules
and dashboards read for each role (norm and non-finite count always; mean
|g| for gradients, mean for parameters), exact for finite tensors; fields
not needed are not computed (NaN), since on a CPU each is a pass over the
whole model's memory. A tensor holding NaN or Inf gets exact ``nonfinite``
and ``count`` values, while its sums and extremes are NaN or infinite (the
reductions cannot skip those values): the non-finite count is what the rules
look at first. Temporaries are made one chunk of tensors at a time, so
memory stays bounded.
"""
from __future__ import annotations

import torch

from nnhealth.stats import Layout, summarize
from nnhealth.stats.summary import HEADER, H

#: a header-only layout: what gradient, parameter and update rows are
HEADER_ONLY = Layout()
#: elements per chunk of temporaries (one chunk of float32 copies is 64 MiB)
CHUNK = 1 << 24
_POWSUM = getattr(torch, "_foreach_powsum", None)


def _fusable(x: torch.Tensor) -> bool:
    return (x.layout == torch.strided and x.is_floating_point() and x.numel() > 0
            and type(x) in (torch.Tensor, torch.nn.Parameter))


def _chunks(tensors: list) -> list[list[int]]:
    """Positions of ``tensors`` cut into runs of at most CHUNK elements (a bigger tensor alone)."""
    out, run, size = [], [], 0
    for i, x in enumerate(tensors):
        n = x.numel()
        if run and size + n > CHUNK:
            out.append(run)
            run, size = [], 0
        run.append(i)
        size += n
    if run:
        out.append(run)
    return out


#: the fields each role needs (besides count, sum of squares, non-finite count, samples, always
#: measured): gradients their mean |g|, parameters their mean; an update only its norm
GRADIENT = ("abssum",)
PARAMETER = ("sum",)
NORM = ()
EVERY_FIELD = ("sum", "abssum", "min", "max")


def _fused_columns(xs: list, fields) -> dict[str, list]:
    """CUDA: the ``_foreach`` kernels reduce the whole list in a few launches (the signed sum from
    the positive part, ``2 * sum(max(x, 0)) - sum|x|``; the non-finite count from ``0 * x``, which
    is 0 exactly where x is finite)."""
    cols = {"nonfinite": list(torch._foreach_norm(torch._foreach_mul(xs, 0.0), 0))}
    if "abssum" in fields or "sum" in fields:
        abssum = torch._foreach_norm(xs, 1)
        cols["abssum"] = list(abssum)
        if "sum" in fields:
            possum = torch._foreach_norm(torch._foreach_clamp_min(xs, 0.0), 1)
            cols["sum"] = [2 * p - a for p, a in zip(possum, abssum)]
    if "max" in fields:
        cols["max"] = list(torch._foreach_max(xs))
    if "min" in fields:
        cols["min"] = [-m for m in torch._foreach_max(torch._foreach_neg(xs))]
    return cols


def _looped_columns(xs: list, fields) -> dict[str, list]:
    """CPU (where ``_foreach`` is a loop anyway): plain vectorised reductions per tensor, and the
    element-wise temporaries written into one reused scratch buffer instead of new memory."""
    scratch = torch.empty(max(x.numel() for x in xs), dtype=xs[0].dtype)
    cols: dict[str, list] = {name: [] for name in ("nonfinite",) + tuple(fields)}
    for x in xs:
        buf = scratch[:x.numel()].view(x.shape)
        # 0 * x is 0 where x is finite and NaN elsewhere; NaN -> 1 and a sum counts them
        zeroed = torch.mul(x, 0.0, out=buf)
        cols["nonfinite"].append(torch.nan_to_num(zeroed, nan=1.0, out=buf).sum())
        if "sum" in cols:
            cols["sum"].append(x.sum())
        if "abssum" in cols:
            cols["abssum"].append(torch.abs(x, out=buf).sum())
        if "min" in cols:
            cols["min"].append(x.min())
        if "max" in cols:
            cols["max"].append(x.max())
    return cols


def _group_columns(tensors: list, fields) -> dict[str, torch.Tensor]:
    """Per-field float64 columns for a list of same-device, same-dtype, non-empty tensors."""
    acc = torch.float64 if tensors[0].dtype == torch.float64 else torch.float32
    columns = _fused_columns if tensors[0].device.type == "cuda" else _looped_columns
    cols: dict[str, list] = {}
    for run in _chunks(tensors):
        xs = [tensors[i] for i in run]
        if _POWSUM is not None:
            sumsq = _POWSUM(xs, 2, dtype=acc)
        else:
            sumsq = [n * n for n in torch._foreach_norm(xs, 2, dtype=acc)]
        cols.setdefault("sumsq", []).extend(sumsq)
        for name, values in columns(xs, fields).items():
            cols.setdefault(name, []).extend(values)
    return {k: torch.stack(vs).to(torch.float64) for k, vs in cols.items()}


_NUMELS: dict = {}


def _numels(tensors: list, device) -> torch.Tensor:
    """Element counts as a float64 vector on ``device``, made without a blocking host copy."""
    sizes = tuple(int(x.numel()) for x in tensors)
    key = (sizes, device)
    got = _NUMELS.get(key)
    if got is None:
        host = torch.tensor(sizes, dtype=torch.float64)
        if device.type == "cuda":
            got = host.pin_memory().to(device, non_blocking=True)
        else:
            got = host.to(device)
        if len(_NUMELS) > 64:  # parameter lists rarely change; keep the cache small anyway
            _NUMELS.clear()
        _NUMELS[key] = got
    return got


def _group_rows(tensors: list, fields) -> torch.Tensor:
    """[len(tensors), len(HEADER)] float64 rows on the tensors' device; unmeasured fields are NaN."""
    c = _group_columns(tensors, fields)
    numel = _numels(tensors, tensors[0].device)
    rows = torch.full((len(tensors), len(HEADER)), float("nan"), dtype=torch.float64,
                      device=tensors[0].device)
    rows[:, H["count"]] = numel - c["nonfinite"]
    rows[:, H["saturated"]] = 0.0
    rows[:, H["samples"]] = numel
    for name, column in c.items():
        rows[:, H[name]] = column
    return rows


def header_rows(tensors: list, fields=EVERY_FIELD) -> list:
    """One packed header-only summary per tensor (layout :data:`HEADER_ONLY`), on its device.

    Always measured: count, sum of squares, non-finite count, samples (and
    saturated, 0 for these linear values); of ``sum``, ``abssum``, ``min`` and
    ``max`` only those in ``fields`` (each costs a pass over the memory); the
    rest, and ``zeros`` and ``positive``, are NaN: not measured. Strided
    floating-point tensors are reduced with ``_foreach`` calls grouped by
    device and dtype; anything else (sparse, complex, empty, integer, tensor
    subclasses) goes through :func:`~nnhealth.stats.summarize`, which measures
    every field.
    """
    out: list = [None] * len(tensors)
    groups: dict = {}
    for i, x in enumerate(tensors):
        x = x.detach()
        if _fusable(x):
            groups.setdefault((x.device, x.dtype), []).append((i, x))
        else:
            out[i] = summarize(x, "linear")[1]
    for members in groups.values():
        rows = _group_rows([x for _, x in members], tuple(fields))
        for (i, _), row in zip(members, rows.unbind(0)):
            out[i] = row
    return out


def scaled(rows: list, scale) -> list:
    """Rows of tensors that were ``scale`` times too large (GradScaler's unscaled view)."""
    inv = 1.0 / scale.detach().to(torch.float64).reshape(())
    one = torch.ones_like(inv)
    by_field = {"sum": inv, "sumsq": inv * inv, "abssum": inv, "min": inv, "max": inv}
    factor = torch.stack([by_field.get(name, one) for name in HEADER])  # no host copy
    return [row * factor.to(row.device) for row in rows]


def masked(rows: list, skipped) -> list:
    """Rows made NaN when ``skipped`` (a device flag) is set: a step the optimizer did not take."""
    flag = skipped.reshape(()) > 0
    return [torch.where(flag.to(row.device), torch.full_like(row, float("nan")), row) for row in rows]
