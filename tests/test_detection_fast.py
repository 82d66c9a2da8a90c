"""The detection benchmark's fast subset: real faulty trainings are diagnosed, their healthy twins are not.

Each case is a real training run (numpy demo network or PyTorch, synthetic
data) with an independent check, in plain numpy/PyTorch, that its fault is
real (or that the healthy run learned). The full benchmark, every case on
three seeds, is ``python benchmarks/detection.py``; this subset keeps the
headline promises under test: each fault found with an expected symptom,
initialisation faults within the first 10% of the run, no warning on a
healthy run, modern architectures included.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ lives at the repository root

from benchmarks.cases import CASES, Proof, Result, run  # noqa: E402
from benchmarks.detection import main, select  # noqa: E402
from benchmarks.detection_score import INIT_DEADLINE, score, summarize  # noqa: E402
from nnhealth import SYMPTOMS, Finding  # noqa: E402

FAST = select(None, fast=True)


@pytest.mark.parametrize("name", [c.name for c in FAST])
def test_fast_case(name):
    c = CASES[name]
    result = run(c, seed=0)
    assert result.proof.ok, f"{name}: the independent check failed: {result.proof.detail}"
    sc = score(result)
    if c.healthy:
        assert not sc.false_alarms, "\n".join(f.line() for f in sc.false_alarms)
        return
    assert sc.detected, f"{name}: expected one of {c.expected}, found {list(sc.found)}"
    assert not sc.false_alarms, "\n".join(f.line() for f in sc.false_alarms)
    if c.init:
        assert sc.delay <= INIT_DEADLINE, f"{name}: first found at step {sc.first} of {c.steps}"


def test_the_fast_subset_is_a_dozen_cases_of_both_frameworks_with_healthy_modern_controls():
    assert 10 <= len(FAST) <= 16
    assert {c.framework for c in FAST} == {"numpy", "torch"}
    assert {"torch/transformer", "torch/gru-clip"} <= {c.name for c in FAST if c.healthy}
    assert any(c.init for c in FAST)


def test_the_catalogue_pairs_every_fault_with_a_healthy_twin_and_expects_every_symptom():
    faults = [c for c in CASES.values() if not c.healthy]
    healthy = {c.name for c in CASES.values() if c.healthy}
    assert len(CASES) >= 30 and {c.framework for c in CASES.values()} == {"numpy", "torch"}
    assert all(c.twin in healthy for c in faults), [c.name for c in faults if c.twin not in healthy]
    assert healthy == {c.twin for c in faults}  # every healthy recipe has a fault injected into it
    assert {s for c in faults for s in c.expected} == set(SYMPTOMS)
    assert all(set(c.expected + c.also) <= set(SYMPTOMS) for c in faults)
    assert {"torch/resnet-bn", "torch/transformer", "torch/gru-clip"} <= healthy


def _result(name: str, seed: int, *findings: tuple[str, str, int], ok: bool = True) -> Result:
    found = [Finding(symptom=s, severity=sev, step=step, where=None, message="m") for s, sev, step in findings]
    return Result(case=CASES[name], seed=seed, findings=found, ran=CASES[name].steps, seconds=1.0,
                  proof=Proof(ok, "measured"))


def test_scoring_counts_detections_delays_and_false_alarms():
    runs = [
        _result("np/negative-bias", 0, ("dead-relu", "warning", 10), ("vanishing-activations", "warning", 10)),
        _result("np/negative-bias", 1, ("loss-not-decreasing", "warning", 50)),          # missed
        _result("np/lr-too-low", 0, ("update-ratio-low", "warning", 100), ("overfitting", "warning", 120)),
        _result("np/mlp-relu", 0, ("underfitting", "info", 30)),                         # info is not an alarm
        _result("np/mlp-relu", 1, ("overfitting", "warning", 200), ok=False),
    ]
    scores = [score(r) for r in runs]
    assert [sc.detected for sc in scores] == [True, False, True, None, None]
    assert scores[0].delay == 10 / 200 and scores[0].false_alarms == ()  # vanishing-activations is a listed consequence
    assert [f.symptom for f in scores[2].false_alarms] == ["overfitting"]
    s = summarize(scores)
    assert (s.detected, s.fault_runs, s.noisy_healthy, s.healthy_runs, s.fault_alarms) == (2, 3, 1, 2, 1)
    assert s.median_delay == pytest.approx((10 / 200 + 100 / 200) / 2)
    assert (s.init_in_time, s.init_runs) == (1, 2) and s.missed == ["np/negative-bias seed 1"]
    assert s.proofs == 4 and not s.targets_met
    assert s.covered == {"dead-relu": ["np/negative-bias"], "update-ratio-low": ["np/lr-too-low"]}


def test_command_line_prints_the_table_and_summary_and_writes_json(tmp_path, capsys):
    out = tmp_path / "detection.json"
    code = main(["--cases", "np/lr-too-low", "np/mlp-relu", "--seeds", "0", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "first found / steps" in printed and "false alarms" in printed
    assert "np/lr-too-low" in printed and "20 / 200" in printed
    assert "fault runs detected with an expected symptom: 1/1 (recall 100.0%)" in printed
    assert "healthy runs with a warning-level finding: 0/1 (false-alarm rate 0.0%)" in printed
    data = json.loads(out.read_text())
    assert [(r["case"], r["seed"], r["detected"]) for r in data["runs"]] == [("np/mlp-relu", 0, None),
                                                                             ("np/lr-too-low", 0, True)]
    assert data["summary"]["recall"] == 1.0 and data["summary"]["targets_met"] is True
    assert code == 0


def test_command_line_refuses_a_filter_that_matches_nothing(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--cases", "no-such-case"])
    assert e.value.code == 2 and "no case matches" in capsys.readouterr().err
