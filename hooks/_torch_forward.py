"""The forward pass: activations (module and functional) and the model's inputs.

Every activation module gets a forward hook. The model itself gets a pre-hook
and an always-called post-hook that bracket one *capture* per sampled
training forward: the model's input is observed, a ``TorchFunctionMode`` sees
the activations applied as functions (``F.relu``, ``torch.tanh``,
``x.sigmoid()``...), and global module hooks keep a stack of the modules being
run, so such an activation is named after the module that called it
(``block.relu``, ``block.relu_1`` for its second one). Between sampled steps
the hooks are taken off the modules (:mod:`._torch_switch`), where they can
be; where not, and at every=1, every hook on another step returns at its first
line, and nothing is computed.

Compiled models (``torch.compile``) are watched too: traced into compiled
code, every hook does nothing, so the compiled graph is the unwatched one,
and sampled steps run the compiled code eagerly (see :mod:`._torch_compile`).

Statistics are computed at once, on the tensor's device, and handed to the
monitor when the forward ends, minus any activation whose output *is* the
model's output: that is an output nonlinearity (a sigmoid before
``BCELoss``), judged by the loss and not by the hidden-layer rules.
"""
from __future__ import annotations

import logging
import warnings
import weakref

import torch
from torch.nn.modules import module as module_globals
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from nnhealth.stats import summarize

from ._torch_compile import HOOKS_CAN_BE_OFF, in_graph, is_compiling
from ._torch_kinds import CHANNEL_FIRST, function_kind, is_activation_like, module_kind, plain_order
from ._torch_switch import OffBetweenSampledSteps

_no_torch_function = getattr(torch._C, "DisableTorchFunction", None)


def _quiet():
    """A context in which our own statistics do not pass through our function mode."""
    return _no_torch_function() if _no_torch_function is not None else torch.no_grad()


def _register_global(pre, post):
    h_pre = module_globals.register_module_forward_pre_hook(pre)
    try:
        h_post = module_globals.register_module_forward_hook(post, always_call=True)
    except TypeError:  # torch without always_call: a failed forward leaves the stack to the next one
        h_post = module_globals.register_module_forward_hook(post)
    return [h_pre, h_post]


class _QuietGlobalHookWarning:
    """A compiled submodule called in a sampled forward, while the capture's global module hooks exist,
    makes torch warn about global hooks the user never registered: that warning is ignored from watch()
    to close(). Not per capture: every change of the warning filters makes Python show again, once,
    each warning it had shown once per place (a training loop's own repeated warnings, every sampled
    step)."""

    MESSAGE = r"Using `torch\.compile\(module\)` when there are global hooks on modules"

    def __init__(self):
        warnings.filterwarnings("ignore", message=self.MESSAGE, category=UserWarning)
        self.entry = warnings.filters[0]

    def remove(self) -> None:
        entry, self.entry = self.entry, None
        if entry is None:
            return
        try:
            warnings.filters.remove(entry)  # an ignored warning is not remembered: nothing to reset
        except ValueError:  # the user's catch_warnings() already put its own list back
            pass


class _FunctionalActivations(TorchFunctionMode):
    """Sees every torch function called during a sampled forward; keeps the activations."""

    def __init__(self, capture: "Capture"):
        super().__init__()
        self.capture = capture

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        found = function_kind(func, args, kwargs)
        if found is not None and isinstance(out, torch.Tensor):
            if is_compiling():  # traced: the graph breaks here where PyTorch has no stances (see _dual)
                if self.capture.functional_in_graph is not None:
                    self.capture.functional_in_graph(found, out)
            else:
                self.capture.functional(found, out)
        return out


