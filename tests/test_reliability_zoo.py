"""The whole demo zoo under a fail-open Monitor: nothing raises, and nothing was silently switched off.

Every fault of the numpy demo network and of the PyTorch one (the same
faults, through ``mon.watch``) runs to its end with ``strict=False``, the
setting users get, writing files as users do. Fail-open would hide an
internal error from the training loop, so each run also asserts that no part
of nnhealth failed: no error on the ``nnhealth`` logger, no part, rule or
sink disabled. Whether each fault is diagnosed right is tested in
tests/test_demo_e2e.py and tests/test_torch_demo.py.
"""
from __future__ import annotations

import logging

import pytest

from nnhealth import Monitor
from nnhealth.demo import network as numpy_network

torch = pytest.importorskip("torch")
from nnhealth.demo import torch_network  # noqa: E402

ZOO = [("numpy", name) for name in numpy_network.FAULTS] + [("torch", name) for name in torch_network.FAULTS]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("framework, fault", ZOO, ids=[f"{f}-{n}" for f, n in ZOO])
def test_every_demo_fault_runs_fail_open_without_a_single_internal_error(framework, fault, tmp_path, caplog):
    demo = numpy_network if framework == "numpy" else torch_network
    mon = Monitor(logdir=tmp_path, every=5, num_classes=10, console=False, strict=False)
    with caplog.at_level(logging.DEBUG, logger="nnhealth"):
        result = demo.train(fault, observer=mon)
        mon.close()
    assert result.steps > 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert mon._broken == set() and mon.engine.broken == set()
    assert len(mon._sinks) == 2  # findings.jsonl and TensorBoard still writing at the end
    assert (tmp_path / "findings.jsonl").read_text().count("\n") == len(mon.findings)
