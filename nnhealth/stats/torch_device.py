"""The packed summary of a tensor on an accelerator, in few kernels.

On a GPU the cost of watching a step is mostly the CPU launching kernels:
the generic branch-free path of :mod:`.compute` takes about 60 small ones
per activation, more than the statistics themselves cost the device. This
path computes the same vector in about 25:

- finiteness is ``x - x == 0`` (two kernels; ``isfinite`` takes four);
- the boolean masks (finite, zero, positive, saturated) are stacked and
  counted in one reduction, per unit and then in total;
- the histogram is one ``bucketize`` against the exact bucket boundaries of
  the float64 definition (those the C kernel uses) and one ``histc`` of the
  bucket numbers (per-block counts in shared memory: a ReLU's zeros, half
  its values, do not queue on one global counter as with ``index_add_``);
  non-finite values go to a slot past the last bucket, so nothing is
  corrected afterwards;
- the header is put together by one gather and one multiply-add with
  constants cached per device (and offsets per size, made from scalars).

Nothing here reads a value back to the host: every shape is known from the
tensor's shape alone.
"""
from __future__ import annotations

import math

import numpy as np

from .histogram import NUM_BUCKETS, signed_boundaries
from .kinds import Kind
from .summary import HEADER, Layout

#: below this many values, ``torch.histc``'s float32 counts are exact
HISTC_EXACT = 1 << 24
#: device constants made once (boundaries, gather indices, scales, zeros, element counts), keyed by
#: what shapes them; shared with the header rows of :mod:`nnhealth.hooks._torch_fused`
_CONSTANTS: dict = {}


def device_constant(key, make):
    """``make()``, made once per ``key`` (a few hundred kept: shapes rarely change)."""
    got = _CONSTANTS.get(key)
    if got is None:
        if len(_CONSTANTS) > 512:
            _CONSTANTS.clear()
        got = _CONSTANTS[key] = make()
    return got


def to_device(torch, array: np.ndarray, device):
    """A host constant on ``device`` without a blocking copy (pinned memory, non-blocking)."""
    host = torch.from_numpy(np.array(array))  # a writable copy (the boundaries are read-only)
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)


def _header_map(torch, device, saturation: bool):
    """(index, scale, units): HEADER = offset + scale * pre[index], where pre holds the counts of
    finite, zero, positive (and saturated) values, then sum, sum of squares, sum |x|, min, max; and
    the offset is size * units[0] + samples * units[1] (non-finite = size - finite)."""
    counts = 4 if saturation else 3
    at = {"count": 0, "zeros": 1, "positive": 2, "saturated": 3,
          "sum": counts, "sumsq": counts + 1, "abssum": counts + 2, "min": counts + 3, "max": counts + 4}
    index, scale, units = np.zeros(len(HEADER), np.int64), np.ones(len(HEADER)), np.zeros((2, len(HEADER)))
    for i, name in enumerate(HEADER):
        if name == "nonfinite":  # size - finite
            index[i], scale[i], units[0, i] = 0, -1.0, 1.0
        elif name == "samples":
            index[i], scale[i], units[1, i] = 0, 0.0, 1.0  # times a count: never 0 * inf
        elif name == "saturated" and not saturation:
            index[i], scale[i] = 0, 0.0
        else:
            index[i] = at[name]
    return tuple(to_device(torch, a, device) for a in (index, scale, units))


#: header offsets per (device, size, samples): made on the device from scalars (no copy), and kept
#: for the sizes seen first; tensors whose size changes every step (sequences of varying length)
#: beyond that get theirs made again, two small kernels, rather than churning a cache
_OFFSETS: dict = {}
OFFSETS_KEPT = 256


def _offset(units, device, size: int, samples: int):
    key = (device, size, samples)
    got = _OFFSETS.get(key)
    if got is None:
        got = (units[0] * float(size)).add_(units[1], alpha=float(samples))
        if len(_OFFSETS) < OFFSETS_KEPT:
            _OFFSETS[key] = got
    return got


