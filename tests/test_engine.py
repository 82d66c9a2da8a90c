"""The engine reports a symptom once per place, and again only after it cleared, whatever other rules report."""
from __future__ import annotations

import dataclasses

import pytest

from nnhealth.engine import Engine
from nnhealth.history import History
from nnhealth.rules import RULES, Detection


def _scripted(monkeypatch, rule_id: str, verdicts: list, cadence: str = "sample") -> None:
    """Make ``rule_id`` answer ``verdicts[step]``: a list of places (None: cannot judge)."""
    def check(ctx, th):
        places = verdicts[ctx.step]
        return None if places is None else [Detection(p, f"at {p}") for p in places]
    monkeypatch.setitem(RULES, rule_id, dataclasses.replace(RULES[rule_id], check=check, cadence=cadence))


@pytest.mark.parametrize("busy_neighbour", [False, True])
def test_a_symptom_is_reported_again_only_after_clear_after_healthy_verdicts(monkeypatch, busy_neighbour):
    dead = [["a"], ["a", "b"], ["b"], [], None, [], ["a", "b"], [], [], ["a"], ["a"]]
    _scripted(monkeypatch, "dead-relu", dead)
    # another rule with many active symptoms must not change how dead-relu's clear
    _scripted(monkeypatch, "saturated-activations", [[f"x{i}" for i in range(50)] if busy_neighbour else []] * len(dead))
    rules = ["dead-relu", "saturated-activations"]
    engine = Engine({r: RULES[r].default_thresholds() for r in rules}, rules, strict=True, clear_after=3)
    history = History()
    new = {step: [(f.symptom, f.where) for f in engine.evaluate(history, step) if f.symptom == "dead-relu"]
           for step in range(len(dead))}
    # a: healthy at 2, 3 and 5 (no verdict at 4), so cleared and new again at 6; b: still active at 6 (healthy
    # twice), cleared at 9 (healthy at 7, 8, 9); a: healthy at 7 and 8 only, so not new at 9
    assert new == {0: [("dead-relu", "a")], 1: [("dead-relu", "b")], 2: [], 3: [], 4: [], 5: [],
                   6: [("dead-relu", "a")], 7: [], 8: [], 9: [], 10: []}
    assert set(engine.active["dead-relu"]) == {"a"} and len(engine.active["saturated-activations"]) == 50 * busy_neighbour


def test_a_per_step_symptom_clears_at_once(monkeypatch):
    _scripted(monkeypatch, "loss-nan", [[None], [], [None], [None]], cadence="step")
    engine = Engine({"loss-nan": RULES["loss-nan"].default_thresholds()}, ["loss-nan"], strict=True)
    history = History()
    assert [len(engine.evaluate(history, step, sampled=False)) for step in range(4)] == [1, 0, 1, 0]
