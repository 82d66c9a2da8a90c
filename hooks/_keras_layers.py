"""Which Keras layers are activations, of which kind, and a probe model that returns them.

A layer is an activation when it applies a nonlinearity nnhealth has a kind for:
an ``Activation``/``ReLU``/``LeakyReLU``/``ELU``/``PReLU`` layer, or any layer built
with ``activation=`` (``Dense(64, activation="relu")``: its output is after the ReLU).
Linear layers are not activations, and neither is a layer whose output is the model's
output: an output nonlinearity (softmax, a sigmoid before binary cross-entropy) is
judged by the loss, not by the hidden-layer rules.
"""
from __future__ import annotations

import keras  # hooks/keras.py says what to install when it is missing

from nnhealth.stats.kinds import ALIASES, KINDS

#: Keras activation function names nnhealth spells differently
KERAS_NAMES = {"swish": "silu", "hard_silu": "hardswish", "hard_swish": "hardswish", "hard_tanh": "hardtanh",
               "hard_sigmoid": "hardsigmoid", "leaky_relu": "leaky_relu", "relu6": "relu6"}


def _kind_of_name(name: str | None) -> str | None:
    if not name:
        return None
    key = KERAS_NAMES.get(name, name)
    key = ALIASES.get(key, key)
    return key if key in KINDS and key != "linear" else None


def layer_kind(layer) -> str | None:
    """The activation kind ``layer`` outputs, or None when it is not an activation nnhealth knows."""
    layers = keras.layers
    if isinstance(layer, layers.ReLU):
        if getattr(layer, "negative_slope", 0.0):
            return "leaky_relu"
        return "relu6" if getattr(layer, "max_value", None) == 6 else "relu"
    for cls, kind in ((layers.LeakyReLU, "leaky_relu"), (layers.PReLU, "prelu"), (layers.ELU, "elu")):
        if isinstance(layer, cls):
            return kind
    activation = getattr(layer, "activation", None)
    return _kind_of_name(getattr(activation, "__name__", None)) if callable(activation) else None


def unit_axis(layer, ndim: int) -> int:
    """Channels are last unless the layer (or Keras' default) says channels_first."""
    fmt = getattr(layer, "data_format", None) or keras.config.image_data_format()
    return 1 if fmt == "channels_first" and ndim >= 3 else -1


class Probe:
    """A model sharing the watched model's layers that returns every activation layer's output."""

    def __init__(self, model):
        self.layers, tensors = [], []
        self.model = None
        try:
            inputs, outputs = model.inputs, {id(t) for t in model.outputs}  # both flat lists
        except (AttributeError, ValueError):  # a subclassed model: no symbolic graph to probe
            return
        for layer in model.layers:
            kind = layer_kind(layer)
            if kind is None:
                continue
            try:
                out = layer.output
            except (AttributeError, ValueError):  # a layer used twice, or never called symbolically
                continue
            if id(out) in outputs or not hasattr(out, "shape"):
                continue
            self.layers.append((layer, kind))
            tensors.append(out)
        if tensors:  # ``inputs`` is a list: one model input is passed on its own, as fit passes it
            self.model = keras.Model(inputs[0] if len(inputs) == 1 else inputs, tensors)

    def __call__(self, sample) -> list:
        """``[(name, kind, unit_axis, array)]`` for ``sample``, in depth order (inference mode)."""
        if self.model is None:
            return []
        outs = self.model(sample, training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        return [(layer.name, kind, unit_axis(layer, len(out.shape)), out)
                for (layer, kind), out in zip(self.layers, outs)]
