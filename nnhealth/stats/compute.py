"""Compute a packed summary of one array in a single pass on its own device.

Written once against :mod:`nnhealth.stats.backend`, so numpy arrays are
summarised by numpy and torch tensors by torch, without a host round trip.
"""
from __future__ import annotations

from .backend import ops_for
from .histogram import NUM_BUCKETS, bucket_index
from .kinds import Kind, get_kind
from .summary import Layout, Summary


def default_unit_axis(ndim: int) -> int:
    """Units are the last axis of dense activations (batch, features) or
    (batch, time, features); the channel axis (1) of image-like ones
    (N, C, H, W) and (N, C, D, H, W)."""
    return 1 if ndim >= 4 else -1


def summarize(x, kind: str | Kind = "linear", *, hist: bool = False, units: bool = False,
              moments: bool = False, unit_axis: int | None = None, ops=None):
    """Packed summary of ``x``: returns ``(layout, vector)``, vector on x's device.

    ``units`` adds per-unit fired/saturated counts along ``unit_axis``;
    ``moments`` adds per-unit sums and sums of squares (feature scales).
    A 1-D array is one sample; a 0-D array has no units.
    """
    ops = ops or ops_for(x)
    kind = kind if isinstance(kind, Kind) else get_kind(kind)
    compiled = getattr(ops, "summarize", None)
    if compiled is not None:  # a library that compiles this whole function into one program (JAX)
        return compiled(x, kind, hist=hist, units=units, moments=moments, unit_axis=unit_axis)
    a = ops.as_float(x)
    finite = ops.isfinite(a)
    z = ops.where(finite, a, ops.zeros_like(a))
    sat = kind.saturated(ops, z) & finite if kind.saturated is not None else None
    n_units, samples = 0, a.size if hasattr(a, "size") and not callable(a.size) else a.numel()
    unit_parts = []
    if (units or moments) and a.ndim >= 1:
        axis = default_unit_axis(a.ndim) if unit_axis is None else unit_axis
        rows = ops.units_last(z if a.ndim > 1 else z.reshape(1, -1), axis if a.ndim > 1 else -1)
        n_units = rows.shape[-1]
        samples = rows.shape[0]
        unit_parts.append(ops.count(rows > 0, axis=0))
        if sat is not None:
            srows = ops.units_last(sat if a.ndim > 1 else sat.reshape(1, -1), axis if a.ndim > 1 else -1)
            unit_parts.append(ops.count(srows, axis=0))
        else:
            unit_parts.append(ops.count(rows != rows, axis=0))  # zeros, on the right device
        if moments:
            unit_parts.append(ops.sum(rows, axis=0))
            unit_parts.append(ops.sum(rows * rows, axis=0))
    layout = Layout(hist=hist, units=n_units, moments=moments and n_units > 0)
    parts = [
        ops.count(finite),
        ops.sum(z),
        ops.sum(z * z),
        ops.sum(ops.abs(z)),
        ops.amin(ops.where(finite, a, ops.zeros_like(a) + float("inf"))),
        ops.amax(ops.where(finite, a, ops.zeros_like(a) - float("inf"))),
        ops.count(~finite),
        ops.count((z == 0) & finite),
        ops.count(z > 0),
        ops.count(sat) if sat is not None else 0.0,
        float(samples),
    ]
    if hist:
        idx = bucket_index(ops, z)
        # non-finite values go to an overflow bucket that is cut off
        idx = ops.where(finite, idx, ops.zeros_like(idx) + NUM_BUCKETS)
        parts.append(ops.bincount(idx, NUM_BUCKETS + 1)[:NUM_BUCKETS])
    parts.extend(unit_parts)
    return layout, ops.pack(parts)


def summary_of(x, kind: str | Kind = "linear", **options) -> Summary:
    """Host :class:`Summary` of ``x`` (a convenience for tests and numpy users)."""
    layout, vector = summarize(x, kind, **options)
    ops = ops_for(vector)
    (host,) = ops.fetch([vector])
    return Summary(layout, host)
