"""Keras 3: ``model.fit(..., callbacks=[HealthCallback(sample=x_train[:256])])``.

Written against Keras' backend-neutral API (tested on the torch and jax backends).
What it reads, per batch:

- the loss and metrics from ``logs``. Keras logs running means over the epoch; the
  batch's own loss is recovered from two consecutive means (exact for equal-sized
  batches), so a loss that explodes is seen when it happens, not diluted;
- on sampled steps (every ``every`` batches): the weights from
  ``model.trainable_variables`` before and after the batch (the update actually
  applied, whatever the optimizer), and every activation layer's output on a held
  ``sample`` batch, through a probe model sharing the watched model's layers
  (Functional and Sequential models);
- ``val_*`` metrics at the end of each epoch.

Gradients never reach a Keras callback, so the gradient rules stay silent here; the
updates (and their ratio to the weights) carry the learning-rate checks instead. A
critical finding (NaN loss, exploding loss) sets ``model.stop_training``.
"""
from __future__ import annotations

import contextlib
import logging

import numpy as np

try:
    import keras
except ImportError as e:
    raise ImportError(f"nnhealth.hooks.keras needs Keras 3 with an installed backend ({e}): pip install "
                      "'nnhealth[keras]' and set KERAS_BACKEND to torch, jax or tensorflow") from e

from nnhealth import Monitor

from ._callback_metrics import rename
from ._keras_layers import Probe, unit_axis

__all__ = ["HealthCallback"]


def _no_grad():
    """The torch backend records a graph for every eager op unless told not to."""
    if keras.backend.backend() == "torch":
        import torch

        return torch.no_grad()
    return contextlib.nullcontext()


def _fan_in(shape) -> int | None:
    """Inputs per output unit of a Keras kernel (output units last), None for a bias."""
    return int(np.prod(shape[:-1])) if len(shape) >= 2 else None


class HealthCallback(keras.callbacks.Callback):
    """Watches a Keras model while ``fit`` trains it.

    ``monitor``: a :class:`~nnhealth.Monitor` to report to; by default one is made from
    ``logdir``, ``every``, ``num_classes`` and ``monitor_options`` and closed when training
    ends. ``sample``: a batch of inputs (as passed to ``fit`` as ``x``) for the activation
    statistics; without it, activations are not watched. ``stop_on_critical``: set
    ``model.stop_training`` on a critical finding.
    """

    def __init__(self, monitor: Monitor | None = None, *, sample=None, logdir=None, every: int = 10,
                 num_classes: int | None = None, stop_on_critical: bool = True, activations: bool = True,
                 weights: bool = True, **monitor_options):
        super().__init__()
        self._given = monitor
        self._options = dict(logdir=logdir, every=every, num_classes=num_classes, **monitor_options)
        self.monitor = monitor
        self.sample = sample
        self.stop_on_critical = stop_on_critical
        self.watch_activations = activations
        self.watch_weights = weights
        self.step = 0
        self._probe = None
        self._before = None
        self._mean = (0, 0.0)  # (batches, running-mean loss) so far this epoch

    # -- lifecycle -----------------------------------------------------------
    def on_train_begin(self, logs=None):
        if self.monitor is None:
            self.monitor = Monitor(**self._options)
            self.step = 0
        self._probe = None

    def on_train_end(self, logs=None):
        if self.monitor is not None and self._given is None:
            self.monitor.close()
            self.monitor = None

    def on_epoch_begin(self, epoch, logs=None):
        self._mean = (0, 0.0)  # Keras resets its metrics every epoch

    # -- batches -------------------------------------------------------------
    def on_train_batch_begin(self, batch, logs=None):
        mon = self.monitor
        self._before = None
        if mon is None or not self.watch_weights or not mon.wants_layer_stats(self.step):
            return
        self._guard("weights", self._snapshot)

    def _snapshot(self):
        with _no_grad():
            self._before = [(v.path, keras.ops.copy(v.value)) for v in self.model.trainable_variables]

    def on_train_batch_end(self, batch, logs=None):
        mon = self.monitor
        if mon is None:
            return
        logs = dict(logs or {})
        loss = self._batch_loss(batch, logs.pop("loss", None))
        if self._before is not None:
            self._guard("weights", self._observe_weights)
            self._before = None
        if self.watch_activations and mon.wants_layer_stats(self.step):
            self._guard("activations", self._observe_activations)
        mon.step(self.step, loss=loss, **rename(logs))
        self.step += 1
        self._stop_if_critical()

    def on_epoch_end(self, epoch, logs=None):
        mon = self.monitor
        val = {k: v for k, v in (logs or {}).items() if k.startswith("val_")}
        if mon is None or not val or self.step == 0:
            return
        mon.step(self.step - 1, **rename(val))  # the epoch's last step, now with its validation
        self._stop_if_critical()

    # -- what is observed ----------------------------------------------------
    def _batch_loss(self, batch: int, mean):
        """This batch's loss from Keras' running mean over the epoch (``batch`` counts from 0)."""
        if not isinstance(mean, (int, float)):
            return mean  # not a plain number: handed to the monitor as it is
        seen, before = batch + 1, self._mean
        self._mean = (seen, float(mean))
        if seen <= before[0]:  # an unusual batch numbering: the running mean is the best there is
            return float(mean)
        return (seen * float(mean) - before[0] * before[1]) / (seen - before[0])

    def _observe_weights(self):
        mon = self.monitor
        with _no_grad():
            after = {v.path: v.value for v in self.model.trainable_variables}
            for name, before in self._before:
                now = after.get(name)
                if now is None:
                    continue
                mon.observe_update(name, now - before, param=before)
                shape = tuple(before.shape)
                mon.observe_parameter(name, before, fan_in=_fan_in(shape), unit_axis=-1 if len(shape) >= 2 else None)

    def _observe_activations(self):
        if self.sample is None:
            self.monitor._say_once("keras-sample", "nnhealth: pass HealthCallback(sample=a batch of inputs) to see "
                                   "per-layer activations", logging.INFO)
            return
        if self._probe is None:
            self._probe = Probe(self.model)
            if self._probe.model is None:
                self.monitor._say_once("keras-probe", "nnhealth: no activation layer of this model can be probed "
                                       "(subclassed models have no layer outputs); activations are not watched",
                                       logging.INFO)
        with _no_grad():
            outputs = self._probe(self.sample)
            for name, kind, axis, out in outputs:
                self.monitor.observe_activation(name, out, kind=kind, unit_axis=axis)
            if not isinstance(self.sample, (dict, list, tuple)):
                self.monitor.observe_input(self.sample, unit_axis=unit_axis(None, len(np.shape(self.sample))))

    # -- failing open ----------------------------------------------------------
    def _guard(self, part: str, fn) -> None:
        """Run ``fn``; an error is reported once and that part is switched off (training goes on)."""
        mon = self.monitor
        key = ("keras", part)
        if key in mon._broken:
            return
        try:
            fn()
        except Exception as e:
            mon._failed(key, e)

    def _stop_if_critical(self):
        if self.stop_on_critical and self.monitor.should_stop:
            self.model.stop_training = True
