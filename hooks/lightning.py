"""PyTorch Lightning: ``Trainer(callbacks=[HealthCallback()])``.

When fitting starts, the LightningModule and its optimizer are watched with
:meth:`nnhealth.Monitor.watch` (the PyTorch adapter: activations, gradients,
parameters and updates). After every optimizer step the Monitor gets the loss
``training_step`` returned (averaged over accumulated batches; the logged
``loss``/``train_loss`` when it returns none, as in manual optimization) and the
training metrics the module logs; after every validation run, the validation
metrics it logs (``val_loss``, ``val_acc``, ``val/acc``...), from
``trainer.callback_metrics``.

The Monitor writes into the trainer's TensorBoard log folder (``lightning_logs/
version_N``) when the trainer has a ``TensorBoardLogger``, so nnhealth's panels sit
next to the run's own curves. A critical finding (NaN loss, exploding loss) sets
``trainer.should_stop``, which ends training after the current batch.
"""
from __future__ import annotations

import logging

import torch

try:
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger
except ImportError:
    try:  # the standalone package
        import pytorch_lightning as pl
        from pytorch_lightning.loggers import TensorBoardLogger
    except ImportError as e:
        raise ImportError(f"nnhealth.hooks.lightning needs PyTorch Lightning ({e}): "
                          "pip install 'nnhealth[lightning]'") from e

from nnhealth import Monitor

from ._callback_metrics import rename, split
from ._callback_watch import MonitorOwner

__all__ = ["HealthCallback"]


def tensorboard_dir(trainer) -> str | None:
    """The log folder of the trainer's first TensorBoard logger, if it has one."""
    for logger in getattr(trainer, "loggers", None) or []:
        if isinstance(logger, TensorBoardLogger):
            return logger.log_dir
    return None


def _loss_of(outputs):
    """The loss ``training_step`` returned (a tensor, or a dict with ``loss``), detached; else None."""
    if isinstance(outputs, dict):
        outputs = outputs.get("loss")
    if isinstance(outputs, torch.Tensor) and outputs.numel() == 1:
        return outputs.detach().reshape(())
    return None


class HealthCallback(MonitorOwner, pl.Callback):
    """Watches a LightningModule while ``Trainer.fit`` trains it.

    ``monitor``: a :class:`~nnhealth.Monitor` to report to; by default one is made when fitting
    starts (``logdir``, else the trainer's TensorBoard folder; ``every``, ``num_classes`` and
    ``monitor_options`` are passed on) and closed when fitting ends. ``stop_on_critical``: set
    ``trainer.should_stop`` on a critical finding.
    """

    def __init__(self, monitor: Monitor | None = None, *, logdir=None, every: int = 10,
                 num_classes: int | None = None, stop_on_critical: bool = True, **monitor_options):
        super().__init__()
        self._init_monitor(monitor, logdir, every, num_classes, stop_on_critical, monitor_options)
        self._losses: list = []
        self._global_step = 0
        self._last_step = None
        self._offset = 0

    # -- lifecycle -----------------------------------------------------------
    def on_fit_start(self, trainer, pl_module):
        self._open(lambda: tensorboard_dir(trainer))
        optimizers = list(trainer.optimizers)  # made anew by every fit
        self._watch(pl_module, optimizers[0] if optimizers else None, "lightning")
        if len(optimizers) > 1:
            self.monitor._say_once("lightning-optimizers", f"nnhealth: {len(optimizers)} optimizers; updates are "
                                   "measured for the first one's parameters", logging.INFO)
        # a later fit (a new Trainer counts from 0 again) continues the monitor's steps
        last = self._last_step
        self._offset = max(0, last + 1 - trainer.global_step) if last is not None else 0
        self._global_step = trainer.global_step
        self._losses.clear()

    def on_fit_end(self, trainer, pl_module):
        self._detach()

    def on_exception(self, trainer, pl_module, exception):
        self._detach()

    def _detach(self):
        """Close a monitor made here; unhook a user's monitor (it stays open for them)."""
        if self._release():
            self._last_step = None

    # -- training ------------------------------------------------------------
    def _forward_watch(self):
        """The PyTorch adapter's forward hooks on the module (None when it has none)."""
        return getattr(self._watcher, "forward", None)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        # training_step, not forward, is a LightningModule's forward pass (it often calls its
        # submodules directly): it opens the adapter's capture (inputs, activation functions);
        # a call of the module itself inside it nests in this one
        forward = self._forward_watch()
        if forward is not None:
            self._guard("forward", forward.open_pass, pl_module, batch)

    def on_before_backward(self, trainer, pl_module, loss):
        forward = self._forward_watch()
        if forward is not None:
            self._guard("forward", forward.close_pass, pl_module, loss)

    def _guard(self, part: str, fn, *args) -> None:
        key = ("lightning", part)
        if key in self.monitor._broken:
            return
        try:
            fn(*args)
        except Exception as e:  # reported once, that part switched off; training goes on
            self.monitor._failed(key, e)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        mon = self.monitor
        if mon is None:
            return
        watch = self._forward_watch()
        if watch is not None and watch.capture is not None:  # no backward (a skipped batch): discard
            watch.depth = 0
            self._guard("forward", watch._end, pl_module, (), {}, None)
        loss = _loss_of(outputs)
        if loss is not None:
            self._losses.append(loss)
        if trainer.global_step == self._global_step:
            return  # gradients are still accumulating: the optimizer has not stepped
        self._global_step = trainer.global_step
        train, _ = split(trainer.callback_metrics)
        metrics = rename({k: v for k, v in train.items() if not k.endswith("_epoch")})
        if self._losses:
            loss = torch.stack(self._losses).mean() if len(self._losses) > 1 else self._losses[0]
            metrics.pop("loss", None)
        else:
            loss = metrics.pop("loss", None)
        self._losses.clear()
        self._last_step = trainer.global_step - 1 + self._offset
        mon.step(self._last_step, loss=loss, **metrics)
        self._stop_if_critical(trainer)

    def on_validation_end(self, trainer, pl_module):
        mon = self.monitor
        if mon is None or trainer.sanity_checking or self._last_step is None:
            return
        _, val = split(trainer.callback_metrics)
        if val:
            mon.step(self._last_step, **rename(val, is_validation=True))  # the step validated, now with its scores
            self._stop_if_critical(trainer)

    def _stop_if_critical(self, trainer):
        if self.stop_on_critical and self.monitor.should_stop:
            trainer.should_stop = True
