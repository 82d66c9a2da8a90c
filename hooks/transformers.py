"""Hugging Face Transformers: ``Trainer(..., callbacks=[HealthCallback()])``.

When training begins, the model and the optimizer the Trainer built are watched
with :meth:`nnhealth.Monitor.watch` (the PyTorch adapter: activations, gradients,
parameters, updates). The Monitor closes a step after every optimizer step.

The loss of each step is the ``loss`` the model returns in training (averaged over
accumulated micro-batches, or summed when the Trainer normalised them by
``num_items_in_batch``): the Trainer's own logged ``loss`` is an average over
``logging_steps`` (500 by default) in which NaN and Inf steps are replaced by that
average (``logging_nan_inf_filter``), so it would show a diverging run late or never.
A model that returns no loss (a custom ``compute_loss``) is judged on the logged
``loss`` instead. The other logged numbers are kept as series and ``eval_*`` metrics
(``eval_loss``, ``eval_accuracy``) are the validation metrics.

A critical finding (NaN loss, exploding loss) sets ``control.should_training_stop``.
"""
from __future__ import annotations

import os
import time

import torch

try:
    from transformers import TrainerCallback
except ImportError as e:
    raise ImportError(f"nnhealth.hooks.transformers needs Hugging Face Transformers ({e}): "
                      "pip install 'nnhealth[transformers]'") from e

from nnhealth import Monitor

from ._callback_metrics import rename, split
from ._callback_watch import MonitorOwner

__all__ = ["HealthCallback"]


def default_logdir(args) -> str | None:
    """Next to the Trainer's TensorBoard run when it reports to TensorBoard, else None (console)."""
    report_to = args.report_to or []
    if "tensorboard" not in report_to and "all" not in report_to:
        return None
    shared = os.environ.get("TENSORBOARD_LOGGING_DIR")  # where the Trainer's TensorBoard callback writes
    if shared:
        return os.path.expanduser(shared)
    return os.path.join(args.output_dir, "runs", time.strftime("%b%d_%H-%M-%S") + "_nnhealth")


def _torch_optimizer(optimizer):
    """The torch optimizer inside Accelerate's ``AcceleratedOptimizer`` (itself an Optimizer subclass
    that only delegates ``step``), whose step hooks are the ones that fire."""
    for _ in range(4):
        inner = getattr(optimizer, "optimizer", None)
        if not isinstance(inner, torch.optim.Optimizer):
            break
        optimizer = inner
    return optimizer if isinstance(optimizer, torch.optim.Optimizer) else None


class HealthCallback(MonitorOwner, TrainerCallback):
    """Watches a model while ``transformers.Trainer`` trains it.

    ``monitor``: a :class:`~nnhealth.Monitor` to report to; by default one is made when training
    begins (``logdir``, else next to the Trainer's TensorBoard run when it reports to TensorBoard;
    ``every``, ``num_classes`` and ``monitor_options`` are passed on) and closed when it ends.
    ``stop_on_critical``: set ``control.should_training_stop`` on a critical finding.
    """

    def __init__(self, monitor: Monitor | None = None, *, logdir=None, every: int = 10,
                 num_classes: int | None = None, stop_on_critical: bool = True, **monitor_options):
        self._init_monitor(monitor, logdir, every, num_classes, stop_on_critical, monitor_options)
        self._losses: list = []
        self._summed = False
        self._model_loss = False  # the model has returned a training loss at least once
        self._handle = None
        self._last_step = None

    # -- lifecycle -----------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        self._open(lambda: default_logdir(args))
        if model is not None:
            self._handle = model.register_forward_hook(self._capture_loss, with_kwargs=True)
            self._watch(model, _torch_optimizer(optimizer), "transformers")
        self._losses.clear()

    def on_train_end(self, args, state, control, **kwargs):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._release()

    # -- the loss of each step -------------------------------------------------
    def _capture_loss(self, module, args, kwargs, output):
        mon = self.monitor
        if mon is None or not (module.training and torch.is_grad_enabled()) or ("transformers", "loss") in mon._broken:
            return  # evaluation, or switched off
        try:
            loss = output.get("loss") if isinstance(output, dict) else getattr(output, "loss", None)
            if isinstance(loss, torch.Tensor) and loss.numel() == 1:
                self._losses.append(loss.detach().reshape(()))
                self._summed = kwargs.get("num_items_in_batch") is not None
                self._model_loss = True
        except Exception as e:  # a forward hook must never fail the forward
            mon._failed(("transformers", "loss"), e)

    def _step_loss(self):
        losses, self._losses = self._losses, []
        if not losses:
            return None
        if len(losses) == 1:
            return losses[0]
        total = torch.stack(losses).sum()
        return total if self._summed else total / len(losses)

    # -- steps, logs, evaluations ---------------------------------------------
    def on_step_end(self, args, state, control, **kwargs):
        if self.monitor is None:
            return control
        self._last_step = state.global_step - 1
        self.monitor.step(self._last_step, loss=self._step_loss())
        return self._stop_if_critical(control)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.monitor is None or self._last_step is None:
            return control
        train, _ = split(logs or {})  # eval_* arrive in on_evaluate
        train.pop("train_loss", None)  # the run's average loss, logged once at the end
        metrics = rename(train)
        if self._model_loss:
            metrics.pop("loss", None)  # already seen, step by step and unfiltered
        if metrics:
            self.monitor.step(self._last_step, **metrics)
        return self._stop_if_critical(control)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.monitor is None or self._last_step is None:
            return control
        _, val = split(metrics or {})
        if val:
            self.monitor.step(self._last_step, **rename(val, is_validation=True))
        return self._stop_if_critical(control)

    def _stop_if_critical(self, control):
        if self.stop_on_critical and self.monitor.should_stop:
            control.should_training_stop = True
        return control
