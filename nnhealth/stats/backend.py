"""The handful of array operations the statistics need, for each array library.

The statistics in :mod:`nnhealth.stats.compute` are written once against this
small interface, so they run on the array's own library and device: numpy on
the host, PyTorch on CPU or GPU without a host synchronisation. Only the
operations whose spelling differs between libraries live here.
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np


class NumpyOps:
    """numpy: the reference implementation; accumulates in float64."""

    name = "numpy"
    is_async = False

    def as_float(self, x):
        x = np.asarray(x)
        if x.dtype.kind == "c":
            x = np.abs(x)
        return x.astype(np.float64, copy=False)

    isfinite = staticmethod(np.isfinite)
    abs = staticmethod(np.abs)
    log = staticmethod(np.log)
    floor = staticmethod(np.floor)
    where = staticmethod(np.where)
    ones_like = staticmethod(np.ones_like)
    zeros_like = staticmethod(np.zeros_like)
    minimum = staticmethod(np.minimum)
    maximum = staticmethod(np.maximum)

    def clip(self, x, lo, hi):
        return np.clip(x, lo, hi)

    def to_index(self, x):
        return x.astype(np.int64)

    def count(self, mask, axis=None):
        return np.count_nonzero(mask, axis=axis).astype(np.float64)

    def sum(self, x, axis=None):
        return np.sum(x, axis=axis, dtype=np.float64)

    def amin(self, x):
        return np.min(x) if x.size else np.float64(np.inf)

    def amax(self, x):
        return np.max(x) if x.size else np.float64(-np.inf)

    def bincount(self, idx, n):
        return np.bincount(idx.reshape(-1), minlength=n)[:n].astype(np.float64)

    def units_last(self, x, axis):
        x = np.moveaxis(x, axis, -1)
        return x.reshape(-1, x.shape[-1]) if x.shape[-1] else x.reshape(int(np.prod(x.shape[:-1])), 0)

    def pack(self, parts):
        return np.concatenate([np.atleast_1d(np.asarray(p, dtype=np.float64)).reshape(-1) for p in parts])

    def scalar(self, v, like):
        return np.float64(v)

    def fetch(self, vectors):
        """Host copies of packed vectors: already on the host."""
        return [np.asarray(v, dtype=np.float64) for v in vectors]

    def host_view(self, x):
        """``x`` as a float array for the host kernel (float64: numpy is the reference)."""
        return self.as_float(x)

    def from_host(self, vector):
        return vector


class TorchOps:
    """PyTorch on the tensor's own device; no ``.item()``, no data-dependent shapes."""

    name = "torch"

    def __init__(self, torch_module, device):
        self.t = torch_module
        self.device = device
        self.is_async = device.type not in ("cpu", "meta")

    def as_float(self, x):
        t = self.t
        if x.is_sparse:
            x = x.coalesce().values()
        if x.is_complex():
            x = x.abs()
        # float32 for the elementwise work (fast on every device; half and bfloat16 are widened),
        # float64 tensors stay float64 (their owner asked for the precision); packs are float64
        return x.detach().to(t.float64 if x.dtype == t.float64 else t.float32)

    def isfinite(self, x):
        return self.t.isfinite(x)

    def sign(self, x):
        return x.sign()

    def host_view(self, x):
        """A CPU tensor as a float32/float64 numpy array sharing its memory (None elsewhere, and for
        tensors numpy cannot view: subclasses, conjugate views), for the host kernel."""
        t = self.t
        if self.device.type != "cpu" or type(x) not in (t.Tensor, t.nn.Parameter):
            return None
        try:
            if x.dtype in (t.float32, t.float64) and not x.is_sparse:  # as it is: one call, no conversion
                return x.numpy(force=True)
            return self.as_float(x).numpy()
        except (RuntimeError, TypeError):
            return None

    def from_host(self, vector):
        return self.t.from_numpy(vector)

    def abs(self, x):
        return x.abs()

    def log(self, x):
        return x.log()

    def floor(self, x):
        return x.floor()

    def where(self, c, a, b):
        return self.t.where(c, a, b)

    def ones_like(self, x):
        return self.t.ones_like(x)

    def zeros_like(self, x):
        return self.t.zeros_like(x)

    def minimum(self, a, b):
        return self.t.minimum(a, b)

    def maximum(self, a, b):
        return self.t.maximum(a, b)

    def clip(self, x, lo, hi):
        return x.clamp(lo, hi)

    def to_index(self, x):
        return x.to(self.t.int64)

    # Reductions accumulate in the tensor's own precision (float32 sums are cascaded on the CPU and
    # tree-reduced on GPUs, accurate to ~1e-6) and are widened afterwards: asking for float64
    # accumulation of float32 data is several times slower on both. Counts are exact integers.
    def count(self, mask, axis=None):
        n = mask.sum() if axis is None else mask.sum(dim=axis)
        return n.to(self.t.float64)

    def sum(self, x, axis=None):
        s = x.sum() if axis is None else x.sum(dim=axis)
        return s.to(self.t.float64)

    def _full(self, value, device):
        # torch.full fills on the device; torch.tensor(v, device=cuda) is a blocking host copy
        return self.t.full((), float(value), dtype=self.t.float64, device=device)

    def amin(self, x):
        if x.numel() == 0:
            return self._full(float("inf"), x.device)
        return x.min().to(self.t.float64)

    def amax(self, x):
        if x.numel() == 0:
            return self._full(float("-inf"), x.device)
        return x.max().to(self.t.float64)

    def bincount(self, idx, n):
        # torch.bincount reads the maximum back to the host; index_add does not
        out = self.t.zeros(n, dtype=self.t.float64, device=idx.device)
        flat = idx.reshape(-1)
        one = self.t.ones((), dtype=self.t.float64, device=idx.device)
        return out.index_add_(0, flat, one.expand(flat.shape))  # a broadcast 1, not n ones in memory

    def units_last(self, x, axis):
        x = x.movedim(axis, -1)
        # reshape(-1, 0) is ambiguous: a layer with no units is spelled out
        return x.reshape(-1, x.shape[-1]) if x.shape[-1] else x.reshape(int(np.prod(x.shape[:-1])), 0)

    def pack(self, parts):
        t = self.t
        flat = []
        for p in parts:
            if not isinstance(p, t.Tensor):
                p = self._full(p, self.device)
            flat.append(p.to(t.float64).reshape(-1))
        return t.cat(flat)

    def scalar(self, v, like):
        return self._full(v, like.device)

    def fetch(self, vectors):
        """Host copies of ``vectors``: one device-to-host copy per device they live on."""
        sizes = _sizes(vectors)
        return _split(_to_host(self.t, vectors, sizes), sizes)


