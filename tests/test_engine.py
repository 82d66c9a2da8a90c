"""The engine reports a symptom once per place, and again only after it cleared, whatever other rules report."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from nnhealth import Monitor
from nnhealth.engine import Engine
from nnhealth.history import History
from nnhealth.rules import RULES, Context, Detection


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


def _verdicts(engine: Engine, history: History, step: int, num_classes) -> dict:
    """Every rule's verdict, as plain data to compare."""
    ctx = Context(history=history, step=step, num_classes=num_classes)
    out = {}
    for rule in engine.rules:
        got = rule.check(ctx, engine.thresholds[rule.id])
        out[rule.id] = None if got is None else [
            repr((d.where, d.message, sorted(d.evidence.items()), d.severity, d.key, d.advice)) for d in got]
    return out


def _forget(history: History) -> dict:
    """Make ``history`` forget what was derived at this step and what it carries from step to step; returns
    what it carried, to put back."""
    history._memo.clear()
    history._window_cache.clear()
    for block in history._blocks.values():
        block._cache.clear()
    carried, history.carry = history.carry, {}
    return carried


@pytest.fixture
def recomputed(monkeypatch):
    """Checks every sampled evaluation: each rule's verdict must equal its verdict recomputed from the
    history alone, with what was carried over from earlier steps (searches resumed, layer facts, verdicts
    kept for the run) forgotten. Gives the list of the steps checked."""
    checked = []
    evaluate = Engine.evaluate

    def checking(self, history, step, num_classes=None, sampled=True):
        new = evaluate(self, history, step, num_classes, sampled)
        if sampled:
            kept = _verdicts(self, history, step, num_classes)
            carried = _forget(history)
            assert _verdicts(self, history, step, num_classes) == kept, step
            history.carry = carried
            checked.append(step)
        return new
    monkeypatch.setattr(Engine, "evaluate", checking)
    return checked


def _eventful(mon: Monitor, rng, step: int, plateau: int) -> dict:
    """A step of a run that keeps changing under the rules: layers joining late, a unit count, a kind and an
    input's feature count changing, a weight turning out to be a vector, NaN, a loss flat for ``plateau``
    steps and then falling (past the history's capacity)."""
    x = rng.standard_normal((64, 12 if 100 <= step < 104 else 16)) - 0.5
    mon.observe_activation("a0", np.maximum(x, 0), kind="relu")
    if step >= 30:
        mon.observe_activation("a1", np.tanh(3 * rng.standard_normal((64, 8))), kind="tanh" if step < 220 else "relu")
    for name, scale in (("l0.W", 1e-3), ("l1.W", 1.0), ("l1.b", 1.0)) + ((("l2.W", 0.1),) if step >= 120 else ()):
        g = scale * rng.standard_normal((8, 8) if name.endswith("W") else 8)
        if step == 333 and name == "l1.W":
            g[0, 0] = np.inf
        mon.observe_gradient(name, g)
        w = rng.standard_normal(g.shape)
        mon.observe_update(name, (0.3 if step > 180 else 1e-3) * w, param=w)
    if step == 160:
        mon.history.meta["l1.W"]["ndim"] = 1
    mon.observe_input(rng.standard_normal((64, 6 if step < 200 else 5)) + (4.0 if step > 260 else 0.0))
    loss = 2.3 + 0.01 * rng.standard_normal() if step < plateau else 2.3 * 0.95 ** (step - plateau)
    return {"loss": math.nan if step in (10, 300) else loss}


@pytest.mark.parametrize("every,plateau", [(1, 0), (1, 40), (3, 40), (1, 250), (3, 250)])
def test_verdicts_equal_the_ones_recomputed_from_the_history_alone(recomputed, every, plateau):
    rng = np.random.default_rng(every)
    mon = Monitor(every=every, console=False, num_classes=10, history_capacity=64)
    for step in range(400):
        mon.step(step, **_eventful(mon, rng, step, plateau))
    mon.close()
    assert len(recomputed) == len(range(0, 400, every))
    found = {f.symptom for f in mon.findings}
    assert found >= {"update-ratio-high", "non-finite-values", "loss-nan", "input-not-normalized"}
    assert ("init-plateau" in found) == (plateau == 40)


def test_a_replayed_run_says_what_the_live_run_said_and_carries_nothing_wrong(recomputed, tmp_path, capsys):
    from nnhealth.cli import main
    from nnhealth.demo.network import train, with_changes

    mon = Monitor(logdir=tmp_path / "run", console=False, num_classes=10, every=5)
    train(with_changes("dead-relu", bias_init=-1.5, steps=80), mon)
    mon.close()
    live = len(recomputed)
    assert main(["check", "--json", str(tmp_path / "run")]) == 1
    (report,) = json.loads(capsys.readouterr().out)
    assert len(recomputed) > live  # the replay was checked too
    assert [(f["symptom"], f["step"], f["where"]) for f in report["findings"]] == [
        (f.symptom, f.step, f.where) for f in mon.findings]
