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
        return x.reshape(-1, x.shape[-1])

    def pack(self, parts):
        return np.concatenate([np.atleast_1d(np.asarray(p, dtype=np.float64)).reshape(-1) for p in parts])

    def scalar(self, v, like):
        return np.float64(v)

    def fetch(self, vectors):
        """Host copies of packed vectors: already on the host."""
        return [np.asarray(v, dtype=np.float64) for v in vectors]


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
        # float32 for the elementwise work (fast on every device), float64 packs
        return x.detach().to(t.float32)

    def isfinite(self, x):
        return self.t.isfinite(x)

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

    def count(self, mask, axis=None):
        if axis is None:
            return mask.sum(dtype=self.t.float64)
        return mask.sum(dim=axis, dtype=self.t.float64)

    def sum(self, x, axis=None):
        if axis is None:
            return x.sum(dtype=self.t.float64)
        return x.sum(dim=axis, dtype=self.t.float64)

    def amin(self, x):
        if x.numel() == 0:
            return self.t.tensor(float("inf"), device=x.device, dtype=self.t.float64)
        return x.min().to(self.t.float64)

    def amax(self, x):
        if x.numel() == 0:
            return self.t.tensor(float("-inf"), device=x.device, dtype=self.t.float64)
        return x.max().to(self.t.float64)

    def bincount(self, idx, n):
        # torch.bincount reads the maximum back to the host; index_add does not
        out = self.t.zeros(n, dtype=self.t.float64, device=idx.device)
        flat = idx.reshape(-1)
        return out.index_add_(0, flat, self.t.ones(flat.shape, dtype=self.t.float64, device=idx.device))

    def units_last(self, x, axis):
        x = x.movedim(axis, -1)
        return x.reshape(-1, x.shape[-1])

    def pack(self, parts):
        t = self.t
        flat = []
        for p in parts:
            if not isinstance(p, t.Tensor):
                p = t.tensor(p, dtype=t.float64, device=self.device)
            flat.append(p.to(t.float64).reshape(-1))
        return t.cat(flat)

    def scalar(self, v, like):
        return self.t.tensor(v, dtype=self.t.float64, device=like.device)

    def fetch(self, vectors):
        """One device-to-host copy for all vectors of a step."""
        t = self.t
        if not vectors:
            return []
        sizes = [int(v.numel()) for v in vectors]
        host = t.cat([v.reshape(-1) for v in vectors]).to("cpu").numpy()
        out, start = [], 0
        for s in sizes:
            out.append(host[start:start + s])
            start += s
        return out


NUMPY = NumpyOps()


def ops_for(x: Any):
    """The ops of the library that owns ``x``; numpy for anything array-like."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return TorchOps(torch, x.device)
    return NUMPY


class Ready:
    """Host values that are already there (numpy, or torch on the CPU)."""

    def __init__(self, values):
        self.values = values

    def result(self):
        return self.values


class _TorchTransfer:
    """A non-blocking device-to-host copy, waited for only when its result is needed."""

    def __init__(self, torch_module, vectors):
        t = torch_module
        self.sizes = [int(v.numel()) for v in vectors]
        flat = t.cat([v.reshape(-1).to(t.float64) for v in vectors])
        self.host = t.empty(flat.shape, dtype=t.float64, pin_memory=True)
        self.host.copy_(flat, non_blocking=True)
        self.event = t.cuda.Event()
        self.event.record()

    def result(self):
        self.event.synchronize()
        host = self.host.numpy()
        out, start = [], 0
        for s in self.sizes:
            out.append(host[start:start + s])
            start += s
        return out


def start_fetch(ops, vectors):
    """Start copying ``vectors`` to the host in one transfer; ``.result()`` gives numpy arrays."""
    if getattr(ops, "is_async", False) and vectors:
        return _TorchTransfer(ops.t, vectors)
    return Ready(ops.fetch(vectors))
