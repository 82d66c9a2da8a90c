"""The demo network's faults are real, and it reports through the manual API.

Every pathology is measured here with a few lines of numpy on the trained
network (or the one ``build`` returns before training), never with a
monitor: the demo is the ground truth the rules are judged against, so it
must not be judged by them.
"""
from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import pytest

from nnhealth.demo.network import (FAULTS, Fault, FaultSpec, build, evaluate,
                                   softmax_cross_entropy, train, with_changes)

CATALOG = {
    "loss-nan", "loss-exploding", "loss-not-decreasing", "init-plateau",
    "initial-loss-unexpected", "overfitting", "underfitting", "dead-relu",
    "saturated-activations", "vanishing-activations", "exploding-activations",
    "vanishing-gradients", "exploding-gradients", "update-ratio-high",
    "update-ratio-low", "input-not-normalized", "weights-symmetric",
    "non-finite-values",
}
REQUIRED = {
    "none": set(), "small-init": {"vanishing-activations"},
    "large-init": {"saturated-activations"}, "zero-init": {"weights-symmetric"},
    "high-lr": {"loss-exploding"}, "low-lr": {"loss-not-decreasing"},
    "dead-relu": {"dead-relu"}, "unnormalized-input": {"input-not-normalized"},
    "overfit": {"overfitting"},
}
LN10 = math.log(10)


@functools.lru_cache(maxsize=None)
def run(name: str):
    """Each fault is trained once for the whole module (they are deterministic)."""
    return train(FAULTS[name])


def grad_norms(name: str) -> dict[str, float]:
    """Weight-gradient norms of the freshly built network on one batch."""
    net, data = build(name)
    logits, cache = net.forward(data.X_train[:128])
    _, dlogits, _ = softmax_cross_entropy(logits, data.y_train[:128])
    return {k: float(np.linalg.norm(g)) for k, g in net.backward(cache, dlogits).items()
            if k.endswith(".W")}


class Recorder:
    """Duck-typed observer: records every call, in order, with copies of the arrays."""

    def __init__(self, wants=None, stop_at=None):
        self.calls: list[tuple] = []
        self.should_stop = False
        self._stop_at = stop_at
        if wants is not None:
            self.wants_layer_stats = wants

    def observe_input(self, X):
        self.calls.append(("input", None, np.array(X)))

    def observe_activation(self, name, h, kind=None):
        self.calls.append(("activation", name, np.array(h), kind))

    def observe_parameter(self, name, p):
        self.calls.append(("parameter", name, np.array(p)))

    def observe_gradient(self, name, g):
        self.calls.append(("gradient", name, np.array(g)))

    def observe_update(self, name, u, param=None):
        self.calls.append(("update", name, np.array(u), np.array(param)))

    def step(self, step, loss, **metrics):
        self.calls.append(("step", step, loss, metrics))
        self.should_stop = step == self._stop_at
        return []

    def per_step(self) -> list[list[tuple]]:
        steps, cur = [], []
        for c in self.calls:
            cur.append(c)
            if c[0] == "step":
                steps.append(cur)
                cur = []
        return steps


# ---------------------------------------------------------------- the table

def test_faults_table_names_descriptions_and_symptoms():
    assert set(REQUIRED) <= set(FAULTS)
    for name, spec in FAULTS.items():
        assert isinstance(spec, FaultSpec) and isinstance(spec.fault, Fault)
        assert spec.name == name and spec.description and "\n" not in spec.description
        assert set(spec.symptoms) <= CATALOG, spec.symptoms
        assert REQUIRED.get(name, set()) <= set(spec.symptoms)
    assert FAULTS["none"].symptoms == ()


def test_deterministic_from_seed():
    a, b, c = train("none", steps=15), train("none", steps=15), train("none", steps=15, seed=1)
    assert a.losses == b.losses and a.losses != c.losses


# ---------------------------------------------------------------- the faults

