"""nnhealth's own runs: replayed with every recorded layer state, so thresholds can change after the fact.

The runs are the demo network's real faults (plain numpy), watched by a
Monitor that writes its log folder: through the real TensorBoard sink
(``nnhealth.dashboards.tensorboard``), and through a stand-in that writes
exactly the contract's tags (``logs_writers.ContractSink``).
"""
from __future__ import annotations

import json
import shutil

import pytest

from logs_writers import ContractSink, train, write_torch
from nnhealth import Monitor
from nnhealth.cli import main
from nnhealth.demo.network import train as train_demo, with_changes

#: ReLU biases at -1.5: most units of the second layer never fire (about 70%, not all)
DEAD = with_changes("dead-relu", bias_init=-1.5, steps=60)
LOW_LR = with_changes("low-lr", steps=100)


def findings_of(capsys, *args) -> tuple[int, dict]:
    status = main(["check", "--json", *map(str, args)])
    (report,) = json.loads(capsys.readouterr().out)
    return status, report


def keys(findings) -> list[tuple]:
    if findings and isinstance(findings[0], dict):
        return [(f["symptom"], f["step"], f["where"]) for f in findings]
    return [(f.symptom, f.step, f.where) for f in findings]


def watched(fault, logdir, contract: bool, num_classes=10, every=10) -> Monitor:
    if contract:
        mon = Monitor(logdir=logdir, tensorboard=False, console=False, num_classes=num_classes, every=every,
                      sinks=[ContractSink(logdir, every=every, num_classes=num_classes)])
    else:
        mon = Monitor(logdir=logdir, console=False, num_classes=num_classes, every=every)
    train_demo(fault, mon)
    mon.close()
    return mon


@pytest.mark.parametrize("contract", [False, True], ids=["tensorboard-sink", "contract-tags"])
def test_a_dead_relu_run_is_found_again_and_a_threshold_makes_it_go_away(tmp_path, capsys, contract):
    mon = watched(DEAD, tmp_path / "dead", contract)
    live = keys(mon.findings)
    assert ("dead-relu", 20, "layer1") in live
    status, report = findings_of(capsys, tmp_path / "dead")
    assert status == 1
    assert report["nnhealth"] and report["layer_steps"] >= 6 and report["steps"] == 60
    assert keys(report["findings"]) == live  # the replay says what the live monitor said
    assert all(f["source"] == "replay" for f in report["findings"])
    status, tuned = findings_of(capsys, tmp_path / "dead", "--set", "dead-relu.max_dead_fraction=0.99")
    assert keys(tuned["findings"]) == [k for k in live if k[0] != "dead-relu"]


def test_update_ratios_are_recomputed_from_the_recorded_states(tmp_path, capsys):
    mon = watched(LOW_LR, tmp_path / "low_lr", contract=False)
    live = keys(mon.findings)
    assert [k for k in live if k[0] == "update-ratio-low"]
    status, report = findings_of(capsys, tmp_path / "low_lr")
    assert status == 1 and keys(report["findings"]) == live
    status, tuned = findings_of(capsys, tmp_path / "low_lr", "--set", "update-ratio-low.min_ratio=1e-9")
    assert not [k for k in keys(tuned["findings"]) if k[0] == "update-ratio-low"]


def test_the_number_of_classes_comes_from_the_run_description(tmp_path, capsys):
    mon = watched(with_changes("none", steps=30), tmp_path / "run", contract=True, num_classes=1000)
    assert ("initial-loss-unexpected", 0, None) in keys(mon.findings)
    status, report = findings_of(capsys, tmp_path / "run")
    assert status == 1 and keys(report["findings"]) == keys(mon.findings)
    _, report = findings_of(capsys, tmp_path / "run", "--num-classes", "10")
    assert ("initial-loss-unexpected", 0, None) not in keys(report["findings"])


@pytest.fixture(scope="module")
def findings_only(tmp_path_factory):
    """Monitor(tensorboard=False) leaves only findings.jsonl."""
    logdir = tmp_path_factory.mktemp("findings_only") / "run"
    mon = Monitor(logdir=logdir, tensorboard=False, console=False, num_classes=10)
    train_demo(DEAD, mon)
    mon.close()
    return logdir, mon.findings


def test_findings_jsonl_alone_is_shown_as_recorded(findings_only, capsys):
    logdir, live = findings_only
    status, report = findings_of(capsys, logdir)
    assert status == 1
    assert keys(report["findings"]) == keys(live)
    assert {f["source"] for f in report["findings"]} == {"recorded"}
    main(["check", str(logdir)])
    assert "20 (recorded)" in capsys.readouterr().out


def test_recorded_findings_fill_in_what_the_curves_cannot_judge_again(findings_only, tmp_path, capsys):
    """Curves replayed, layer findings shown as recorded: their layer statistics were not logged."""
    shutil.copytree(findings_only[0], tmp_path / "run")
    write_torch(tmp_path / "run", train("explode"))
    status, report = findings_of(capsys, tmp_path / "run")
    assert status == 1
    sources = {(f["symptom"], f["source"]) for f in report["findings"]}
    assert ("loss-exploding", "replay") in sources
    assert ("dead-relu", "recorded") in sources
    assert not any(src == "recorded" and s in ("loss-not-decreasing", "underfitting") for s, src in sources)