NUMPY = NumpyOps()
#: one TorchOps per device (they hold nothing else), made on first use
_TORCH_OPS: dict = {}


def ops_for(x: Any):
    """The ops of the library that owns ``x``; numpy for anything array-like."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        ops = _TORCH_OPS.get(x.device)
        if ops is None:
            ops = _TORCH_OPS[x.device] = TorchOps(torch, x.device)
        return ops
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(x, getattr(jax, "Array", ())):
        from .backend_jax import jax_ops

        return jax_ops(jax, x)
    return NUMPY


class Ready:
    """Host values that are already there (numpy, or torch on the CPU)."""

    is_async = False

    def __init__(self, values):
        self.values = values

    def ready(self) -> bool:
        return True

    def result(self):
        return self.values


def _sizes(vectors) -> list[int]:
    """How many values each of ``vectors`` holds (asked once per transfer: on a GPU host each call costs
    microseconds, and a step's transfer has dozens of vectors)."""
    return [int(v.numel()) for v in vectors]


def _split(host, sizes):
    """Cut one host array back into pieces of ``sizes`` values, in order."""
    out, start = [], 0
    for n in sizes:
        out.append(host[start:start + n])
        start += n
    return out


def _by_device(vectors):
    """{device: [positions]} in first-seen order, so each device's vectors go in one copy."""
    groups: dict = {}
    for i, v in enumerate(vectors):
        groups.setdefault(v.device, []).append(i)
    return groups


def _gather(sizes, parts):
    """One float64 host array of all vectors (of ``sizes`` values each) from ``parts``: (positions, host
    array of those). A single part holding them in order (one device, and the vectors of one type, or the
    scalars of another after them: a step's usual transfer) is copied whole, not vector by vector (into
    memory of its own: pinned buffers go back to their pool)."""
    if len(parts) == 1 and parts[0][0] == list(range(len(sizes))):
        return np.array(parts[0][1], dtype=np.float64)
    starts = np.cumsum([0] + list(sizes))
    host = np.empty(int(starts[-1]), dtype=np.float64)
    for idx, flat in parts:
        at = 0
        for i in idx:
            n = starts[i + 1] - starts[i]
            host[starts[i]:starts[i + 1]] = flat[at:at + n]
            at += n
    return host


def _to_host(t, vectors, sizes):
    """Blocking copy of all ``vectors`` (of ``sizes`` values each) into one float64 numpy array (one copy
    per device)."""
    parts = []
    for idx in _by_device(vectors).values():
        order, flat = _float64_flat(t, vectors, idx)
        parts.append((order, flat.to("cpu").numpy()))
    return _gather(sizes, parts)


def _float64_flat(t, vectors, idx):
    """(positions in their new order, the ``vectors`` at ``idx`` end to end as one float64 vector):
    concatenated by type, each type widened once (on a GPU a conversion is a kernel each, and a
    concatenation of mixed types a copy per input: ten held float32 losses took eleven kernels)."""
    by_type: dict = {}
    for i in idx:
        by_type.setdefault(vectors[i].dtype, []).append(i)
    order = [i for group in by_type.values() for i in group]
    parts = [t.cat([vectors[i].reshape(-1) for i in group]).to(t.float64) for group in by_type.values()]
    return order, parts[0] if len(parts) == 1 else t.cat(parts)


class _TorchTransfer:
    """A non-blocking device-to-host copy of one step's vectors, waited for only when read.

    Per CUDA device the vectors are concatenated on the device, copied into pinned host
    memory with ``non_blocking=True`` on that device's current stream, and an event is
    recorded after the copy; :meth:`result` waits on the events (by then, one step later,
    long done). Vectors on the CPU or on devices without this machinery are copied at once.
    """

    is_async = True

    def __init__(self, torch_module, vectors):
        t = self.t = torch_module
        self.sizes = _sizes(vectors)
        self.parts = []  # (positions, pinned host tensor or host array, event or None)
        for device, idx in _by_device(vectors).items():
            idx, flat = _float64_flat(t, vectors, idx)
            if device.type == "cuda":
                with t.cuda.device(device):
                    host = t.empty(flat.shape, dtype=t.float64, pin_memory=True)
                    host.copy_(flat, non_blocking=True)
                    event = t.cuda.Event()
                    event.record(t.cuda.current_stream(device))
                self.parts.append((idx, host, event))
            else:  # CPU: already there; other accelerators: a plain copy (it waits for the device)
                self.parts.append((idx, flat.to("cpu").numpy(), None))

    def ready(self) -> bool:
        """True when reading the result would not wait for the device."""
        return all(event is None or event.query() for _, _, event in self.parts)

    def result(self):
        parts = []
        for idx, host, event in self.parts:
            if event is not None:
                event.synchronize()
                host = host.numpy()
            parts.append((idx, host))
        return _split(_gather(self.sizes, parts), self.sizes)


def start_fetch(ops, vectors):
    """Start copying ``vectors`` to the host in one transfer; ``.result()`` gives numpy arrays.

    Torch vectors that live on a CUDA device are copied without blocking (whatever device
    ``ops`` was made for: one step's vectors may sit on several devices).
    """
    own = getattr(ops, "start_fetch", None)
    if own is not None:  # a library with its own asynchronous copy (JAX)
        return own(vectors)
    torch = getattr(ops, "t", None)
    if torch is not None and any(v.device.type == "cuda" for v in vectors):
        return _TorchTransfer(torch, vectors)
    return Ready(ops.fetch(vectors))
