"""Which PyTorch modules and functions are activations, and of which kind.

The kind names are those of :mod:`nnhealth.stats.kinds` (what "saturated" and
"dead" mean for each). Modules are matched most specific class first
(``ReLU6`` is a ``Hardtanh``); functions by identity, in every spelling a
``forward`` uses: ``F.relu``, ``torch.relu``, ``x.relu()``, ``x.relu_()``...
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: module class -> kind, most specific first
MODULE_KINDS: tuple[tuple[type, str], ...] = (
    (nn.ReLU6, "relu6"),
    (nn.ReLU, "relu"),
    (nn.LeakyReLU, "leaky_relu"),
    (nn.PReLU, "prelu"),
    (nn.RReLU, "rrelu"),
    (nn.ELU, "elu"),
    (nn.CELU, "celu"),
    (nn.SELU, "selu"),
    (nn.GELU, "gelu"),
    (nn.SiLU, "silu"),
    (nn.Mish, "mish"),
    (nn.Softplus, "softplus"),
    (nn.Hardswish, "hardswish"),
    (nn.Tanh, "tanh"),
    (nn.Sigmoid, "sigmoid"),
    (nn.Softsign, "softsign"),
    (nn.Hardsigmoid, "hardsigmoid"),
    (nn.Hardtanh, "hardtanh"),
)

#: modules that compute an element-wise activation nnhealth has no kind for: functions they
#: call inside are theirs, not the enclosing layer's
OPAQUE_MODULES: tuple[type, ...] = (
    nn.Threshold, nn.Tanhshrink, nn.Softshrink, nn.Hardshrink, nn.LogSigmoid, nn.GLU,
    nn.Softmax, nn.Softmin, nn.LogSoftmax, nn.Softmax2d,
)

#: layers whose output keeps channels on axis 1 whatever its rank (N, C, L...)
CHANNEL_FIRST: tuple[type, ...] = (
    nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm,
    nn.GroupNorm, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
)


def module_kind(module: nn.Module) -> str | None:
    """The activation kind of ``module``, or None when it is not an activation layer.

    A ``Hardtanh`` with other bounds than [-1, 1] saturates elsewhere than the
    ``hardtanh`` kind says, so it is not given one.
    """
    for cls, kind in MODULE_KINDS:
        if isinstance(module, cls):
            if kind == "hardtanh" and (module.min_val, module.max_val) != (-1.0, 1.0):
                return None
            return kind
    return None


_ACTIVATION_CLASSES = tuple(cls for cls, _ in MODULE_KINDS) + OPAQUE_MODULES


def is_activation_like(module: nn.Module) -> bool:
    """An element-wise activation layer, known or not: calls inside it are not the layer's own."""
    return isinstance(module, _ACTIVATION_CLASSES)


def _functions() -> dict:
    """{function: (label, kind)} for every spelling of each activation function."""
    spellings = {
        # label: (kind, callables)
        "relu": ("relu", ("F.relu", "F.relu_", "torch.relu", "torch.relu_", "T.relu", "T.relu_")),
        "relu6": ("relu6", ("F.relu6",)),
        "leaky_relu": ("leaky_relu", ("F.leaky_relu", "F.leaky_relu_")),
        "prelu": ("prelu", ("F.prelu", "torch.prelu", "T.prelu")),
        "rrelu": ("rrelu", ("F.rrelu", "F.rrelu_", "torch.rrelu", "torch.rrelu_")),
        "elu": ("elu", ("F.elu", "F.elu_")),
        "celu": ("celu", ("F.celu", "F.celu_", "torch.celu", "torch.celu_")),
        "selu": ("selu", ("F.selu", "F.selu_", "torch.selu", "torch.selu_")),
        "gelu": ("gelu", ("F.gelu",)),
        "silu": ("silu", ("F.silu",)),
        "mish": ("mish", ("F.mish",)),
        "softplus": ("softplus", ("F.softplus",)),
        "hardswish": ("hardswish", ("F.hardswish",)),
        "tanh": ("tanh", ("F.tanh", "torch.tanh", "torch.tanh_", "T.tanh", "T.tanh_")),
        "sigmoid": ("sigmoid", ("F.sigmoid", "torch.sigmoid", "torch.sigmoid_", "T.sigmoid", "T.sigmoid_",
                                "torch.special.expit")),
        "softsign": ("softsign", ("F.softsign",)),
        "hardsigmoid": ("hardsigmoid", ("F.hardsigmoid",)),
        "hardtanh": ("hardtanh", ("F.hardtanh", "F.hardtanh_")),
    }
    roots = {"F": F, "torch": torch, "T": torch.Tensor}
    out = {}
    for label, (kind, names) in spellings.items():
        for dotted in names:
            head, *rest = dotted.split(".")
            obj = roots[head]
            for part in rest:
                obj = getattr(obj, part, None)
            if obj is not None:  # absent in this torch version
                out[obj] = (label, kind)
    return out


#: {function: (label, kind)}: what the functional-activation mode looks for
FUNCTION_KINDS: dict = _functions()

#: hardtanh with other bounds is not the hardtanh kind (see :func:`module_kind`)
BOUNDED_FUNCTIONS = {F.hardtanh, getattr(F, "hardtanh_", None)} - {None}


def function_kind(func, args, kwargs) -> tuple[str, str] | None:
    """(label, kind) of a functional activation call, or None for anything else."""
    try:
        found = FUNCTION_KINDS.get(func)
    except TypeError:  # an unhashable callable is no activation of ours
        return None
    if found is not None and func in BOUNDED_FUNCTIONS:
        lo = kwargs.get("min_val", args[1] if len(args) > 1 else -1.0)
        hi = kwargs.get("max_val", args[2] if len(args) > 2 else 1.0)
        if (lo, hi) != (-1.0, 1.0):
            return None
    return found


#: the files of torch.nn whose modules compute their own operation and call no activation function
#: (those of ``activation`` are the activation layers themselves, ``container``'s only Sequential)
_PLAIN_FILES = frozenset({"linear", "conv", "batchnorm", "normalization", "instancenorm", "dropout", "flatten",
                          "pooling", "sparse", "padding", "pixelshuffle", "upsampling", "channelshuffle",
                          "activation", "container"})


class _NotPlain(Exception):
    pass


def _is_plain(module: nn.Module) -> bool:
    if "forward" in vars(module):  # a forward replaced on the instance
        return False
    forward = type(module).forward
    head, _, file = (getattr(forward, "__module__", None) or "").rpartition(".")
    if head != "torch.nn.modules" or file not in _PLAIN_FILES:
        return False
    if file == "activation":  # MultiheadAttention lives there too
        return is_activation_like(module)
    if file == "container":
        return isinstance(module, nn.Sequential) and forward is nn.Sequential.forward
    return not module._modules


def plain_order(root: nn.Module, layers) -> dict | None:
    """{activation module: the member of ``layers`` it follows, or None} when ``root`` is torch.nn's own
    modules chained by Sequential (nested or not, none used twice): then which layer each activation
    follows, and that no activation is called as a function, are known without running the forward.
    None for any other model (a forward of its own may call ``F.relu``, or run its layers in any order)."""
    order: dict = {}
    seen: set = set()
    last = None

    def walk(module):
        nonlocal last
        if id(module) in seen or not _is_plain(module):
            raise _NotPlain
        seen.add(id(module))
        if isinstance(module, nn.Sequential):
            for child in module._modules.values():
                if child is not None:
                    walk(child)
        elif is_activation_like(module):
            if module_kind(module) is not None:
                order[module] = last
        elif module in layers:
            last = module

    try:
        walk(root)
    except _NotPlain:
        return None
    return order