def summarize_tensor(torch, ops, x, kind: Kind, hist: bool, units: bool, moments: bool, unit_axis, default_axis):
    """``(layout, vector)`` as :func:`~nnhealth.stats.summarize` makes it, for a torch tensor on its own
    device (any device: the CPU runs it too, which is how it is tested); None when it holds no values."""
    a = ops.as_float(x)
    device, size, ndim = a.device, a.numel(), a.ndim
    if size == 0:
        return None
    finite = (a - a) == 0  # two kernels (torch.isfinite takes four): x - x is NaN just for NaN and Inf
    z = torch.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)  # one kernel, no scalar tensor made
    masks = [finite, a == 0, z > 0]
    if kind.saturated is not None:
        masks.append(kind.saturated(ops, z) & finite)
    stacked = torch.stack(masks)
    f64 = torch.float64
    n_units, samples, per_unit = 0, size, None
    if (units or moments) and ndim >= 1:
        axis = (default_axis(ndim) if unit_axis is None else unit_axis) if ndim > 1 else -1
        axis %= ndim
        n_units = a.shape[axis]
        samples = math.prod(a.shape[:axis] + a.shape[axis + 1:])
        others = [d + 1 for d in range(ndim) if d != axis]  # of a stack: dim 0 is the stacked one
        # counted in float64 (exact up to 2**53): the vector's type, with no conversion of its own
        per_unit = stacked.sum(dim=others, dtype=f64) if others else stacked.to(f64)  # (masks, units)
        counts = per_unit.sum(dim=1)
    else:
        counts = stacked.reshape(len(masks), -1).sum(dim=1, dtype=f64)
    squares = z * z
    high = torch.nan_to_num(a, nan=-math.inf, posinf=-math.inf, neginf=-math.inf)
    low = torch.nan_to_num(a, nan=math.inf, posinf=math.inf, neginf=math.inf)  # also the histogram's input:
    # non-finite values past the end; sums accumulate in float64, as the C kernel's do: a saturated
    # layer's variance (mean near 1, small spread) is far below float32's rounding of its sum of squares
    sums = torch.stack([z.sum(dtype=f64), squares.sum(dtype=f64), torch.linalg.vector_norm(z, 1, dtype=f64)])
    extremes = torch.stack([low.amin(), high.amax()])  # the data's type
    # one type per stack: CUDA concatenates tensors of mixed types one at a time, a copy each
    pre = torch.cat([counts, sums, extremes.to(f64)])
    index, scale, units = device_constant(("header", device, len(masks) == 4),
                                          lambda: _header_map(torch, device, len(masks) == 4))
    parts = [torch.addcmul(_offset(units, device, size, samples), pre[index], scale)]
    if hist:
        precision = np.float64 if a.dtype == torch.float64 else np.float32
        bounds = device_constant(("bounds", device, a.dtype),
                                 lambda: to_device(torch, signed_boundaries(precision), device))
        bucket = torch.bucketize(low.reshape(-1), bounds, right=True)
        if size < HISTC_EXACT and not torch.are_deterministic_algorithms_enabled():
            # per-block histograms in shared memory: no contention on one bucket
            slots = torch.histc(bucket.to(torch.float32), bins=NUM_BUCKETS + 1, min=0, max=NUM_BUCKETS + 1)
        else:  # float32 counts would round, or histc is refused in deterministic mode: index_add_
            one = device_constant(("one", device), lambda: torch.ones((), dtype=torch.float64, device=device))
            slots = torch.zeros(NUM_BUCKETS + 1, dtype=torch.float64, device=device)
            slots.index_add_(0, bucket, one.expand(size))
        parts.append(slots[:NUM_BUCKETS].to(torch.float64))
    if per_unit is not None:
        parts.append(per_unit[2])
        parts.append(per_unit[3] if len(masks) == 4 else
                     device_constant(("zeros", device, n_units),
                                     lambda: torch.zeros(n_units, dtype=torch.float64, device=device)))
        if moments:
            both = torch.stack([z, squares])
            parts.append((both.sum(dim=others, dtype=f64) if others else both.to(f64)).reshape(-1))
    layout = Layout(hist=hist, units=n_units, moments=moments and n_units > 0)
    return layout, torch.cat(parts)
