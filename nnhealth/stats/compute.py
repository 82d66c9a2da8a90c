"""Compute a packed summary of one array in a few passes on its own device.

Written once against :mod:`nnhealth.stats.backend`, so numpy arrays are
summarised by numpy and torch tensors by torch, without a host round trip.
Arrays in host memory (numpy, and torch tensors on the CPU) take the
vectorised host kernel of :mod:`.host`; torch tensors on a CUDA device take
the few-kernel path of :mod:`.torch_device`; anything else takes the
branch-free path below, which replaces non-finite values once and reuses its
masks (JAX compiles that same path into one program).
"""
from __future__ import annotations

from .backend import ops_for
from .histogram import NUM_BUCKETS, ZERO, bucket_index
from .host import summarize_host
from .kinds import Kind, get_kind
from .summary import Layout, Summary
from .torch_device import summarize_tensor


def default_unit_axis(ndim: int) -> int:
    """Units are the last axis of dense activations (batch, features) or
    (batch, time, features); the channel axis (1) of image-like ones
    (N, C, H, W) and (N, C, D, H, W)."""
    return 1 if ndim >= 4 else -1


def summarize(x, kind: str | Kind = "linear", *, hist: bool = False, units: bool = False,
              moments: bool = False, unit_axis: int | None = None, ops=None, host_vector: bool = False):
    """Packed summary of ``x``: returns ``(layout, vector)``, vector on x's device.

    ``units`` adds per-unit fired/saturated counts along ``unit_axis``;
    ``moments`` adds per-unit sums and sums of squares (feature scales).
    A 1-D array is one sample; a 0-D array has no units. ``host_vector``: the
    vector of data in host memory (a CPU tensor's too) stays the numpy array
    it is computed as, for a caller that keeps host numbers on the host.
    """
    ops = ops or ops_for(x)
    kind = kind if isinstance(kind, Kind) else get_kind(kind)
    compiled = getattr(ops, "summarize", None)
    if compiled is not None:  # a library that compiles this whole function into one program (JAX)
        return compiled(x, kind, hist=hist, units=units, moments=moments, unit_axis=unit_axis)
    host = getattr(ops, "host_view", None)
    a = host(x) if host is not None else None
    if a is not None and a.size:
        layout, vector = summarize_host(a, kind, hist=hist, units=units, moments=moments, unit_axis=unit_axis,
                                        default_axis=default_unit_axis)
        return layout, vector if host_vector else ops.from_host(vector)
    if getattr(ops, "name", None) == "torch" and ops.device.type == "cuda":  # (ROCm reports "cuda" too)
        # measured there; other accelerators (MPS, XLA) keep the generic path, whose ops all of them have
        got = summarize_tensor(ops.t, ops, x, kind, hist, units, moments, unit_axis, default_unit_axis)
        if got is not None:
            return got
    return _summarize_on_device(ops, x, kind, hist, units, moments, unit_axis)


def _summarize_on_device(ops, x, kind: Kind, hist, units, moments, unit_axis):
    """The branch-free path: correct for NaN and Inf without knowing in advance whether there are any
    (that would need a host synchronisation): they are replaced by zeros once, and the fields they
    touch (count, zeros, min, max, the zero bucket) are corrected by their count."""
    a = ops.as_float(x)
    finite = ops.isfinite(a)
    z = ops.where(finite, a, ops.zeros_like(a))
    size = a.size if hasattr(a, "size") and not callable(a.size) else a.numel()
    nonfinite = ops.count(~finite)
    sat = kind.saturated(ops, z) & finite if kind.saturated is not None else None
    positive = z > 0
    n_units, samples = 0, size
    unit_parts = []
    if (units or moments) and a.ndim >= 1:
        axis = default_unit_axis(a.ndim) if unit_axis is None else unit_axis
        axis = axis if a.ndim > 1 else -1

        def rows_of(t):
            return ops.units_last(t if a.ndim > 1 else t.reshape(1, -1), axis)

        rows = rows_of(z)
        n_units, samples = rows.shape[-1], rows.shape[0]
        unit_parts.append(ops.count(rows_of(positive), axis=0))
        unit_parts.append(ops.count(rows_of(sat), axis=0) if sat is not None
                          else ops.count(rows != rows, axis=0))  # zeros, on the right device
        if moments:
            unit_parts.append(ops.sum(rows, axis=0))
            unit_parts.append(ops.sum(rows * rows, axis=0))
    layout = Layout(hist=hist, units=n_units, moments=moments and n_units > 0)
    parts = [
        float(size) - nonfinite,
        ops.sum(z),
        ops.sum(z * z),
        ops.sum(ops.abs(z)),
        ops.amin(ops.where(finite, a, ops.zeros_like(a) + float("inf"))),
        ops.amax(ops.where(finite, a, ops.zeros_like(a) - float("inf"))),
        nonfinite,
        ops.count(z == 0) - nonfinite,
        ops.count(positive),
        ops.count(sat) if sat is not None else 0.0,
        float(samples),
    ]
    if hist:
        counts = ops.bincount(bucket_index(ops, z), NUM_BUCKETS)
        # the replaced values sit in the zero bucket; take them out again
        parts.extend([counts[:ZERO], counts[ZERO:ZERO + 1] - nonfinite, counts[ZERO + 1:]])
    parts.extend(unit_parts)
    return layout, ops.pack(parts)


def summary_of(x, kind: str | Kind = "linear", **options) -> Summary:
    """Host :class:`Summary` of ``x`` (a convenience for tests and numpy users)."""
    layout, vector = summarize(x, kind, **options)
    ops = ops_for(vector)
    (host,) = ops.fetch([vector])
    return Summary(layout, host)
