"""Module hooks taken off between sampled steps, and put back at their place for the next one.

A module with any forward hook takes PyTorch's slow call path: its hook
lists are walked on every call, a few microseconds per module, on every
step, for hooks that have nothing to do on the steps that are not sampled
(60 us of a small MLP's 0.8 ms CPU step, for 15 layers; on a GPU host, where
a small model's step is the CPU launching kernels, more); an optimizer calls
its step hooks on every step too. So between sampled steps nnhealth's
hooks are taken off, and before the next one they are put back where they
were among the module's (or optimizer's) hooks, which run in the order of
their dict: behind those that were before it (or, if none is left, before
the first of those that were after it), so a user's hook that changes a
layer's output keeps running before or after ours as it did, ``prepend=True``
included. A hook registered while ours was off comes after ours where it was
appended, and before it where it was prepended ahead of ours' old neighbours
(with none of them left, after it).
"""
from __future__ import annotations

from collections import OrderedDict

from ._torch_compile import HOOKS_CAN_BE_OFF


class SwitchableHook:
    """One registered module hook (its ``RemovableHandle``) that can be taken off and put back."""

    def __init__(self, handle):
        self.handle = handle
        self.id = handle.id
        refs = (handle.hooks_dict_ref, *getattr(handle, "extra_dict_ref", ()))
        #: (weakref to a dict that holds the hook or one of its flags, what it holds)
        self.entries = [(ref, ref()[self.id]) for ref in refs if ref() is not None and self.id in ref()]
        if not self.entries or not isinstance(self.entries[0][0](), OrderedDict):
            raise TypeError("this PyTorch keeps module hooks in a way nnhealth cannot put them back into")
        self.on = True
        #: the ids of the hooks that ran before and after it when it was taken off
        self._before: set = set()
        self._after: set = set()

    def off(self) -> None:
        if not self.on:
            return
        hooks = self.entries[0][0]()
        if hooks is not None and self.id in hooks:  # (not if something cleared the module's hooks)
            order = list(hooks)
            at = order.index(self.id)
            self._before, self._after = set(order[:at]), set(order[at + 1:])
        self.handle.remove()
        self.on = False

    def put_back(self) -> None:
        if self.on:
            return
        for i, (ref, value) in enumerate(self.entries):
            hooks = ref()
            if hooks is None:  # the module is gone
                continue
            place = self._place(list(hooks)) if i == 0 else None
            hooks[self.id] = value
            if place is not None:  # the hooks that go behind it, moved there in their order
                for later in place:
                    hooks.move_to_end(later)
        self.on = True

    def _place(self, order: list) -> list:
        """The ids in ``order`` (the hooks now, without this one) that go behind this one."""
        before = [i for i, k in enumerate(order) if k in self._before]
        if before:
            return order[before[-1] + 1:]
        after = [i for i, k in enumerate(order) if k in self._after]
        return order[after[0]:] if after else order


def switchable(handles: list) -> list[SwitchableHook]:
    """The hooks of ``handles`` as switchable ones; none (all stay on) where this PyTorch keeps hooks
    otherwise than nnhealth expects."""
    try:
        return [SwitchableHook(h) for h in handles]
    except (TypeError, AttributeError, KeyError):
        return []


class OffBetweenSampledSteps:
    """``handles``' hooks taken off when sampling stops and put back as a sampled step begins (at the
    ``step()`` before it), while attached to the monitor's sampling. Where they cannot be (PyTorch
    without compiler stances: see ``HOOKS_CAN_BE_OFF``), and at every=1, they stay on."""

    def __init__(self, ctx, part: tuple, handles: list):
        sampling = ctx.monitor.sampling
        self._sampling = sampling
        self.hooks = switchable(handles) if HOOKS_CAN_BE_OFF and ctx.monitor.every > 1 else []
        self._listener = None
        if self.hooks:
            self._listener = ctx.guard(part, self._changed)
            sampling.listeners.append(self._listener)
            self._listener(sampling.on)

    def _changed(self, on: bool) -> None:
        for hook in self.hooks:
            if on:
                hook.put_back()
            else:
                hook.off()

    def close(self) -> None:
        """Stop switching (the hooks themselves are removed through their handles)."""
        if self._listener in self._sampling.listeners:
            self._sampling.listeners.remove(self._listener)
        self._listener, self.hooks = None, []