class Capture:
    """What one sampled training forward produced, until it ends."""

    def __init__(self, owner: "ForwardWatch", root, watch_calls: bool = True):
        self.owner = owner
        self.entries: list = []        # (name, kind, layout, vector, weakref to output)
        self.module_hits = 0           # activation modules whose hook ran
        self.stack: list = [[root, {}]]
        self.last_layer = None
        self.mode = None
        self.handles: list = []
        #: activation name -> the layer it follows, known before the forward runs (see plain_order);
        #: then no module's call needs watching
        self.follows_layer = owner.plain
        self.functional_in_graph = None
        if watch_calls and self.follows_layer is None:
            self.functional_in_graph = in_graph(self.functional)
            self.handles = _register_global(self._module_hook(self._enter_module),
                                            self._module_hook(self._leave_module))
            if owner.functional:
                self.mode = _FunctionalActivations(self)
                self.mode.__enter__()

    # -- the module stack ------------------------------------------------------------
    @staticmethod
    def _module_hook(fn):
        """Traced into compiled code, nothing (see _dual); where PyTorch has no stances, the graph breaks
        at each module boundary instead."""
        handover = in_graph(fn)

        def hook(*args):
            if is_compiling():
                return None if handover is None else handover(*args)
            return fn(*args)

        return hook

    def _enter_module(self, module, args):
        self.stack.append([module, {}])

    def _leave_module(self, module, args, output):
        if self.stack and self.stack[-1][0] is module and len(self.stack) > 1:
            self.stack.pop()
        if module in self.owner.layers:
            self.last_layer = module

    # -- observations -------------------------------------------------------------
    def unit_axis(self, out: torch.Tensor):
        """Channels are axis 1 of 3-D outputs of convolutions and the like, else the default."""
        if out.ndim == 3 and isinstance(self.last_layer, CHANNEL_FIRST):
            return 1
        return None

    def add(self, name: str, kind: str, out: torch.Tensor) -> None:
        if self.follows_layer is not None:
            self.last_layer = self.follows_layer.get(name)
        with _quiet():
            if out.numel() == 0:
                return self.owner.ctx.say(f"empty:{name}", logging.INFO,
                                          f"nnhealth: activation {name!r} is empty (a batch of 0 samples?); skipped")
            layout, vec = summarize(out, kind, hist=True, units=True, unit_axis=self.unit_axis(out), host_vector=True)
        self.entries.append((name, kind, layout, vec, weakref.ref(out)))
        owner = self.owner
        if self.last_layer is not None:
            owner.follows.setdefault(owner.names[self.last_layer], kind)

    def functional(self, found, out: torch.Tensor) -> None:
        owner = self.owner
        part = ("hook", "functional")
        if part in owner.ctx.monitor._broken:
            return
        try:
            module, counts = self.stack[-1]
            name = owner.names.get(module)
            if name is None or is_activation_like(module):
                return  # a module that is not ours, or an activation layer (its own hook speaks)
            label, kind = found
            k = counts.get(label, 0)
            counts[label] = k + 1
            where = f"{name}.{label}" if name else label
            if k:
                where += f"_{k}"
            if where in owner.module_names:
                where += "_f"
            self.add(where, kind, out)
        except Exception as e:
            owner.ctx.failed(part, e)

    # -- the end ----------------------------------------------------------------------
    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
        if self.mode is not None:
            mode, self.mode = self.mode, None
            try:
                mode.__exit__(None, None, None)
            except Exception:  # not on top any more: the user's own mode misbehaved
                logging.getLogger("nnhealth").debug("nnhealth: function mode already gone", exc_info=True)


