"""Living with ``torch.compile``: compiled forwards untouched on most steps, run eagerly on sampled ones.

A forward hook present when a module is compiled is traced with it. Had
nnhealth's hooks handed over to Python there (a graph break), every step
would pay for it, and a break inside a loop (``nn.Sequential``, a model's
``for block in self.blocks``) makes the compiler give up on that whole
function for good. So a traced hook does nothing at all: the compiled graph
is the one the model has unwatched. Sampled steps instead run compiled code
eagerly (:func:`hold_eager`, the compiler's ``force_eager`` stance, from the
``step()`` before a sampled step to the ``step()`` that ends it: every
micro-batch of the step is seen, and the stance is the same when a compiled
call begins and ends, which ``fullgraph=True`` checks), where every hook sees
real tensors. On PyTorch older than 2.6, which has no
stances, each hook hands over to a function marked :func:`eager` as before,
and hooks added after a module was compiled and run may never be called:
:func:`compiled_parts` finds such modules so the adapter can name them, and
:func:`refresh` drops their compiled code once so that the next call
compiles the hooks in.
"""
from __future__ import annotations

import torch

try:
    from torch.compiler import is_compiling
except ImportError:  # torch < 2.3
    from torch._dynamo import is_compiling  # noqa: F401

try:
    from torch._dynamo import disable as _disable
    _COMPILER = True
except ImportError:  # a build without the compiler: nothing is ever compiled
    _COMPILER = False

    def _disable(fn=None, recursive=True):
        return fn


#: sampled steps run compiled code eagerly (``torch.compiler.set_stance``, PyTorch 2.6 and later)
EAGER_WHEN_SAMPLED = _COMPILER and hasattr(getattr(torch, "compiler", None), "set_stance")
#: nnhealth's module hooks may be off between sampled steps: code compiled then, without them, runs eagerly
#: with them on sampled steps (or nothing is ever compiled); older PyTorch could run it without them
HOOKS_CAN_BE_OFF = EAGER_WHEN_SAMPLED or not _COMPILER

#: the stance set while any owner holds it: [handle that restores the one before, set of owners]
_held: list = [None, set()]


def hold_eager(owner) -> None:
    """Run compiled code eagerly until every owner has called :func:`release_eager`."""
    if not EAGER_WHEN_SAMPLED or owner is None or owner in _held[1]:
        return
    if _held[0] is None:
        _held[0] = torch.compiler.set_stance("force_eager")
    _held[1].add(owner)


def release_eager(owner) -> None:
    """``owner`` no longer needs compiled code run eagerly; the last one restores the stance before."""
    owners = _held[1]
    if owner is None or owner not in owners:
        return
    owners.discard(owner)
    if not owners:
        handle, _held[0] = _held[0], None
        handle.__exit__(None, None, None)


def eager(fn):
    """``fn`` always runs eagerly: called from compiled code, the graph breaks around it."""
    return _disable(fn, recursive=True)


def in_graph(fn):
    """What a hook traced into compiled code hands over to: nothing (None) where sampled steps run
    compiled code eagerly, else ``fn`` run eagerly behind a graph break (PyTorch without stances)."""
    return None if EAGER_WHEN_SAMPLED else eager(fn)


def _optimized_module_type():
    try:
        from torch._dynamo.eval_frame import OptimizedModule
    except ImportError:
        return ()
    return OptimizedModule


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module that holds the layers: inside ``torch.compile`` and DistributedDataParallel wrappers."""
    optimized = _optimized_module_type()
    while True:
        if optimized and isinstance(model, optimized):
            model = model._orig_mod
        elif isinstance(getattr(model, "module", None), torch.nn.Module) and type(model).__name__ in (
                "DistributedDataParallel", "DataParallel"):
            model = model.module
        else:
            return model


def compiled_parts(model: torch.nn.Module) -> list[str]:
    """Qualified names of the modules already compiled (``torch.compile(m)`` or ``m.compile()``)."""
    optimized = _optimized_module_type()
    out = []
    for name, m in model.named_modules():
        if (optimized and isinstance(m, optimized)) or getattr(m, "_compiled_call_impl", None) is not None:
            out.append(name or "<model>")
    return out


def _forward_codes(model: torch.nn.Module) -> list:
    """The code objects the compiler caches compiled frames on: each compiled module's ``forward``."""
    optimized = _optimized_module_type()
    codes = []
    for m in model.modules():
        if optimized and isinstance(m, optimized):
            m = m._orig_mod
        elif getattr(m, "_compiled_call_impl", None) is None:
            continue
        code = getattr(type(m).forward, "__code__", None)
        if code is not None and code not in codes:
            codes.append(code)
    return codes


def refresh(model: torch.nn.Module) -> bool:
    """Drop the compiled code of ``model``'s compiled modules, so their next call compiles again,
    hooks included. One recompilation (for every instance of those classes); False if this
    version of PyTorch offers no way to do it."""
    try:
        from torch._C._dynamo.eval_frame import reset_code
    except ImportError:
        return False
    codes = _forward_codes(model)
    for code in codes:
        reset_code(code)
    return bool(codes)
