"""The PyTorch adapter: ``mon.watch(model, optimizer)`` sees every layer, cheaply, and under DDP.

What it observes, and where (each part is a small module of its own):

- activations of every activation layer, and of activation *functions* called
  inside ``forward``, named after the module that called them; the model's
  input (:mod:`._torch_forward`);
- gradients, parameters and the update actually applied, around
  ``optimizer.step()`` with fused reductions (:mod:`._torch_optim`,
  :mod:`._torch_fused`);
- every parameter once at watch time, for the initialisation checks
  (:mod:`._torch_init`);
- under ``torch.distributed``, every rank's statistics combined in one
  collective per step, rank 0 alone writing (:mod:`._torch_dist`);
- compiled models (:mod:`._torch_compile`).

Statistics are computed on the tensors' device, only on sampled steps, and
handed to the monitor's pending step, which copies them to the host in one
transfer. A hook that fails is reported once and switched off; the training
loop never sees the error (``Monitor(strict=True)`` re-raises it instead).

>>> import torch
>>> from nnhealth import Monitor
>>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
>>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
>>> mon = Monitor(every=1, console=False).watch(model, opt)
>>> loss = model(torch.randn(16, 4)).pow(2).mean()
>>> loss.backward(); opt.step()
>>> _ = mon.step(0, loss=loss)
>>> sorted(mon.history.names("activation")), mon.history.latest_summary("gradient", "0.weight").count
(['1'], 32.0)
>>> mon.close()
"""
from __future__ import annotations

import logging
import weakref

import torch

from nnhealth.stats.backend import ops_for

from . import _torch_compile, _torch_dist
from ._torch_compile import compiled_parts, hold_eager, refresh, release_eager, unwrap
from ._torch_forward import ForwardWatch
from ._torch_fused import HEADER_ONLY
from ._torch_init import observe_initial, record_follows
from ._torch_optim import GradientWatch

__all__ = ["TorchWatcher", "attach"]

log = logging.getLogger("nnhealth")

#: sampled optimizer steps without any forward reaching the hooks before saying so
UNSEEN_STEPS = 2


