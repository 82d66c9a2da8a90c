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


@pytest.fixture
def one_torch_thread():
    """One torch and one BLAS thread, as the demo and the benchmarks run them: stable timings on a
    shared machine, and on a busy one spinning BLAS threads make small matrices ten times slower.
    Test modules that train torch models use it with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(threads)