class ForwardWatch:
    """Hooks on one model's forward; ``ctx`` is the watcher (monitor, failure handling, naming)."""

    def __init__(self, ctx, root: torch.nn.Module, *, activations=True, functional=True, inputs=True):
        self.ctx = ctx
        self.root = root
        self.functional = functional
        self.inputs = inputs
        #: module -> qualified name (the root is "")
        self.names: dict = {}
        for name, m in root.named_modules(remove_duplicate=True):
            self.names.setdefault(m, name)
        self.module_names = set(self.names.values())
        #: modules that transform data (own parameters, or channel-first like pooling): what
        #: an activation follows
        self.layers = {m for m in self.names if isinstance(m, CHANNEL_FIRST) or (
            not is_activation_like(m) and next(m.parameters(recurse=False), None) is not None)}
        #: weight layer name -> kind of the first activation seen after it (init-scale evidence)
        self.follows: dict[str, str] = {}
        self.capture: Capture | None = None
        self.depth = 0
        #: step of the latest sampled training forward that reached the hooks (None: never)
        self.forward_step = None
        #: sampled forwards in a row in which no hooked activation module reported
        self.silent_forwards = 0
        self.hooked: list[str] = []
        self.handles = []
        self._input_axis = 1 if self._first_layer_is_channel_first() else None
        #: {activation name: the layer it follows} where no module's call needs watching (see
        #: plain_order); only where sampled steps run eagerly, as the function mode also makes the
        #: compiler trace the watched variant of a forward elsewhere
        self.plain = None
        if functional and HOOKS_CAN_BE_OFF:
            order = plain_order(root, self.layers)
            self.plain = None if order is None else {self.names[m]: layer for m, layer in order.items()}
        self._hook_warning = _QuietGlobalHookWarning()
        self._off = None
        try:
            self._register(root, activations)
            #: the hooks, off between sampled steps where they can be (see _torch_switch)
            self._off = OffBetweenSampledSteps(ctx, ("hook", "forward"), self.handles)
        except BaseException:  # no half-attached model
            self.close()
            raise

    def _register(self, root, activations: bool) -> None:
        self.handles.append(root.register_forward_pre_hook(
            self._dual(("hook", "forward"), self._begin), with_kwargs=True))
        self.handles.append(root.register_forward_hook(
            self._dual(("hook", "forward"), self._end), with_kwargs=True, always_call=True))
        if activations:
            for m, name in self.names.items():
                kind = module_kind(m)
                if kind is not None:
                    self.handles.append(m.register_forward_hook(
                        self._dual(("hook", "activation", name), self._activation_hook(name, kind))))
                    self.hooked.append(name)

    def _first_layer_is_channel_first(self) -> bool:
        for m in self.root.modules():
            if isinstance(m, CHANNEL_FIRST):
                return True
            if any(True for _ in m.parameters(recurse=False)):
                return False
        return False

    def _dual(self, part, impl):
        """A hook that runs ``impl`` guarded, and eagerly even when called from compiled code. Outside
        a sampled forward every hook has nothing to do, and says so in its own frame: the hooks run on
        every forward of every step, one per activation module (hundreds in a large model)."""
        guarded = self.ctx.guard(part, impl)
        handover = in_graph(guarded)
        sampling = self.ctx.monitor.sampling

        def hook(*args):
            if is_compiling():
                if handover is not None:  # PyTorch without stances: the graph breaks here
                    return handover(*args)
                return None  # nothing: sampled steps run eagerly (see _torch_compile)
            if self.capture is None and not sampling.on:
                return None
            return guarded(*args)

        return hook

    # -- a forward pass that is not the model's own call (Lightning's training_step) ----------
    def open_pass(self, module, inputs) -> None:
        """Start capturing as if ``module`` were called with ``inputs``: for a framework whose forward
        pass is a method other than ``forward`` (a call of the module inside it nests in this one)."""
        self._begin(module, (inputs,), {})

    def close_pass(self, module, output) -> None:
        """End the pass :meth:`open_pass` started, whatever ran nested inside it."""
        if self.capture is not None:
            self.depth = 0
            self._end(module, (), {}, output)

    # -- the model's own forward -------------------------------------------------------
    def _begin(self, module, args, kwargs):
        if self.capture is not None:
            self.depth += 1  # the model calls itself: one capture for the outer call
            return None
        mon = self.ctx.monitor
        if not (mon.sampled and module.training):
            return None
        self.forward_step = mon._next
        self.depth = 0
        if self.inputs:
            x = _first_input(args, kwargs)
            if x is not None:
                mon.observe_input(x, unit_axis=self._input_axis if x.ndim == 3 else None)
        # also from compiled code (a graph break): the function mode makes the compiler trace a
        # variant of the forward for sampled steps, with every hook and activation in it
        self.capture = Capture(self, module)
        return None

    def _end(self, module, args, kwargs, output):
        capture = self.capture
        if capture is None:
            return None
        if self.depth:
            self.depth -= 1
            return None
        self.capture = None
        capture.close()
        if output is None:  # the forward raised: nothing it saw is trustworthy
            return None
        if self.hooked:
            self.silent_forwards = 0 if capture.module_hits else self.silent_forwards + 1
            if self.silent_forwards == 2:
                self.ctx.activation_layers_silent(self.hooked)
        self._flush(capture, output)
        self.ctx.after_forward(output)
        return None

    def _flush(self, capture: Capture, output) -> None:
        outputs = {id(t) for t in tree_leaves(output) if isinstance(t, torch.Tensor)}
        for name, kind, layout, vec, ref in capture.entries:
            produced = ref()
            if produced is not None and id(produced) in outputs:
                self.ctx.say(f"output-activation:{name}", logging.INFO,
                             f"nnhealth: {name!r} ({kind}) produces the model's output: an output "
                             "nonlinearity, not a hidden layer, so the activation checks leave it out")
                continue
            self.ctx.add_activation(name, kind, layout, vec)

    # -- activation modules --------------------------------------------------------------
    def _activation_hook(self, name: str, kind: str):
        def observe(module, args, output):
            capture = self.capture
            if capture is None:
                mon = self.ctx.monitor
                if not (mon.sampled and module.training) or not isinstance(output, torch.Tensor):
                    return None
                # called on its own, outside the model's forward: no output to compare with
                capture = Capture(self, self.root, watch_calls=False)
                capture.add(name, kind, output)
                for entry in capture.entries:
                    self.ctx.add_activation(*entry[:4])
                return None
            capture.module_hits += 1
            if isinstance(output, torch.Tensor):
                capture.add(name, kind, output)
            return None

        return observe

    def close(self) -> None:
        if self._off is not None:
            self._off.close()
        for h in self.handles:
            h.remove()
        self.handles = []
        self._hook_warning.remove()
        if self.capture is not None:
            self.capture.close()
            self.capture = None
        self.names = {}


def _first_input(args, kwargs):
    """The first floating-point tensor handed to the model (else its first tensor, e.g. token ids)."""
    # 0-d tensors are arguments, not inputs (Hugging Face Trainer passes num_items_in_batch)
    leaves = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor) and t.ndim > 0]
    for t in leaves:
        if t.is_floating_point():
            return t
    return leaves[0] if leaves else None
