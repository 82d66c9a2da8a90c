"""Names for the arrays inside a JAX pytree, in the order the network uses them.

A name is the tree path joined with dots (``Dense_0.kernel``, ``blocks.3.mlp.kernel``),
without the parts every Flax tree carries: the collection at the top (``params``,
``intermediates``), the ``.value`` of an NNX variable, a module's ``__call__``, and,
for activations, the index of the call (a module called twice contributes two
samples to one name, merged by the Monitor).

Depth order matters to the rules that compare layers: a mapping's own order is kept
(Linen records intermediates in call order); a mapping whose keys come sorted anyway
(NNX states, ``jax.tree_util``) is re-sorted naturally, so ``layer10`` follows ``layer9``.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

#: top-level Flax collections whose name says nothing about the layer
COLLECTIONS = frozenset({"params", "intermediates"})
#: path parts that never name anything: NNX variables hold their array in ``.value``
SKIP = frozenset({"value", "__call__"})


def _part(key):
    """One path entry: a sequence index stays an int (activations drop a trailing one)."""
    if hasattr(key, "idx"):
        return key.idx
    for attr in ("key", "name"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def natural_key(text: str):
    """Sort key that orders the numbers inside names by value (``fc2`` before ``fc10``)."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text)]


def _items(node):
    keys = list(node.keys())
    if [str(k) for k in keys] == sorted(str(k) for k in keys):
        keys.sort(key=lambda k: natural_key(str(k)))
    return [(k, node[k]) for k in keys]


def _walk(node, path: tuple, out: list) -> None:
    if isinstance(node, Mapping):
        for key, value in _items(node):
            _walk(value, path + (str(key),), out)
    elif isinstance(node, (list, tuple)) and not hasattr(node, "_fields"):
        for i, value in enumerate(node):  # a tuple holds the calls of one sown value; a list, layers
            _walk(value, path + ((i,) if isinstance(node, tuple) else (str(i),)), out)
    elif node is None:
        return
    elif isinstance(node, (jax.Array, np.ndarray)):
        out.append((path, node))
    else:  # any other pytree node (NNX variables, dataclasses, named tuples): JAX knows its children
        leaves, _ = jax.tree_util.tree_flatten_with_path(node)
        if len(leaves) == 1 and leaves[0][1] is node:
            return  # a leaf that is not an array (a Python number, a string)
        for sub, value in leaves:
            out.append((path + tuple(_part(k) for k in sub), value))


def name_of(path: tuple, activation: bool = False) -> str:
    """The dotted name of one leaf's path (see the module docstring for what is left out)."""
    parts = list(path)
    if activation and parts and isinstance(parts[-1], int):
        parts.pop()  # which call of a sown or captured value: all calls are one layer
    if parts and parts[0] in COLLECTIONS:
        parts.pop(0)
    return ".".join(str(p) for p in parts if p not in SKIP)


def named_leaves(tree, activation: bool = False) -> list[tuple[str, object]]:
    """``[(name, array)]`` for every floating-point array in ``tree``, in depth order."""
    found: list = []
    _walk(tree, (), found)
    out = []
    for path, value in found:
        dtype = getattr(value, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.inexact):
            continue  # step counters, integer ids, PRNG keys: not statistics material
        out.append((name_of(path, activation), value))
    return out
