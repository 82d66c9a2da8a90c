"""Nothing lost at exit: live monitors are flushed at interpreter exit and on SIGTERM.

A job scheduler stops a run with SIGTERM, whose default action ends the process
without running ``atexit`` handlers, so the last findings and events would be
lost. When (and only when) SIGTERM still has its default action, nnhealth
installs a handler that flushes every live monitor and then lets the signal
do what it would have done. A handler the user installed is never replaced.
"""
from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import weakref

log = logging.getLogger("nnhealth")

_live: "weakref.WeakSet" = weakref.WeakSet()
_installed = False


def register(monitor) -> None:
    """Track ``monitor`` until it is closed or garbage-collected."""
    global _installed
    _live.add(monitor)
    if _installed:
        return
    _installed = True
    atexit.register(close_all)
    if threading.current_thread() is threading.main_thread():
        try:
            if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
                signal.signal(signal.SIGTERM, _on_sigterm)
        except (ValueError, OSError):  # not allowed here (embedded interpreters, some platforms)
            pass


def unregister(monitor) -> None:
    _live.discard(monitor)


def flush_all() -> None:
    for mon in list(_live):
        try:
            mon.flush()
        except Exception:
            log.error("nnhealth: flushing a monitor failed", exc_info=True)


def close_all() -> None:
    for mon in list(_live):
        try:
            mon.close()
        except Exception:
            log.error("nnhealth: closing a monitor at exit failed", exc_info=True)


def _on_sigterm(signum, frame) -> None:
    close_all()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
