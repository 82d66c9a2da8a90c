"""Fail-open: whatever breaks inside nnhealth, the training it watches goes on exactly as without it.

A real PyTorch training (Adam, dropout: stateful and random) runs without
nnhealth, then watched by a Monitor writing files, then with a failure
injected into each part of nnhealth in turn: a hook, a statistic, a rule, a
sink (nnhealth's own TensorBoard writer thread, and a user's sink). Each
failure is reported once, with its traceback, on the ``nnhealth`` logger;
only the failing part stops; the final weights are bit-identical to the
unwatched run. ``Monitor(strict=True)`` re-raises instead.

Hook failures on the optimizer and per-activation paths are also covered in
tests/test_torch_lifecycle.py (test_a_failing_hook_is_reported_once_and_switched_off,
test_a_failing_optimizer_hook_never_breaks_the_step); findings turned into
errors by a warnings filter pass through (tests/test_monitor.py::test_findings_are_warnings_that_filters_control).
"""
from __future__ import annotations

import dataclasses
import json
import logging

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import nnhealth.dashboards.tensorboard as tensorboard_sink  # noqa: E402
from nnhealth import Monitor  # noqa: E402
from nnhealth.hooks._torch_forward import ForwardWatch  # noqa: E402
from nnhealth.rules import RULES  # noqa: E402
from nnhealth.sinks import Sink  # noqa: E402
from nnhealth.stats.kinds import KINDS  # noqa: E402

STEPS = 12


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make():
    """A net whose first ReLU layer is dead (so there is a finding to lose), with dropout (random)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.Tanh(), nn.Dropout(0.2),
                          nn.Linear(32, 4))
    with torch.no_grad():
        model[0].bias.fill_(-20.0)
    return model, torch.optim.Adam(model.parameters(), lr=1e-2)


def train(mon: Monitor | None = None) -> tuple[dict, list[float]]:
    model, opt = make()
    if mon is not None:
        mon.watch(model, opt)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 16, generator=g), torch.randint(0, 4, (64,), generator=g)
    losses = []
    for step in range(STEPS):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if mon is not None:
            mon.step(step, loss=loss)
    if mon is not None:
        mon.close()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, losses


@pytest.fixture(scope="module")
def unwatched():
    return train()


def assert_bit_identical(got, want):
    (weights, losses), (ref_weights, ref_losses) = got, want
    assert losses == ref_losses
    assert weights.keys() == ref_weights.keys()
    for name in weights:
        assert torch.equal(weights[name], ref_weights[name]), f"{name} differs from the unwatched run"


def test_the_training_is_deterministic_without_nnhealth(unwatched):
    assert_bit_identical(train(), unwatched)


def test_watching_changes_nothing_in_the_training(unwatched, tmp_path):
    mon = Monitor(logdir=tmp_path, every=1, console=False, strict=True)
    assert_bit_identical(train(mon), unwatched)
    assert {f.symptom for f in mon.findings} >= {"dead-relu"}
    assert mon.history.names("activation") == ["1", "3"]


def injected(*args, **kwargs):
    raise RuntimeError("injected failure")


class ExplodingSink(Sink):
    """A user's sink with a bug."""

    def write_step(self, record):
        injected()


def inject(part: str, monkeypatch) -> dict:
    """Break ``part``; returns extra Monitor arguments."""
    if part == "hook":
        monkeypatch.setattr(ForwardWatch, "_begin", injected)
    elif part == "statistic":  # the saturation test of tanh outputs, whichever kernel computes it
        monkeypatch.setitem(KINDS, "tanh", dataclasses.replace(KINDS["tanh"], saturated=injected))
    elif part == "rule":
        monkeypatch.setitem(RULES, "loss-exploding", dataclasses.replace(RULES["loss-exploding"], check=injected))
    elif part == "sink":
        monkeypatch.setattr(tensorboard_sink, "_scalar_values", injected)  # runs on the writer thread
    elif part == "user-sink":
        return {"sinks": [ExplodingSink()]}
    return {}


#: part -> the error lines its failure gives, each naming what was switched off
BROKEN = {
    "hook": ["nnhealth: hook:forward failed and is disabled"],
    "statistic": ["nnhealth: hook:activation:3 failed and is disabled"],
    "rule": ["nnhealth: rule loss-exploding failed and is disabled"],
    "sink": ["nnhealth: TensorBoardSink failed and is disabled"],
    "user-sink": ["nnhealth: ExplodingSink failed and is disabled"],
}


@pytest.mark.parametrize("part", list(BROKEN))
def test_a_failure_inside_nnhealth_is_said_once_and_the_training_is_bit_identical(part, unwatched, tmp_path,
                                                                                   monkeypatch, caplog):
    extra = inject(part, monkeypatch)
    mon = Monitor(logdir=tmp_path, every=1, console=False, **extra)
    with caplog.at_level(logging.DEBUG, logger="nnhealth"):
        result = train(mon)
    assert_bit_identical(result, unwatched)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert sorted(r.getMessage().split(" for this run")[0] for r in errors) == sorted(BROKEN[part])
    for r in errors:  # each with the traceback that leads to the injected error
        assert r.exc_info is not None and "injected failure" in str(r.exc_info[1])
    # only the failing part stopped: the gradients are still read and the dead layer still found
    assert len(mon.history.values("0.weight", "gradient/norm")) == STEPS
    recorded = [json.loads(line) for line in (tmp_path / "findings.jsonl").read_text().splitlines()]
    if part != "hook":  # the forward hook is what dead-relu reads
        assert "dead-relu" in [f["symptom"] for f in recorded]
    assert [f["symptom"] for f in recorded] == [f.symptom for f in mon.findings]


@pytest.mark.parametrize("part", list(BROKEN))
def test_strict_monitor_reraises_the_failure(part, tmp_path, monkeypatch):
    extra = inject(part, monkeypatch)
    mon = Monitor(logdir=tmp_path, every=1, console=False, strict=True, **extra)
    with pytest.raises(RuntimeError, match="injected failure"):
        train(mon)
