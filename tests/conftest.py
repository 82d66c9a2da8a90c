"""Shared helpers: drive a Monitor with constructed data and see what it finds."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from nnhealth import Monitor


def drive(feed, steps: int, every: int = 1, seed: int = 0, **kwargs) -> Monitor:
    """Run ``feed(mon, step, rng) -> dict of step() keywords`` for ``steps`` steps."""
    rng = np.random.default_rng(seed)
    mon = Monitor(every=every, console=False, strict=True, **kwargs)
    for step in range(steps):
        values = feed(mon, step, rng) or {}
        mon.step(step, **values)
    mon.close()
    return mon


def fired(mon: Monitor, symptom: str) -> list:
    return [f for f in mon.findings if f.symptom == symptom]


def warnings_of(mon: Monitor) -> list:
    return [f for f in mon.findings if f.severity != "info"]


@pytest.fixture(autouse=True)
def _quiet_nnhealth_logger():
    """Each test starts from an unconfigured ``nnhealth`` logger (Monitor installs a handler)."""
    logger = logging.getLogger("nnhealth")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]
