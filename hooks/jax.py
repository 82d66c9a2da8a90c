"""JAX, Flax and Optax: hand the Monitor whole pytrees, named by their paths.

A JAX training step is a pure function, so there is nothing to hook: the step
returns what it computed (gradients, Optax updates, Flax intermediates) and one
call hands each tree to the Monitor::

    from nnhealth.hooks import jax as nnjax

    (loss, inter), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    nnjax.step(mon, i, loss=loss, grads=grads, params=params, updates=updates, activations=inter)
    params = optax.apply_updates(params, updates)

Statistics are computed by ``jax.numpy`` on the arrays' own device
(:mod:`nnhealth.stats.backend_jax`); the Monitor copies a step's numbers to the
host once, in :meth:`~nnhealth.Monitor.step`. Flax kernels keep their output
units on the last axis and Flax convolutions are channels-last, so both are read
that way. Activations come from ``capture_intermediates=True`` (module outputs,
linear unless named otherwise) or from ``self.sow("intermediates", "relu1", h)``;
the kind of an activation is read from its name (``relu1``, ``act_tanh``) unless
``kind`` or ``kinds`` say it.
"""
from __future__ import annotations

import re

from nnhealth.stats.kinds import ALIASES, KINDS, get_kind

try:
    from ._jax_tree import named_leaves
except ModuleNotFoundError as e:
    if (e.name or "").partition(".")[0] != "jax":
        raise
    raise ImportError(f"nnhealth.hooks.jax needs JAX ({e}): pip install 'nnhealth[jax]'") from e

#: what observe_tree accepts, and the other spellings of each
ROLES = {"grads": "grads", "gradients": "grads", "params": "params", "parameters": "params",
         "updates": "updates", "activations": "activations", "intermediates": "activations",
         "inputs": "inputs"}


def kind_from_name(name: str) -> str:
    """The activation kind a layer's name says (``relu1`` -> relu, ``act_tanh`` -> tanh), else linear."""
    last = name.rsplit(".", 1)[-1].lower()
    for candidate in (last, re.sub(r"[_\d]+$", "", last)):
        if candidate in KINDS or candidate in ALIASES:
            return get_kind(candidate).name
    for token in re.split(r"[^a-z]+", last):
        token = re.sub(r"\d+$", "", token)
        if token in KINDS or token in ALIASES:
            return get_kind(token).name
    return "linear"


def observe_tree(mon, what: str, tree, *, params=None, kind: str | None = None,
                 kinds: dict[str, str] | None = None, unit_axis: int = -1) -> None:
    """Observe every floating-point array of ``tree`` as ``what``.

    ``what``: ``grads``, ``params`` (call it every step: the update ratio is measured between
    consecutive calls when no ``updates`` are given), ``updates`` (Optax updates; ``params`` is
    the tree before they are applied), ``activations`` (Flax intermediates; ``kind`` for all or
    ``kinds`` by name, else read from the names) or ``inputs`` (a batch, or a tree of batches).
    ``unit_axis`` is the output-unit axis of kernels and activations (-1: Flax's convention).
    Errors are reported once and the observation is skipped: the training step never fails.
    """
    role = ROLES.get(what)
    if role is None:
        mon._failed(("jax", str(what)), ValueError(f"observe_tree: unknown tree {what!r}; expected one of: "
                                                   f"{', '.join(sorted(set(ROLES.values())))}"))
        return
    if not mon.sampled and (role != "params" or not mon._snapshots):
        return  # nothing to summarise now (parameters: unless one step's update is measured from them)
    try:
        _observe(mon, role, tree, params, kind, kinds or {}, unit_axis)
    except Exception as e:  # a tree the walker cannot read: report once, keep training
        mon._failed(("jax", role), e)


def _observe(mon, role, tree, params, kind, kinds, unit_axis):
    if role == "activations":
        for name, x in named_leaves(tree, activation=True):
            k = kinds.get(name) or kinds.get(name.rsplit(".", 1)[-1]) or kind or kind_from_name(name)
            mon.observe_activation(name or "output", x, kind=k, unit_axis=unit_axis)
    elif role == "grads":
        for name, g in named_leaves(tree):
            mon.observe_gradient(name or "param", g)
    elif role == "params":
        for name, p in named_leaves(tree):
            fan_in = _fan_in(p, unit_axis)
            mon.observe_parameter(name or "param", p, fan_in=fan_in, unit_axis=unit_axis if p.ndim >= 2 else None)
    elif role == "updates":
        before = dict(named_leaves(params)) if params is not None else {}
        for name, u in named_leaves(tree):
            mon.observe_update(name or "param", u, param=before.get(name))
    else:
        for name, x in named_leaves(tree):
            mon.observe_input(x, name=name or "input", unit_axis=unit_axis)


def _fan_in(p, unit_axis: int) -> int | None:
    """Inputs per output unit of a kernel: every axis but the unit axis (None for biases)."""
    if p.ndim < 2:
        return None
    n = 1
    for axis, size in enumerate(p.shape):
        if axis != unit_axis % p.ndim:
            n *= size
    return n


def step(mon, step: int, loss=None, *, grads=None, params=None, updates=None, activations=None, inputs=None,
         kinds: dict[str, str] | None = None, **metrics):
    """Observe one training step's trees, then close the step; returns the new findings.

    ``params`` is the tree the gradients were taken at (before ``updates``). ``loss`` and
    ``metrics`` may be JAX scalars: they are copied to the host with the step's statistics.
    """
    if inputs is not None:
        observe_tree(mon, "inputs", inputs)
    if activations is not None:
        observe_tree(mon, "activations", activations, kinds=kinds)
    if grads is not None:
        observe_tree(mon, "grads", grads)
    if updates is not None:
        observe_tree(mon, "updates", updates, params=params)
    if params is not None:
        observe_tree(mon, "params", params)
    return mon.step(step, loss=loss, **metrics)
