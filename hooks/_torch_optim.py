"""Gradients, updates and parameters, read around ``optimizer.step()``.

The optimizer's step pre-hook is where gradients are final: after
DistributedDataParallel's all-reduce and after GradScaler's unscale (a step
the scaler skips never calls ``optimizer.step()``, so it is neither a
gradient nor a zero update). On sampled steps the pre-hook summarises every
gradient and parameter with fused ``_foreach`` reductions and keeps a copy of
the parameters; the post-hook summarises ``after - before``, the update
actually applied whatever the optimizer. Without an optimizer (or with one
that has no step hooks) gradients are read when the backward pass ends, and
updates are not measured.
"""
from __future__ import annotations

import logging

import torch

from ._torch_fused import GRADIENT, PARAMETER, HostBuffers, difference_rows, header_rows, masked, scaled
from ._torch_switch import OffBetweenSampledSteps

#: names listed in one log line before "+N more"
MAX_NAMES = 8


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_NAMES])
    return shown + (f" +{len(names) - MAX_NAMES} more" if len(names) > MAX_NAMES else "")


class GradientWatch:
    """Optimizer hooks (or an end-of-backward callback) for one model's parameters."""

    def __init__(self, ctx, root: torch.nn.Module, optimizer=None, *, gradients=True, updates=True):
        self.ctx = ctx
        self.optimizer = optimizer
        self.gradients = gradients
        self.updates = updates
        self.root = root
        self._index()
        self._announced: set[str] = set()
        self._snapshot = None
        self._buffers: list = []
        self.handles = []
        self._off = None
        self.from_optimizer = optimizer is not None and hasattr(optimizer, "register_step_pre_hook")
        if self.from_optimizer:
            self.handles.append(optimizer.register_step_pre_hook(ctx.guard(("hook", "optimizer"), self._before)))
            try:
                self.handles.append(optimizer.register_step_post_hook(ctx.guard(("hook", "optimizer"),
                                                                                 self._after)))
                #: off between sampled steps where they can be (see _torch_switch)
                self._off = OffBetweenSampledSteps(ctx, ("hook", "optimizer"), self.handles)
            except BaseException:  # no half-attached optimizer
                self.close()
                raise
        elif optimizer is not None:
            ctx.say("foreign-optimizer", logging.WARNING,
                    f"nnhealth: {type(optimizer).__name__} has no step hooks (not a torch.optim.Optimizer): "
                    "gradients are read when backward ends and updates are not measured")

    # -- which parameters -------------------------------------------------------------
    def _index(self) -> None:
        """``names``: parameter -> qualified name (tied weights once, under their first name)."""
        self.names: dict = {}
        for name, p in self.root.named_parameters():
            self.names.setdefault(p, name)
        self.root_params = list(self.names)

    def _params(self) -> list:
        if not self.from_optimizer:
            now = list(self.root.parameters())
            if len(now) != len(self.root_params) or any(a is not b for a, b in zip(now, self.root_params)):
                self._index()  # replaced after watch(): ``to_empty`` of a model built on the meta device
            return self.root_params
        seen, out = set(), []
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
        return out

    def _name(self, p, i: int) -> str:
        name = self.names.get(p)
        if name is None and self.root is not None and any(q is p for q in self.root.parameters()):
            self._index()  # the model's parameters were replaced after watch() (``to_empty``)
            name = self.names.get(p)
        if name is None:  # in the optimizer but not in the watched model
            name = self.names[p] = f"param{i}"
        return name

    def _with_grad(self) -> tuple[list, list[str]]:
        params, names, frozen, unused, valueless = [], [], [], [], []
        for i, p in enumerate(self._params()):
            name = self._name(p, i)
            if p.grad is not None and not p.is_meta:
                params.append(p)
                names.append(name)
            elif name not in self._announced:
                self._announced.add(name)
                (valueless if p.is_meta else unused if p.requires_grad else frozen).append(name)
        if valueless:
            self.ctx.say(None, logging.INFO, f"nnhealth: {_listing(valueless)} are on the meta device (shapes "
                         "without values); gradient and update checks skip them")
        if frozen:
            self.ctx.say(None, logging.INFO, f"nnhealth: no gradient for {_listing(frozen)} (frozen: "
                         "requires_grad=False); gradient and update checks skip them")
        if unused:
            self.ctx.say(None, logging.WARNING, f"nnhealth: no gradient reached {_listing(unused)} although "
                         "they require one (not used in the loss of this step?); gradient and update checks "
                         "skip them")
        return params, names

    # -- around optimizer.step() ------------------------------------------------------------
    def _before(self, optimizer, args, kwargs):
        self._snapshot = None
        mon = self.ctx.monitor
        if not mon.sampled:  # first: this runs on every step
            return None
        # ``args`` are step()'s own: the optimizer first, then a positional closure
        closure = kwargs.get("closure", args[1] if len(args) > 1 else None)
        if callable(closure):  # step(closure) (Lightning, LBFGS): gradients exist once it has run
            return _read_after_closure(self, optimizer, args, kwargs, closure)
        self.ctx.check_forward_seen()
        params, names = self._with_grad()
        if not params:
            return None
        scale = getattr(optimizer, "grad_scale", None)
        skipped = getattr(optimizer, "found_inf", None)
        skipped = skipped if isinstance(skipped, torch.Tensor) else None
        # host buffers of the snapshot (CPU parameters), or None; the host kernels read tensors as they are
        before = self._host_buffers(params) if self.updates else None
        values = params if before is not None else [p.detach() for p in params]
        if self.gradients:
            grad_rows = header_rows([p.grad for p in params], GRADIENT)
            if isinstance(scale, torch.Tensor):  # a fused optimizer unscales inside its own kernel
                grad_rows = scaled(grad_rows, scale)
            if skipped is not None:
                grad_rows = masked(grad_rows, skipped)
            for name, row in zip(names, grad_rows):
                self.ctx.add("gradient", name, row)
        if self.updates:
            base = header_rows(values, PARAMETER, copies=before)  # the snapshot taken by the same pass
            for name, row in zip(names, base):
                if ("parameter", name) not in mon._pending:  # the watch-time summary has units
                    self.ctx.add("parameter", name, row)
            if before is None:
                before = torch._foreach_mul(values, 1.0)
            self._snapshot = (params, names, before, base, skipped)
        return None

    def _host_buffers(self, values: list) -> list | None:
        """Where the parameters are kept before the step: on the CPU, where fresh memory is paid for
        page by page, the same buffers every sampled step (filled by the pass that measures the
        parameters); None on accelerators, which take a fresh copy (their caching allocators make it
        cheap, and it is freed after the step)."""
        if not values[0].is_cpu:
            return None
        buffers = self._buffers
        if not (isinstance(buffers, HostBuffers) and buffers.fit(values)):
            if not all(v.is_cpu for v in values):  # parameters on several devices
                return None
            buffers = self._buffers = HostBuffers(values)
        return buffers

    def _after(self, optimizer, args, kwargs):
        snapshot, self._snapshot = self._snapshot, None
        if snapshot is None:
            return None
        params, names, before, base, skipped = snapshot
        after = params if isinstance(before, HostBuffers) else [p.detach() for p in params]
        rows = difference_rows(before, after)  # ||after - before||
        del before
        if skipped is not None:
            rows = masked(rows, skipped)
        for name, row, b in zip(names, rows, base):
            self.ctx.add("update", name, row)
            self.ctx.add("update_base", name, b)
        return None

    # -- without optimizer hooks: when backward ends ----------------------------------------
    def after_forward(self, output) -> None:
        """Arrange for the gradients to be read when a backward through ``output`` ends."""
        if self.from_optimizer or not self.gradients:
            return
        if self.ctx.distributed:
            self.ctx.say("ddp-no-optimizer", logging.WARNING,
                         "nnhealth: under torch.distributed pass the optimizer to watch(): gradients are only "
                         "final after the all-reduce, in optimizer.step(); gradient checks are off")
            return
        state = {"queued": False}
        guarded = self.ctx.guard(("hook", "backward"), self._after_backward)

        def on_grad(grad):
            if not state["queued"]:
                state["queued"] = True
                torch.autograd.Variable._execution_engine.queue_callback(guarded)
            return None

        for t in _grad_leaves(output):
            t.register_hook(on_grad)

    def _after_backward(self):
        mon = self.ctx.monitor
        params, names = self._with_grad()
        if not params or not mon.sampled:
            return
        for name, row in zip(names, header_rows([p.grad for p in params], GRADIENT)):
            mon._pending.pop(("gradient", name), None)  # accumulated gradients: the latest backward wins
            self.ctx.add("gradient", name, row)

    def close(self) -> None:
        if self._off is not None:
            self._off.close()
        for h in self.handles:
            h.remove()
        self.handles = []
        self._snapshot = None
        self._buffers = []
        self.names = {}
        self.root_params = []
        self.root = None
        self.optimizer = None


def _read_after_closure(watch: GradientWatch, optimizer, args, kwargs, closure):
    """``(args, kwargs)`` of ``optimizer.step`` with ``closure`` replaced by one that, after its first
    run (forward and backward), does what the step pre-hook does without a closure."""
    watch._snapshot = None
    read = watch.ctx.guard(("hook", "optimizer"), watch._before)
    first = [True]

    def closure_then_read():
        loss = closure()
        if first[0]:
            first[0] = False
            read(optimizer, (), {})
        return loss

    if "closure" in kwargs:
        return args, {**kwargs, "closure": closure_then_read}
    return (args[0], closure_then_read, *args[2:]), kwargs


def _grad_leaves(output) -> list:
    from torch.utils._pytree import tree_leaves

    return [t for t in tree_leaves(output) if isinstance(t, torch.Tensor) and t.requires_grad]
