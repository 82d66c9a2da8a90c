"""What the PyTorch framework callbacks (Lightning, Hugging Face Trainer) share: the monitor they
watch with, attached for one training and taken off again.

A callback either owns its monitor (made when training starts, closed when it
ends) or borrows the user's, which must stay open for them afterwards: then
only the hooks this training added are removed.
"""
from __future__ import annotations

from nnhealth import Monitor


class MonitorOwner:
    """Mixin: ``monitor``, whether this callback owns it, and the watcher of the current training."""

    def _init_monitor(self, monitor: Monitor | None, logdir, every: int, num_classes, stop_on_critical: bool,
                      monitor_options: dict) -> None:
        self.monitor = monitor
        self._owned = monitor is None
        self._logdir = logdir
        self._options = dict(every=every, num_classes=num_classes, **monitor_options)
        self.stop_on_critical = stop_on_critical
        self._watcher = None

    def _open(self, default_logdir) -> Monitor:
        """The monitor for this training: the user's, or a new one (in ``logdir``, else ``default_logdir()``)."""
        if self.monitor is None:
            logdir = self._logdir if self._logdir is not None else default_logdir()
            self.monitor = Monitor(logdir=logdir, **self._options)
            self._owned = True
        return self.monitor

    def _watch(self, model, optimizer, framework: str) -> None:
        """``monitor.watch(model, optimizer)``, fail-open: an error is reported once, and the loss and
        metrics are still watched."""
        mon = self.monitor
        try:
            mon.watch(model, optimizer)
            self._watcher = mon._watchers[-1]
        except Exception as e:
            mon._failed((framework, "watch"), e)

    def _release(self) -> bool:
        """Close a monitor made here (True), or remove this training's hooks from a user's monitor."""
        mon, watcher, self._watcher = self.monitor, self._watcher, None
        if mon is None:
            return False
        if self._owned:
            mon.close()
            self.monitor = None
            return True
        if watcher is not None:
            watcher.close()
            if watcher in mon._watchers:
                mon._watchers.remove(watcher)
        return False