def test_none_is_healthy():
    r = run("none")
    assert r.val_acc > 0.8 and r.train_acc - r.val_acc < 0.1
    assert abs(r.losses[0] - LN10) < 0.1 * LN10           # loss starts near ln C
    assert np.mean(r.losses[-20:]) < 0.2 * r.losses[0]
    hs = r.net.hidden(r.data.X_val)
    assert max(((h > 0).sum(0) == 0).mean() for h in hs) < 0.05  # no dead units
    X = r.data.X_train
    assert np.abs(X.mean(0)).max() < 0.1 and np.all(np.abs(X.std(0) - 1) < 0.1)
    assert min(grad_norms("none").values()) > 1e-2


def test_small_init_activations_and_gradients_vanish():
    net, data = build("small-init")
    stds = [h.std() for h in net.hidden(data.X_val)]
    assert all(b < 0.3 * a for a, b in zip(stds, stds[1:]))  # shrinks layer after layer
    assert stds[-1] < 1e-3 * stds[0]
    assert max(v for k, v in grad_norms("small-init").items() if k != "out.W") < 1e-5
    r = run("small-init")  # and training does not rescue it
    spread = [h.std(axis=0).mean() for h in r.net.hidden(r.data.X_val)]  # input-driven part
    assert spread[-1] < 1e-3 * spread[0]
    assert abs(np.mean(r.losses[-20:]) - LN10) < 0.01 * LN10


def test_large_init_saturates_tanh():
    r = run("large-init")
    sat = [(np.abs(h) > 0.97).mean() for h in r.net.hidden(r.data.X_val)]
    assert sat[0] > 0.6 and min(sat[1:]) > 0.9, sat


def test_zero_init_units_stay_identical():
    net0, _ = build("zero-init")
    assert all(not p.any() for k, p in net0.params.items() if k.endswith(".W"))
    r = run("zero-init")
    W0 = r.net.params["layer0.W"]
    assert np.abs(W0).max() > 1e-3                         # it did learn something...
    for h in r.net.hidden(r.data.X_val):                   # ...but every unit is a copy
        assert np.ptp(h, axis=1).max() < 1e-9
    for k, W in r.net.params.items():
        if k.startswith("layer") and k.endswith(".W"):
            assert np.ptp(W, axis=1).max() < 1e-9


def test_high_lr_loss_explodes():
    L = np.array(run("high-lr").losses)
    assert not np.all(np.isfinite(L)) or L.max() > 3 * L[0]


def test_low_lr_loss_barely_moves():
    net0, data = build("low-lr")
    before, _ = evaluate(net0, data.X_train, data.y_train)
    after, _ = evaluate(run("low-lr").net, data.X_train, data.y_train)
    assert abs(after - before) < 0.02 * before


def test_dead_relu_units_never_fire():
    r = run("dead-relu")
    fired = np.concatenate([(h > 0).sum(0) for h in r.net.hidden(r.data.X_val)])
    assert (fired == 0).mean() > 0.5


def test_unnormalized_input_is_off_centre_and_unevenly_scaled():
    rec = Recorder()
    train("unnormalized-input", observer=rec, steps=1)
    seen = rec.calls[0][2]                                  # the batch the network is fed
    r = run("unnormalized-input")
    for X in (seen, r.data.X_train):
        assert np.abs(X.mean(0)).min() > 10
        assert X.std(0).max() / X.std(0).min() > 100
    assert r.steps == FAULTS["unnormalized-input"].fault.steps
    assert np.all(np.isfinite(r.losses))


def test_overfit_memorises_but_does_not_generalise():
    r = run("overfit")
    assert r.train_acc > 0.95 and r.train_acc - r.val_acc > 0.2


def test_every_run_is_quick():
    for name in FAULTS:
        assert run(name).seconds < 30, name


# ---------------------------------------------------------------- the manual API