class TorchWatcher:
    """The hooks nnhealth put on one model (and its optimizer); :meth:`close` removes them all."""

    def __init__(self, monitor, model: torch.nn.Module, optimizer=None, *, activations: bool = True,
                 functional: bool = True, inputs: bool = True, gradients: bool = True, updates: bool = True):
        self.monitor = monitor
        self.root = unwrap(model)
        self.label = type(self.root).__name__
        self.distributed = _torch_dist.initialised()
        self._compiled = compiled_parts(model)
        self._unseen = 0
        self._follows_recorded = False
        self.forward = None
        self.grads = None
        self._sampling = None
        self._eager_token = None
        if self.distributed:
            _torch_dist.install(monitor)
        # each part is set up fail-open too: one that cannot be leaves the others watching
        self._owners = self.guard(("watch", "parameters"), observe_initial)(self, self.root) or {}
        if activations or functional or inputs:
            self.forward = self.guard(("watch", "forward"), ForwardWatch)(
                self, self.root, activations=activations, functional=functional, inputs=inputs)
        if gradients or updates or optimizer is not None:
            self.grads = self.guard(("watch", "optimizer"), GradientWatch)(
                self, self.root, optimizer, gradients=gradients, updates=updates)
        if self.forward is not None:
            # compiled code runs eagerly on sampled steps, from the step() before one to the step() ending it;
            # a watcher dropped unclosed (with its model and monitor) lets go when it is collected
            self._eager_token = object()
            weakref.finalize(self, release_eager, self._eager_token).atexit = False
            self._sampling = self.guard(("watch", "compile"), self._sampling_changed)
            monitor.sampling.listeners.append(self._sampling)
            self._sampling(monitor.sampling.on)
            if self._compiled and not _torch_compile.EAGER_WHEN_SAMPLED:
                self._recompile(model)
        if optimizer is None and gradients:
            self.say("no-optimizer", logging.INFO, "nnhealth: no optimizer given to watch(): gradients are read "
                     "when backward ends and updates are not measured; watch(model, optimizer) gives both")

    # -- what the parts share ---------------------------------------------------------
    def guard(self, part: tuple, fn):
        """``fn`` made fail-open: an error is reported once and switches ``part`` off."""
        mon = self.monitor

        def guarded(*args, **kwargs):
            if mon._closed or part in mon._broken:
                return None
            try:
                return fn(*args, **kwargs)
            except Exception as e:
                self.failed(part, e)
                return None

        return guarded

    def failed(self, part: tuple, error: Exception) -> None:
        self.monitor._failed(part, error)  # re-raises under Monitor(strict=True)

    def say(self, key, level: int, message: str) -> None:
        """Log ``message`` (once per ``key`` unless it is None); non-zero ranks stay quiet below errors."""
        if not self.monitor.is_writer and level < logging.ERROR:
            return
        if key is None:
            log.log(level, message)
        else:
            self.monitor._say_once(f"torch:{key}", message, level)

    def add(self, role: str, name: str, vector, layout=HEADER_ONLY) -> None:
        self.monitor._add(role, name, ops_for(vector), layout, vector)

    def add_activation(self, name: str, kind: str, layout, vector) -> None:
        self.monitor._history.meta.setdefault(name, {})["kind"] = kind
        self.add("activation", name, vector, layout)

    def _sampling_changed(self, on: bool) -> None:
        """Compiled code runs eagerly on sampled steps, from the step() before one to the step() that ends it
        (see _torch_compile). Whether the model is compiled cannot be told beforehand (it may be compiled
        after watch(), and compiled code may not even run the hooks it was traced without), and where
        nothing is compiled the stance changes nothing."""
        if on:
            hold_eager(self._eager_token)
        else:
            release_eager(self._eager_token)

    def after_forward(self, output) -> None:
        """A sampled training forward ended: record what it taught, arrange the gradient read."""
        forward = self.forward
        if not self._follows_recorded and forward is not None and forward.follows:
            self._follows_recorded = True
            record_follows(self.monitor._history.meta, self._owners, forward.follows)
        if self.grads is not None:
            self.grads.after_forward(output)

    def _recompile(self, model) -> None:
        """Compiled before watch(): have the hooks compiled in. If this PyTorch cannot, the forward
        itself shows whether they are skipped, and :meth:`activation_layers_silent` says so."""
        if refresh(model):
            self.say("recompile", logging.INFO,
                     f"nnhealth: {self.label} was compiled before watch() ({', '.join(self._compiled)}); its "
                     "compiled code is dropped once so that the next call compiles nnhealth's hooks in (one "
                     "recompilation; watch before torch.compile to avoid it)")

    def _parts_that_skip_hooks(self) -> list[str]:
        """Compiled modules that may run without calling hooks added after they were compiled: none where
        sampled steps run compiled code eagerly."""
        if _torch_compile.EAGER_WHEN_SAMPLED:
            return []
        return self._compiled or (compiled_parts(self.root) if self.root is not None else [])

    def activation_layers_silent(self, hooked: list[str]) -> None:
        """Two sampled forwards ran without any hooked activation layer reporting: say why, once."""
        parts = self._parts_that_skip_hooks()
        shown = ", ".join(hooked[:4]) + (f" +{len(hooked) - 4} more" if len(hooked) > 4 else "")
        if parts:
            self.say("layers-silent", logging.WARNING,
                     f"nnhealth: the activation layers of {self.label} ({shown}) never reached nnhealth's hooks: "
                     f"compiled code ({', '.join(parts)}) skips hooks added after compiling. Fix: call "
                     "mon.watch(model, optimizer) before torch.compile(model).")
        else:
            self.say("layers-silent", logging.INFO,
                     f"nnhealth: the activation layers of {self.label} ({shown}) did not run in two sampled "
                     "forward passes (defined but not used in forward?); only what runs is checked")

    def check_forward_seen(self) -> None:
        """At a sampled optimizer step: say, once, if no forward of the model ever reached the hooks."""
        forward = self.forward
        if forward is None or forward.forward_step is not None or not self.root.training:
            return
        self._unseen += 1
        if self._unseen < UNSEEN_STEPS:
            return
        parts = self._parts_that_skip_hooks()
        if parts:
            why = (f"{self.label} was compiled with torch.compile ({', '.join(parts)}) before watch(), and on this "
                   "version of PyTorch compiled code skips hooks added afterwards")
            fix = "call mon.watch(model, optimizer) before torch.compile(model)"
        else:
            why = (f"{self.label}'s forward runs without calling its module hooks (scripted, called through "
                   "another path, or compiled code that could not be run eagerly on sampled steps)")
            fix = "watch the module whose forward the training calls, unscripted"
        self.say("forward-unseen", logging.WARNING,
                 f"nnhealth: {self._unseen} sampled optimizer steps went by and no forward pass of {self.label} "
                 f"reached nnhealth: {why}. Activation and input checks are off; gradients and updates are "
                 f"still watched. Fix: {fix}.")

    # -- closing -----------------------------------------------------------------------------
    def close(self) -> None:
        """Remove every hook; afterwards the model and optimizer hold no reference to nnhealth."""
        release_eager(self._eager_token)
        listeners = self.monitor.sampling.listeners
        if self._sampling in listeners:
            listeners.remove(self._sampling)
        for part in (self.forward, self.grads):
            if part is not None:
                part.close()
        self.forward = self.grads = None
        self.root = None
        self._owners = {}

    def __repr__(self) -> str:
        state = "closed" if self.root is None else f"watching {self.label}"
        return f"TorchWatcher({state})"


def attach(monitor, model, optimizer=None, **options) -> TorchWatcher:
    """Watch ``model`` (and ``optimizer``) for ``monitor``; returns the watcher, whose ``close()`` detaches.

    ``options`` switch parts off: ``activations``, ``functional`` (activation
    functions called inside forward), ``inputs``, ``gradients``, ``updates``
    (the update ratio needs a copy of the parameters during ``optimizer.step()``
    on sampled steps).
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"watch() takes a torch.nn.Module, got {type(model).__name__}; for other frameworks "
                        "use the manual API (mon.observe_activation, mon.observe_gradient, ...)")
    if optimizer is not None and not hasattr(optimizer, "param_groups"):
        raise TypeError(f"watch()'s optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    root = unwrap(model)
    for w in getattr(monitor, "_watchers", ()):
        if getattr(w, "root", None) is root:
            raise ValueError(f"this {type(root).__name__} is already watched by this monitor; watch it once "
                             "(or close() the first watcher)")
    return TorchWatcher(monitor, model, optimizer, **options)
