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

import math

import numpy as np
import torch

from nnhealth.stats import Layout, compiled, summarize
from nnhealth.stats.host import ONES, centred_sums, work_array
from nnhealth.stats.summary import HEADER, H
from nnhealth.stats.torch_device import device_constant, to_device

#: a header-only layout: what gradient, parameter and update rows are
HEADER_ONLY = Layout()
#: elements per chunk of temporaries (one chunk of float32 copies is 64 MiB)
CHUNK = 1 << 24
_POWSUM = getattr(torch, "_foreach_powsum", None)


#: tensor types reduced as they are (subclasses may redefine the reductions: they are summarised)
_PLAIN = (torch.Tensor, torch.nn.Parameter)
#: the types the host kernels read
_HOST_FLOATS = (torch.float32, torch.float64)


def _fusable(x: torch.Tensor) -> bool:
    """Checked per tensor on every sampled step (hundreds of them in a large model): cheap tests first."""
    return type(x) in _PLAIN and x.layout == torch.strided and x.is_floating_point() and x.numel() > 0


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


def _fused_columns(xs: list, fields) -> dict:
    """CUDA: the ``_foreach`` kernels reduce the whole list in a few launches, the sums accumulating in
    float64 (the signed sum comes from the positive part, ``possum``: ``2 * sum(max(x, 0)) - sum|x|``);
    the non-finite counts in a few more (:func:`_nonfinite_counts`). Columns are lists of 0-d tensors,
    the counts one vector."""
    f64 = torch.float64
    cols = {"nonfinite": _nonfinite_counts(xs)}
    if "abssum" in fields or "sum" in fields:
        cols["abssum"] = list(torch._foreach_norm(xs, 1, dtype=f64))
        if "sum" in fields:  # the caller makes the sum of it (on the stacked column: one kernel)
            cols["possum"] = list(torch._foreach_norm(torch._foreach_clamp_min(xs, 0.0), 1, dtype=f64))
    if "max" in fields:
        cols["max"] = list(torch._foreach_max(xs))
    if "min" in fields:
        cols["min"] = [-m for m in torch._foreach_max(torch._foreach_neg(xs))]
    return cols


def _nonfinite_counts(xs: list) -> torch.Tensor:
    """Per tensor, its number of NaN and infinite values (int32), in a handful of kernels whatever the
    number of tensors (a count is a norm with p = 0, and CUDA fuses only p = 1, 2 and inf: a kernel per
    tensor, three per parameter a sampled step): ``x - x`` of all of them in one flat buffer is NaN
    exactly there; one running count over it is read at each tensor's end."""
    sizes = tuple(x.numel() for x in xs)
    device = xs[0].device
    flat = torch.cat([x.reshape(-1) for x in xs])
    flags = flat.sub_(flat).ne(0)  # NaN != 0
    del flat
    running = flags.cumsum(0, dtype=torch.int32)  # exact up to 2**31 non-finite values per chunk
    ends = device_constant(("ends", sizes, device), lambda: to_device(torch, np.cumsum(sizes) - 1, device))
    zero = device_constant(("zero", torch.int32, device), lambda: torch.zeros(1, dtype=torch.int32, device=device))
    return torch.diff(running[ends], prepend=zero)


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


#: elements per cache-sized piece of a tensor on the CPU: every field of a piece is read while it is in
#: the core's cache, so a tensor costs one trip through memory however many fields are measured (at
#: most the host kernel's CHUNK: its work arrays and ones are that long)
HOST_CHUNK = 1 << 17


