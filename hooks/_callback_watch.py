"""What the PyTorch framework callbacks (Lightning, Hugging Face Trainer) share: attaching the
adapter for one training and taking it off again.

A callback either owns its monitor (made when training starts, closed when it
ends) or borrows the user's, which must stay open for them afterwards: then
only the hooks this training added are removed.
"""
from __future__ import annotations


def watch(monitor, model, optimizer, framework: str):
    """``monitor.watch(model, optimizer)``, fail-open; returns the watcher it made (None when it failed:
    reported once, and the loss and metrics are still watched)."""
    try:
        monitor.watch(model, optimizer)
        return monitor._watchers[-1]
    except Exception as e:
        monitor._failed((framework, "watch"), e)
        return None


def release(monitor, owned: bool, watcher) -> None:
    """Close a monitor the callback made; from a user's monitor remove only this training's hooks."""
    if monitor is None:
        return
    if owned:
        monitor.close()
    elif watcher is not None:
        watcher.close()
        if watcher in monitor._watchers:
            monitor._watchers.remove(watcher)
