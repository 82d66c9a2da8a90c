"""Living with ``torch.compile``: hooks that run eagerly inside compiled code, and what to say when they cannot.

A forward hook present when a module is compiled is traced with it. nnhealth's
hooks read and write Python state (is this step sampled? the pending
statistics), which must not be baked into a graph, so each hook checks
:func:`is_compiling` and hands over to a function marked :func:`eager`: the
compiler breaks the graph there and calls it with real tensors. On older
versions of PyTorch, hooks added after a module was compiled and run are
never called at all; :func:`compiled_parts` finds such modules so the adapter
can name them when activations fail to arrive, and :func:`refresh` drops
their compiled code once so that the next call compiles the hooks in.
"""
from __future__ import annotations

import torch

try:
    from torch.compiler import is_compiling
except ImportError:  # torch < 2.3
    from torch._dynamo import is_compiling  # noqa: F401

try:
    from torch._dynamo import disable as _disable
except ImportError:  # a build without the compiler: nothing is ever compiled
    def _disable(fn=None, recursive=True):
        return fn


def eager(fn):
    """``fn`` always runs eagerly: called from compiled code, the graph breaks around it."""
    return _disable(fn, recursive=True)


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
