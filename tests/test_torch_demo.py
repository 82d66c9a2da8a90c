"""The PyTorch demo network: the same faults as the numpy one, diagnosed through mon.watch()."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from nnhealth import Monitor  # noqa: E402
from nnhealth.cli import main  # noqa: E402
from nnhealth.demo import network as numpy_network  # noqa: E402
from nnhealth.demo import torch_network  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(name, every=5):
    with Monitor(every=every, num_classes=10, console=False) as mon:
        result = torch_network.train(name, observer=mon)
    return mon, result


def test_same_faults_as_the_numpy_demo():
    assert torch_network.FAULTS is numpy_network.FAULTS


@pytest.mark.parametrize("name", [n for n in torch_network.FAULTS if n != "none"])
def test_each_fault_is_diagnosed(name):
    spec = torch_network.FAULTS[name]
    mon, result = run(name)
    found = {f.symptom for f in mon.findings}
    expected = set(spec.symptoms)
    if name == "high-lr":  # the run is stopped after a few steps, before update ratios can be judged
        assert result.stopped == "observer"
        expected -= {"update-ratio-high"}
    assert expected <= found, f"{name}: expected {sorted(expected)}, found {sorted(found)}"


def test_healthy_run_learns_without_warnings():
    mon, result = run("none")
    assert [f.line() for f in mon.findings if f.severity != "info"] == []
    assert result.val_acc > 0.8 and result.stopped is None
    # the demo's activations are functions inside its layers, named after them
    assert mon.history.names("activation") == ["layer0.relu", "layer1.relu"]
    assert mon.history.meta["layer0.weight"]["init_scale"] == pytest.approx(1.0, rel=0.1)  # He init


def test_train_mirrors_the_numpy_demo_api():
    result = torch_network.train("dead-relu", steps=3)
    assert result.steps == 3 and len(result.losses) == 3 and result.fault == "dead-relu"
    model, data = torch_network.build("none")
    assert [n for n, _ in model.named_children()] == ["layer0", "layer1", "out"]
    assert data.X_train.shape[1] == numpy_network.FAULTS["none"].fault.dim


def test_cli_runs_the_torch_demo(tmp_path, capsys):
    code = main(["demo", "--framework", "torch", "--fault", "dead-relu", "--steps", "40",
                 "--logdir", str(tmp_path / "run")])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "(torch)" in out.out
    assert "dead-relu" in out.err
    lines = (tmp_path / "run" / "findings.jsonl").read_text().splitlines()
    assert "layer0.relu" in [json.loads(line)["where"] for line in lines if json.loads(line)["symptom"] == "dead-relu"]
