"""Real numpy training runs with each classic fault: the monitor finds it; the healthy twin stays quiet."""
import json
import subprocess
import sys

import pytest

from nnhealth import Monitor
from nnhealth.demo.network import FAULTS, train

FAULTY = [name for name in FAULTS if name != "none"]


def diagnose(fault: str, seed: int = 0, every: int = 5) -> Monitor:
    mon = Monitor(every=every, num_classes=FAULTS[fault].fault.num_classes, console=False)
    train(fault, observer=mon, seed=seed)
    mon.close()
    return mon


@pytest.mark.parametrize("fault", FAULTY)
def test_each_fault_is_found(fault):
    mon = diagnose(fault)
    found = {f.symptom for f in mon.findings}
    assert found & set(FAULTS[fault].symptoms), (fault, found)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_healthy_network_raises_no_warning(seed):
    mon = diagnose("none", seed=seed)
    assert [f.line() for f in mon.findings if f.severity != "info"] == []


def test_initialisation_faults_are_found_early():
    for fault in ("small-init", "large-init", "zero-init", "dead-relu"):
        mon = diagnose(fault)
        steps = FAULTS[fault].fault.steps
        first = min(f.step for f in mon.findings if f.symptom in FAULTS[fault].symptoms)
        assert first <= 0.1 * steps, (fault, first, steps)


def test_high_learning_rate_stops_the_run():
    mon = Monitor(every=5, console=False)
    result = train("high-lr", observer=mon)
    assert mon.should_stop and result.stopped == "observer" and result.steps < 20


def test_demo_command_end_to_end(tmp_path):
    logdir = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "nnhealth", "demo", "--logdir", str(logdir)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "fault 'small-init'" in proc.stdout and "expected: vanishing-activations" in proc.stdout
    assert "nnhealth warning vanishing-activations at step" in proc.stderr
    symptoms = {json.loads(l)["symptom"] for l in (logdir / "findings.jsonl").read_text().splitlines()}
    assert {"vanishing-activations", "vanishing-gradients"} <= symptoms


def test_demo_help_lists_the_faults():
    proc = subprocess.run([sys.executable, "-m", "nnhealth", "demo", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for name in FAULTS:
        assert name in proc.stdout