def test_observer_calls_names_kinds_and_order():
    rec = Recorder()
    r = train("none", observer=rec, steps=12)
    steps = rec.per_step()
    assert len(steps) == r.steps == 12
    names = list(r.net.params)
    assert names == ["layer0.W", "layer0.b", "layer1.W", "layer1.b", "out.W", "out.b"]
    for i, calls in enumerate(steps):
        kinds = [c[0] for c in calls]
        assert kinds[0] == "input" and kinds[-1] == "step" and calls[-1][1] == i
        assert [c[1] for c in calls if c[0] == "parameter"] == names
        acts = [c for c in calls if c[0] == "activation"]
        assert [(c[1], c[3]) for c in acts] == [("layer0", "relu"), ("layer1", "relu")]
        assert [c[1] for c in calls if c[0] == "gradient"] == names
        assert [c[1] for c in calls if c[0] == "update"] == names
        assert kinds.index("activation") < kinds.index("gradient") < kinds.index("update")
        _, _, loss, metrics = calls[-1]
        assert isinstance(loss, float) and 0 <= metrics["train_acc"] <= 1
        assert ("val_loss" in metrics) == ("val_acc" in metrics) == (i % 10 == 0 or i == 11)
    # the update is the step applied to the parameter passed with it
    for name in names:
        ups = [c for c in rec.calls if c[0] == "update" and c[1] == name]
        params = [c[2] for c in rec.calls if c[0] == "parameter" and c[1] == name]
        np.testing.assert_array_equal(ups[0][3], params[0])
        np.testing.assert_allclose(ups[0][3] + ups[0][2], params[1])
    np.testing.assert_allclose(steps[-1][-1][2], r.losses[-1])


def test_wants_layer_stats_is_honoured():
    asked = []
    rec = Recorder(wants=lambda step: asked.append(step) or step % 3 == 0)
    train("none", observer=rec, steps=7)
    assert asked == list(range(7))
    for i, calls in enumerate(rec.per_step()):
        kinds = {c[0] for c in calls}
        assert "input" in kinds and "step" in kinds
        layer = {"activation", "gradient", "update", "parameter"} & kinds
        assert layer == (set() if i % 3 else {"activation", "gradient", "update", "parameter"})
    never = Recorder(wants=lambda step: False)
    train("none", observer=never, steps=3)
    kinds = [(c[0], i) for i, s in enumerate(never.per_step()) for c in s]
    assert {i for k, i in kinds if k == "parameter"} == {0}  # init checks still get step 0
    assert not any(k in ("activation", "gradient", "update") for k, _ in kinds)


def test_should_stop_and_callback_stop_the_run():
    r = train("none", observer=Recorder(stop_at=2), steps=50)
    assert r.steps == 3 and r.stopped == "observer"
    seen = []
    r = train("none", steps=50, callback=lambda info: seen.append(info.step) or info.step == 4)
    assert r.steps == 5 and r.stopped == "callback" and seen == list(range(5))


def test_nan_loss_does_not_crash_or_warn():
    rec = Recorder()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = train(with_changes("high-lr", lr=1e3), observer=rec)
    assert r.stopped == "non-finite loss" and not math.isfinite(r.losses[-1])
    assert rec.calls[-1][0] == "step" and not math.isfinite(rec.calls[-1][2])


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh", "sigmoid"])
def test_backward_matches_finite_differences(activation):
    """The hand-written backward pass is the gradient of the loss."""
    from nnhealth.demo.network import MLP
    fault = Fault(depth=2, width=5, dim=4, num_classes=3, activation=activation, init="xavier",
                  bias_init=0.1, out_scale=1.0)
    net = MLP(fault, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((7, 4)), rng.integers(3, size=7)
    logits, cache = net.forward(X)
    grads = net.backward(cache, softmax_cross_entropy(logits, y)[1])
    for k, p in net.params.items():
        num = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + 1e-6
            up = softmax_cross_entropy(net.forward(X)[0], y)[0]
            p[i] = old - 1e-6
            down = softmax_cross_entropy(net.forward(X)[0], y)[0]
            p[i] = old
            num[i] = (up - down) / 2e-6
        np.testing.assert_allclose(grads[k], num, rtol=1e-4, atol=1e-8, err_msg=k)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "leaky_relu"])
def test_other_activations_learn(activation):
    init = "he" if activation == "leaky_relu" else "xavier"
    r = train(Fault(activation=activation, init=init, lr=0.1), steps=200)
    assert r.val_acc > 0.6, r.val_acc  # chance is 0.1
