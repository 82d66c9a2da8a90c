"""The statistics' array operations for JAX arrays, on the arrays' own devices.

Mirrors :class:`~nnhealth.stats.backend.NumpyOps` and :class:`~nnhealth.stats.backend.TorchOps`:
every reduction is a ``jax.numpy`` call with a static output shape (``bincount``
gets its ``length``), so nothing waits for the device while a step is observed
and the same code can run under ``jax.jit``. Sums accumulate in float64 when
JAX has 64-bit mode on and in float32 otherwise (JAX's default).

nnhealth never imports JAX itself: :func:`~nnhealth.stats.backend.ops_for` builds
these ops only for an array whose library the user already imported.
"""
from __future__ import annotations

import numpy as np


class JaxOps:
    """``jax.numpy`` on the array's device; no ``float()``/``.item()``, no data-dependent shapes."""

    name = "jax"

    def __init__(self, jax_module, platform: str = "cpu"):
        import jax.numpy as jnp  # already imported by the user: this is a dictionary lookup

        self.jax = jax_module
        self.jnp = jnp
        self.acc = jnp.float64 if jax_module.config.jax_enable_x64 else jnp.float32
        #: accelerators copy the step's statistics to the host without waiting (consumed a step later)
        self.is_async = platform not in ("cpu",)
        self._compiled: dict = {}

    def as_float(self, x):
        jnp = self.jnp
        x = jnp.asarray(x)
        if jnp.iscomplexobj(x):
            x = jnp.abs(x)
        # float32 for the elementwise work (half and bfloat16 are widened); float64 stays float64
        return self.jax.lax.stop_gradient(x.astype(jnp.float64 if x.dtype == jnp.float64 else jnp.float32))

    def isfinite(self, x):
        return self.jnp.isfinite(x)

    def abs(self, x):
        return self.jnp.abs(x)

    def log(self, x):
        return self.jnp.log(x)

    def floor(self, x):
        return self.jnp.floor(x)

    def where(self, c, a, b):
        return self.jnp.where(c, a, b)

    def ones_like(self, x):
        return self.jnp.ones_like(x)

    def zeros_like(self, x):
        return self.jnp.zeros_like(x)

    def minimum(self, a, b):
        return self.jnp.minimum(a, b)

    def maximum(self, a, b):
        return self.jnp.maximum(a, b)

    def clip(self, x, lo, hi):
        return self.jnp.clip(x, lo, hi)

    def to_index(self, x):
        return x.astype(self.jnp.int32)

    def count(self, mask, axis=None):
        return self.jnp.sum(mask, axis=axis, dtype=self.acc)

    def sum(self, x, axis=None):
        return self.jnp.sum(x, axis=axis, dtype=self.acc)

    def amin(self, x):
        if x.size == 0:
            return self.jnp.full((), np.inf, dtype=self.acc)
        return self.jnp.min(x).astype(self.acc)

    def amax(self, x):
        if x.size == 0:
            return self.jnp.full((), -np.inf, dtype=self.acc)
        return self.jnp.max(x).astype(self.acc)

    def bincount(self, idx, n):
        # a static length keeps the shape known without reading the maximum back
        return self.jnp.bincount(idx.reshape(-1), length=n).astype(self.acc)

    def units_last(self, x, axis):
        x = self.jnp.moveaxis(x, axis, -1)
        return x.reshape(-1, x.shape[-1]) if x.shape[-1] else x.reshape(int(np.prod(x.shape[:-1])), 0)

    def pack(self, parts):
        jnp = self.jnp
        return jnp.concatenate([jnp.asarray(p, dtype=self.acc).reshape(-1) for p in parts])

    def scalar(self, v, like):
        return self.jnp.full((), v, dtype=self.acc)

    def summarize(self, x, kind, **options):
        """:func:`~nnhealth.stats.summarize` compiled by ``jax.jit`` into one program per kind,
        options and shape: one dispatch per array instead of dozens of small kernels."""
        key = (kind, tuple(sorted(options.items())))
        entry = self._compiled.get(key)
        if entry is None:
            entry = self._compiled[key] = _compile(self.jax, _TracingOps(self.jax), kind, options)
        program, layouts = entry
        vector = program(x)
        return layouts[(tuple(x.shape), str(x.dtype))], vector

    def fetch(self, vectors):
        """Host copies of packed vectors, in one batched transfer (waits for the device)."""
        return [np.asarray(v, dtype=np.float64) for v in self.jax.device_get(list(vectors))]

    def start_fetch(self, vectors):
        """Start copying ``vectors`` to the host; ``.result()`` gives the numpy arrays."""
        return JaxTransfer(self, vectors)


class _TracingOps(JaxOps):
    """The same ops while :func:`jax.jit` traces the summary (no nested compilation)."""

    summarize = None


def _compile(jax_module, ops: JaxOps, kind, options: dict):
    """``(program, layouts)``: the jitted summary, and the layout it produced for each (shape, dtype)
    it was traced for (a layout is plain Python, known while tracing, so it is kept on the side)."""
    from .compute import summarize

    layouts: dict = {}

    def summary_vector(x):
        layout, vector = summarize(x, kind, ops=ops, **options)
        layouts[(tuple(x.shape), str(x.dtype))] = layout
        return vector

    return jax_module.jit(summary_vector), layouts


class JaxTransfer:
    """One step's vectors on their way to the host: ``copy_to_host_async`` now, read when needed.

    On an accelerator the copy overlaps the next step, which the Monitor consumes a step
    later (``is_async``); on the CPU there is nothing to overlap and it is read at once.
    """

    def __init__(self, ops: JaxOps, vectors):
        self.ops = ops
        self.vectors = list(vectors)
        self.is_async = ops.is_async
        if self.is_async:
            for v in self.vectors:
                v.copy_to_host_async()

    def ready(self) -> bool:
        """True when reading the result would not wait for the device."""
        return all(v.is_ready() for v in self.vectors)

    def result(self):
        return self.ops.fetch(self.vectors)


_OPS: dict[tuple[str, bool], JaxOps] = {}


def _platform(x) -> str:
    """The platform (cpu, gpu, tpu) ``x`` lives on; "cpu" for a traced value inside ``jax.jit``."""
    try:
        return next(iter(x.devices())).platform
    except Exception:  # a tracer has no devices yet
        return "cpu"


def jax_ops(jax_module, x) -> JaxOps:
    """The (shared) :class:`JaxOps` for the platform ``x`` lives on."""
    key = (_platform(x), bool(jax_module.config.jax_enable_x64))
    ops = _OPS.get(key)
    if ops is None:
        ops = _OPS[key] = JaxOps(jax_module, key[0])
    return ops