def _host_columns(tensors: list, fields, copies: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(rows of (sum of squares, sum, sum of |x|, min, max), non-finite counts) of CPU float32/float64
    tensors of one type: their memory (no copy; read by address), each read a cache-sized piece at a
    time, every field in one pass, by one call of the compiled kernel for the whole list when there is
    one; by numpy otherwise, and for tensors holding NaN or Inf. When the sum of squares is finite, so
    is every value, and the non-finite count is 0 without a pass of its own (on the CPU reading that
    number waits for nothing); otherwise it is counted. ``copies``: buffers the tensors are also copied
    into, by the kernel in the same pass. Fields not in ``fields`` may be left unmeasured."""
    kernels = compiled.kernels()
    if kernels is None:
        if copies is not None:
            torch._foreach_copy_(copies, tensors)
        rows = np.full((len(tensors), 5), np.nan)
    elif isinstance(kernels, compiled.AddressKernels):
        rows = _columns_by_address(kernels, tensors, copies)
    else:
        into = None if copies is None else [c.numpy() if c.is_contiguous() else None for c in copies]
        rows = kernels.columns([_flat(x) for x in tensors], into)
        if into is not None and any(view is None for view in into):  # not contiguous: copied here
            for c, x, view in zip(copies, tensors, into):
                if view is None:
                    c.copy_(x)
    nonfinite = np.zeros(len(tensors))
    for i in np.flatnonzero(~np.isfinite(rows[:, :3]).all(axis=1)).tolist():  # NaN or Inf: numpy measures
        rows[i], nonfinite[i] = _numpy_measured(tensors[i], fields)
    return rows, nonfinite


def _numpy_measured(x: torch.Tensor, fields) -> tuple[list, float]:
    """((sum of squares, sum, sum of |x|, min, max), non-finite count) of a CPU tensor whose kernel sums
    were not finite, by numpy: exact for NaN and Inf (huge values overflowing the sums come back finite,
    with a count of 0)."""
    a = _flat(x)
    with np.errstate(all="ignore"):  # huge values overflow the sums to inf: that is the signal
        five = list(_numpy_columns(a, fields)[1:])
    return five, 0.0 if math.isfinite(five[0]) else float(a.size - np.count_nonzero(np.isfinite(a)))


#: where the host kernel's rows hold each field, and where header rows do
_KERNEL_AT = {"sumsq": 0, "sum": 1, "abssum": 2, "min": 3, "max": 4}
_COUNT, _SAMPLES, _NONFINITE, _SATURATED = H["count"], H["samples"], H["nonfinite"], H["saturated"]


def _host_rows_of(tensors: list, fields, copies: list | None) -> np.ndarray:
    """[len(tensors), len(HEADER)] float64 header rows of CPU float tensors of one type: written by the
    kernel (:class:`~nnhealth.stats.compiled.RowKernels`), or made from the columns of the others in a
    few array operations. On a sampled step every line here runs between the training's own kernels,
    with the interpreter's caches cold: each array operation costs several microseconds."""
    kernels = compiled.kernels()
    if isinstance(kernels, compiled.RowKernels):
        return _kernel_rows(kernels, tensors, fields, copies)
    five, nonfinite = _host_columns(tensors, fields, copies)
    return _header_rows(five, nonfinite, np.fromiter((x.numel() for x in tensors), dtype=np.float64,
                                                     count=len(tensors)), fields)


#: the bit of each optional field in the kernel's mask
_FIELD_BITS = {"sum": 1, "abssum": 2, "min": 4, "max": 8}


def _field_mask(fields, cache: dict = {}) -> int:  # noqa: B006 (per process)
    got = cache.get(fields)
    if got is None:
        got = cache[fields] = sum(_FIELD_BITS[f] for f in set(fields) if f in _FIELD_BITS)
    return got


def _kernel_rows(kernels, tensors: list, fields, copies: list | None, plain: tuple | None = None) -> np.ndarray:
    """The header rows the kernel writes, read by address (``plain``: the tensors' width, addresses and
    counts, from :func:`_plain_host`); those it flags (NaN or Inf among the values, or sums that
    overflowed) measured again by numpy."""
    if plain is None:
        held = [_readable(x) for x in tensors]  # alive, and valid, until the call returns
        width, (addresses, counts) = held[0].element_size(), _addresses(held)
    else:
        held, (width, addresses, counts) = tensors, plain
    into = _copy_addresses(copies, held, counts)
    rows, bad = kernels.header_rows_at(addresses, counts, width,
                                       np.zeros(len(held), np.int64) if into is None else into,
                                       _field_mask(fields))
    _copy_rest(copies, tensors, into)
    if bad:
        for i in np.flatnonzero(np.isnan(rows[:, _NONFINITE])).tolist():
            five, nonfinite = _numpy_measured(tensors[i], fields)
            rows[i] = _header_rows(np.array([five]), np.array([nonfinite]), counts[i:i + 1].astype(np.float64),
                                   fields)[0]
    return rows


def _header_rows(five: np.ndarray, nonfinite: np.ndarray, numel: np.ndarray, fields) -> np.ndarray:
    """Header rows from the kernel's column rows (sum of squares, sum, sum of |x|, min, max): of the
    optional fields those in ``fields``, the others NaN."""
    rows = np.full((len(numel), len(HEADER)), np.nan)
    rows[:, _COUNT] = numel - nonfinite
    rows[:, _SAMPLES] = numel
    rows[:, _NONFINITE] = nonfinite
    rows[:, _SATURATED] = 0.0
    to, at = _field_places(tuple(fields))
    rows[:, to] = five[:, at]
    return rows


def _field_places(fields: tuple, cache: dict = {}) -> tuple[list, list]:  # noqa: B006 (per process)
    """(header places, kernel row places) of the sum of squares and ``fields``."""
    got = cache.get(fields)
    if got is None:
        names = ("sumsq",) + tuple(f for f in fields if f != "sumsq")
        got = cache[fields] = ([H[f] for f in names], [_KERNEL_AT[f] for f in names])
    return got


def _readable(x: torch.Tensor) -> torch.Tensor:
    """``x`` as memory the kernels can read by address: contiguous, without a lazy negation."""
    if x.is_neg():
        x = x.resolve_neg()
    return x if x.is_contiguous() else x.contiguous()


def _addresses(tensors: list) -> tuple[np.ndarray, np.ndarray]:
    """(where each tensor's values start, how many it holds), int64: what the kernels read."""
    n = len(tensors)
    return (np.fromiter((x.data_ptr() for x in tensors), dtype=np.int64, count=n),
            np.fromiter((x.numel() for x in tensors), dtype=np.int64, count=n))


def _copy_addresses(copies: list | None, held: list, counts: np.ndarray | None = None) -> np.ndarray | None:
    """Where the kernel copies each tensor of ``held`` (int64; 0 for a buffer that is not contiguous),
    or None without copies; a buffer of another type or size is refused. :class:`HostBuffers` of
    those types and ``counts`` (the tensors' sizes) know their addresses."""
    if copies is None:
        return None
    if (isinstance(copies, HostBuffers) and counts is not None and held[0].dtype == held[-1].dtype
            and copies.hold(counts, held[0].dtype)):
        return copies.addresses
    for c, x in zip(copies, held):
        if c.dtype != x.dtype or c.numel() != x.numel() or not c.is_cpu:
            raise ValueError(f"copy of {x.dtype} values ({x.numel()}) into a buffer of {c.dtype} ({c.numel()})")
    return np.fromiter((c.data_ptr() if c.is_contiguous() else 0 for c in copies), dtype=np.int64,
                       count=len(copies))


def _copy_rest(copies: list | None, tensors: list, into: np.ndarray | None) -> None:
    """Copy the tensors whose buffers the kernel could not write (not contiguous)."""
    if into is not None and not into.all():
        for c, x, address in zip(copies, tensors, into.tolist()):
            if not address:
                c.copy_(x)


def _columns_by_address(kernels, tensors: list, copies: list | None) -> np.ndarray:
    """The kernel's rows of CPU tensors of one float type, read by address (a numpy view of each costs
    more than its numbers, for small tensors); copied into ``copies`` in the same pass, where given
    (buffers of the tensors' types and sizes; one that is not contiguous is filled afterwards)."""
    held = [_readable(x) for x in tensors]  # alive, and valid, until the call returns
    addresses, counts = _addresses(held)
    into = _copy_addresses(copies, held)
    rows = kernels.columns_at(addresses, counts, held[0].element_size(), into)
    _copy_rest(copies, tensors, into)
    return rows


def _numpy_columns(a: np.ndarray, cols: dict) -> tuple:
    """(finite, sumsq, sum, abssum, min, max) of flat ``a`` (the fields not in ``cols`` left out): the
    sum of squares a BLAS dot product, the rest as asked, each piece's while it is in the cache."""
    scratch, ones = work_array(a.dtype, size=HOST_CHUNK), ONES[a.dtype]
    sumsq = total = abssum = 0.0
    lo, hi = math.inf, -math.inf
    for start in range(0, a.size, HOST_CHUNK):
        piece = a[start:start + HOST_CHUNK]
        sumsq += float(np.dot(piece, piece))
        if "sum" in cols:  # torch's vectorised pairwise sum, on the same memory; read through numpy
            total += float(torch.from_numpy(piece).sum().numpy())
        if "abssum" in cols:  # |x| into a reused buffer, summed by a BLAS dot product with ones
            abssum += float(np.dot(np.abs(piece, out=scratch[:piece.size]), ones[:piece.size]))
        if "min" in cols:
            lo = min(lo, float(piece.min()))
        if "max" in cols:
            hi = max(hi, float(piece.max()))
    if "sum" in cols and math.isfinite(sumsq):  # a parameter near 1 with a small spread keeps its spread
        total, sumsq = centred_sums(a, total)
    return math.isfinite(sumsq), sumsq, total, abssum, lo, hi


def _fill(rows, numel, cols: dict):
    """Header rows (numpy or torch, NaN-filled: unmeasured fields stay NaN) from element counts and
    measured columns."""
    rows[:, H["count"]] = numel - cols["nonfinite"]
    rows[:, H["saturated"]] = 0.0
    rows[:, H["samples"]] = numel
    for name, column in cols.items():
        rows[:, H[name]] = column
    return rows


def _host_rows(numel: np.ndarray, cols: dict) -> np.ndarray:
    """[len(numel), len(HEADER)] float64 rows in host memory."""
    return _fill(np.full((len(numel), len(HEADER)), np.nan), numel, cols)


def _on_host(x: torch.Tensor) -> bool:
    """Float32/float64 CPU memory that numpy can view: reduced by the host kernels, rows kept as numpy
    arrays (already where the rules read them: no torch op per row, no copy at the step's end)."""
    return x.is_cpu and x.dtype in _HOST_FLOATS


def _group_columns(tensors: list, fields) -> dict[str, torch.Tensor]:
    """Per-field float64 columns for a list of same-device, same-dtype, non-empty tensors, off the host:
    every reduction's result is stacked and widened by one kernel each, whatever the number of
    tensors and fields (on a GPU each small kernel costs the CPU a launch)."""
    fused = tensors[0].device.type == "cuda"
    # sums in float64 on a GPU (as the CPU kernels accumulate): a parameter near 1 with a small
    # spread (a BatchNorm scale) has a variance far below float32's rounding of its sum of squares
    acc = torch.float64 if fused or tensors[0].dtype == torch.float64 else torch.float32
    columns = _fused_columns if fused else _looped_columns
    cols: dict[str, list] = {}  # field -> per chunk, a list of 0-d tensors or one vector
    for run in _chunks(tensors):
        xs = [tensors[i] for i in run]
        if _POWSUM is not None:
            sumsq = _POWSUM(xs, 2, dtype=acc)
        else:
            sumsq = [n * n for n in torch._foreach_norm(xs, 2, dtype=acc)]
        cols.setdefault("sumsq", []).append(sumsq)
        for name, values in columns(xs, fields).items():
            cols.setdefault(name, []).append(values)
    names, matrix = _one_matrix(cols)
    out = dict(zip(names, matrix.view(len(names), len(tensors)).unbind(0)))
    if "possum" in out:  # the signed sum from the positive part: 2 * sum(max(x, 0)) - sum|x|
        out["sum"] = out.pop("possum") * 2 - out["abssum"]
        if "abssum" not in fields:  # measured for the sum only: left out like any field not asked for
            del out["abssum"]
    return out


def _one_matrix(cols: dict[str, list]) -> tuple[list[str], torch.Tensor]:
    """(field names, their columns end to end in one float64 vector, field after field), from each
    field's pieces (per chunk of tensors, a list of 0-d tensors or a vector). Joined by type, each type
    in one kernel where it can be: CUDA concatenates tensors of mixed types one at a time (a copy each,
    hundreds per step for a large model's list)."""
    by_type: dict = {}
    for name, pieces in cols.items():  # each field's pieces come from one reduction: one type
        first = pieces[0]
        by_type.setdefault((first if isinstance(first, torch.Tensor) else first[0]).dtype, []).append(name)
    names = [name for group in by_type.values() for name in group]
    parts = []
    for group in by_type.values():
        runs, scalars = [], []
        for piece in (piece for name in group for piece in cols[name]):
            if isinstance(piece, torch.Tensor):
                if scalars:
                    runs.append(torch.stack(scalars))
                    scalars = []
                runs.append(piece)
            else:
                scalars.extend(piece)
        if scalars:
            runs.append(torch.stack(scalars))
        parts.append((runs[0] if len(runs) == 1 else torch.cat(runs)).to(torch.float64))
    return names, parts[0] if len(parts) == 1 else torch.cat(parts)


def _numels(tensors: list, device) -> torch.Tensor:
    """Element counts as a float64 vector on ``device``, made without a blocking host copy."""
    sizes = tuple(int(x.numel()) for x in tensors)
    return device_constant(("numels", sizes, device),
                           lambda: to_device(torch, np.array(sizes, dtype=np.float64), device))


def _unmeasured(n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(NaN, 0) float64 columns of ``n`` rows on ``device``: the fields not measured."""
    return device_constant(("unmeasured", n, device), lambda: (
        torch.full((n,), float("nan"), dtype=torch.float64, device=device),
        torch.zeros(n, dtype=torch.float64, device=device)))


def _group_rows(tensors: list, fields, copies: list | None = None):
    """[len(tensors), len(HEADER)] float64 rows on the tensors' device (numpy for host memory);
    unmeasured fields are NaN. The tensors are also copied into ``copies``, when given."""
    if _on_host(tensors[0]):
        return _host_rows_of(tensors, fields, copies)
    if copies is not None:
        torch._foreach_copy_(copies, tensors)
    device = tensors[0].device
    c = _group_columns(tensors, fields)
    numel = _numels(tensors, device)
    c["count"], c["samples"] = numel - c["nonfinite"], numel
    nan, zero = _unmeasured(len(tensors), device)
    return torch.stack([c.get(name, zero if name == "saturated" else nan) for name in HEADER], dim=1)


class HostBuffers(list):
    """Snapshot buffers in host memory, each contiguous and of its tensor's type and size, that know
    where they start: made once, and on every sampled step the kernel copies into them with no check
    or address taken per buffer."""

    def __init__(self, like: list):
        super().__init__(torch.empty_like(x, memory_format=torch.contiguous_format) for x in like)
        self.addresses = np.fromiter((b.data_ptr() for b in self), dtype=np.int64, count=len(self))
        self.counts = np.fromiter((b.numel() for b in self), dtype=np.int64, count=len(self))
        self.dtypes = [b.dtype for b in self]
        self.shapes = [b.shape for b in self]
        #: the buffers' one type (None when they have several)
        self.dtype = self.dtypes[0] if self.dtypes and all(d == self.dtypes[0] for d in self.dtypes) else None

    def fit(self, tensors: list) -> bool:
        """Whether these buffers are those of ``tensors`` (same types and shapes, on the CPU)."""
        return (len(tensors) == len(self) and [x.shape for x in tensors] == self.shapes
                and [x.dtype for x in tensors] == self.dtypes and all(x.is_cpu for x in tensors))

    def hold(self, counts: np.ndarray, dtype) -> bool:
        """Whether these buffers, all of ``dtype``, have the sizes ``counts``: the kernel may read and write
        them by their known addresses for tensors of that type and those sizes."""
        return self.dtype == dtype and np.array_equal(self.counts, counts)


def _plain_host(tensors: list) -> tuple | None:
    """(width, addresses, counts) of tensors the row kernel reads as they are (plain, contiguous, CPU,
    non-empty, one float type, no lazy negation), taken in one loop; None for any other list, or
    without the row kernel. The common case of a sampled step's gradients and parameters: every check
    and address of a tensor here costs a few microseconds between the training's own kernels."""
    if not tensors or not isinstance(compiled.kernels(), compiled.RowKernels):
        return None
    if not _on_host(tensors[0]):
        return None
    dtype = tensors[0].dtype
    addresses, counts = [], []
    for x in tensors:
        if (type(x) not in _PLAIN or x.dtype != dtype or not x.is_cpu or x.layout != torch.strided
                or not x.is_contiguous() or x.is_neg()):
            return None
        n = x.numel()
        if not n:
            return None
        addresses.append(x.data_ptr())
        counts.append(n)
    return tensors[0].element_size(), np.array(addresses, dtype=np.int64), np.array(counts, dtype=np.int64)


def header_rows(tensors: list, fields=EVERY_FIELD, copies: list | None = None) -> list:
    """One packed header-only summary per tensor (layout :data:`HEADER_ONLY`), on its device; with
    ``copies`` (buffers of the tensors' shapes and types), each tensor is also copied into its buffer,
    in host memory by the same pass that measures it (a snapshot of parameters before an update).

    Always measured: count, sum of squares, non-finite count, samples (and
    saturated, 0 for these linear values); of ``sum``, ``abssum``, ``min`` and
    ``max`` only those in ``fields`` (each costs a pass over the memory); the
    rest, and ``zeros`` and ``positive``, are NaN: not measured. Strided
    floating-point tensors are reduced with ``_foreach`` calls grouped by
    device and dtype; anything else (sparse, complex, empty, integer, tensor
    subclasses) goes through :func:`~nnhealth.stats.summarize`, which measures
    every field.
    """
    plain = _plain_host(tensors)
    if plain is not None:
        return list(_kernel_rows(compiled.kernels(), tensors, fields, copies, plain))
    out: list = [None] * len(tensors)
    groups: dict = {}
    for i, x in enumerate(tensors):
        if x.requires_grad:
            x = x.detach()
        if _fusable(x):
            groups.setdefault((None if x.is_cpu else x.device, x.dtype), []).append((i, x))  # CPU: no device object
        else:
            out[i] = summarize(x, "linear")[1]
            if copies is not None:
                copies[i].copy_(x)
    for members in groups.values():
        into = [copies[i] for i, _ in members] if copies is not None else None
        rows = _group_rows([x for _, x in members], tuple(fields), into)
        for (i, _), row in zip(members, rows if isinstance(rows, np.ndarray) else rows.unbind(0)):
            out[i] = row
    return out


def difference_rows(before: list, after: list) -> list:
    """Rows (norm fields, :data:`NORM`) of ``after - before`` per tensor: the update an optimizer step
    applied. ``before`` is a snapshot nnhealth owns and may be overwritten. On the CPU the difference
    is squared and summed as it is made (by the compiled kernel, or by numpy a cache-sized piece at
    a time), never written whole; its sign is irrelevant, since only its norm is measured."""
    if isinstance(before, HostBuffers):  # the snapshot's own buffers: where they are is known
        plain = _plain_host(after)
        if plain is not None and before.hold(plain[2], after[0].dtype):
            return list(_difference_rows_at(compiled.kernels(), plain[0], plain[1], before.addresses, plain[2],
                                            after, before))
    out: list = [None] * len(before)
    host = [i for i, (b, a) in enumerate(zip(before, after))
            if _on_host(b) and a.dtype == b.dtype and _fusable(b) and _fusable(a) and a.shape == b.shape]
    kernels = compiled.kernels() if host else None
    if isinstance(kernels, compiled.RowKernels) and all(after[i].dtype == after[host[0]].dtype for i in host):
        pairs = [_readable(after[i]) for i in host], [_readable(before[i]) for i in host]
        (a, counts), (b, _) = _addresses(pairs[0]), _addresses(pairs[1])
        rows = _difference_rows_at(kernels, pairs[0][0].element_size(), a, b, counts, pairs[0], pairs[1])
        for i, row in zip(host, rows):
            out[i] = row
    elif host:
        sumsq = np.empty(len(host))
        for dtype in {after[i].dtype for i in host}:  # one kernel call per type
            at = [j for j, i in enumerate(host) if after[i].dtype == dtype]
            if isinstance(kernels, compiled.AddressKernels):
                pairs = [_readable(after[host[j]]) for j in at], [_readable(before[host[j]]) for j in at]
                (a, counts), (b, _) = _addresses(pairs[0]), _addresses(pairs[1])
                sumsq[at] = kernels.difference_at(a, b, counts, pairs[0][0].element_size())
                continue
            pairs = [_flat(after[host[j]]) for j in at], [_flat(before[host[j]]) for j in at]
            sumsq[at] = (kernels.difference(*pairs) if kernels is not None
                         else list(map(_numpy_difference, *pairs)))
        nonfinite = np.zeros(len(host))
        for j in np.flatnonzero(~np.isfinite(sumsq)).tolist():
            nonfinite[j] = _count_nonfinite_difference(_flat(after[host[j]]), _flat(before[host[j]]))
        numel = np.array([before[i].numel() for i in host], dtype=np.float64)
        rows = _host_rows(numel, {"sumsq": sumsq, "nonfinite": nonfinite})
        for i, row in zip(host, rows):
            out[i] = row
    rest = [i for i in range(len(before)) if out[i] is None]
    if rest:
        diffs = [before[i] for i in rest]
        torch._foreach_neg_(diffs)
        torch._foreach_add_(diffs, [after[i] for i in rest])
        for i, row in zip(rest, header_rows(diffs, NORM)):
            out[i] = row
    return out


def _difference_rows_at(kernels, width: int, a: np.ndarray, b: np.ndarray, counts: np.ndarray, after: list,
                        before: list) -> np.ndarray:
    """Header rows of ``after - before`` (addresses ``a`` and ``b``) written by the row kernel; numpy
    counts the NaN and Inf of those it flags (or whose sum overflowed)."""
    rows, bad = kernels.difference_rows_at(a, b, counts, width)
    if bad:
        for j in np.flatnonzero(np.isnan(rows[:, _NONFINITE])).tolist():
            rows[j, _NONFINITE] = _count_nonfinite_difference(_flat(after[j]), _flat(before[j]))
            rows[j, _COUNT] = counts[j] - rows[j, _NONFINITE]
    return rows


def _flat(x: torch.Tensor) -> np.ndarray:
    """A CPU tensor's values as a flat numpy array in row-major order: a view, unless the tensor is not
    contiguous (then a contiguous copy), and the values a lazily negated view stands for."""
    return np.ascontiguousarray(x.detach().resolve_neg().numpy()).reshape(-1)  # (reshape keeps a 1-D stride)


def _numpy_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Sum of (a - b)^2 of flat arrays, the difference of a cache-sized piece at a time in a reused
    buffer."""
    buf, total = work_array(a.dtype, size=HOST_CHUNK), 0.0
    with np.errstate(all="ignore"):  # inf - inf is NaN: counted by the caller, not warned about
        for start in range(0, a.size, HOST_CHUNK):
            piece = a[start:start + HOST_CHUNK]
            d = np.subtract(piece, b[start:start + HOST_CHUNK], out=buf[:piece.size])
            total += float(np.dot(d, d))
    return total


def _count_nonfinite_difference(a: np.ndarray, b: np.ndarray) -> float:
    with np.errstate(invalid="ignore", over="ignore"):
        return float(a.size - np.count_nonzero(np.isfinite(a - b)))


def scaled(rows: list, scale) -> list:
    """Rows of tensors that were ``scale`` times too large (GradScaler's unscaled view)."""
    inv = 1.0 / scale.detach().to(torch.float64).reshape(())
    one = torch.ones_like(inv)
    by_field = {"sum": inv, "sumsq": inv * inv, "abssum": inv, "min": inv, "max": inv}
    factor = torch.stack([by_field.get(name, one) for name in HEADER])  # no host copy
    return [row * _like(factor, row) for row in rows]


def masked(rows: list, skipped) -> list:
    """Rows made NaN when ``skipped`` (a device flag) is set: a step the optimizer did not take."""
    flag = skipped.reshape(()) > 0
    return [np.where(_like(flag, row), np.nan, row) if isinstance(row, np.ndarray)
            else torch.where(flag.to(row.device), torch.full_like(row, float("nan")), row) for row in rows]


def _like(t: torch.Tensor, row):
    """``t`` where ``row`` lives: a numpy array for a host row (a CPU value: reading it waits for
    nothing; a device flag with a host row cannot occur, host rows come from CPU tensors only)."""
    if isinstance(row, np.ndarray):
        return t.detach().cpu().numpy()
    return t.to(row.device)
