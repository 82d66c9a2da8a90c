"""JAX / Flax / Optax: statistics computed by jax.numpy, trees named by their paths, and real
training loops (Linen and NNX, optax optimizers) in which the faults are caught."""
from __future__ import annotations

import math

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="JAX is not installed (pip install 'nnhealth[jax]')")
flax = pytest.importorskip("flax", reason="Flax is not installed (pip install 'nnhealth[jax]')")
optax = pytest.importorskip("optax", reason="Optax is not installed (pip install 'nnhealth[jax]')")

import jax.numpy as jnp  # noqa: E402
from flax import linen as nn  # noqa: E402
from flax import nnx  # noqa: E402

from nnhealth import Monitor  # noqa: E402
from nnhealth.hooks import jax as nnjax  # noqa: E402
from nnhealth.hooks._jax_tree import named_leaves  # noqa: E402
from nnhealth.stats import Summary, summarize  # noqa: E402
from nnhealth.stats.backend import NUMPY, ops_for, start_fetch  # noqa: E402
from nnhealth.stats.backend_jax import JaxOps  # noqa: E402

from conftest import fired, warnings_of  # noqa: E402


# -- the statistics, computed by jax.numpy --------------------------------------
def _host(x, kind, **options) -> Summary:
    ops = ops_for(x)
    layout, vec = summarize(x, kind, ops=ops, **options)
    return Summary(layout, start_fetch(ops, [vec]).result()[0])


@pytest.mark.parametrize("kind", ["relu", "tanh", "sigmoid", "linear"])
@pytest.mark.parametrize("shape,axis", [((64, 32), None), ((8, 6, 6, 5), -1), ((300,), None)])
def test_jax_statistics_match_numpy(kind, shape, axis):
    rng = np.random.default_rng(1)
    x = rng.normal(scale=2.0, size=shape).astype(np.float32)
    if kind == "sigmoid":
        x = 1 / (1 + np.exp(-3 * x))
    elif kind == "tanh":
        x = np.tanh(x)
    elif kind == "relu":
        x = np.maximum(x, 0)
    x.reshape(-1)[:3] = [np.nan, np.inf, 0.0]
    options = dict(hist=True, units=True, moments=True, unit_axis=axis)
    ref = _host(x, kind, **options)
    got = _host(jnp.asarray(x), kind, **options)
    assert isinstance(ops_for(jnp.asarray(x)), JaxOps) and ops_for(x) is NUMPY
    assert got.layout == ref.layout
    for field in ("count", "nonfinite", "zeros", "positive", "saturated", "samples", "min", "max"):
        assert getattr(got, field) == pytest.approx(getattr(ref, field), rel=1e-6), field
    for field in ("sum", "sumsq", "abssum"):
        assert getattr(got, field) == pytest.approx(getattr(ref, field), rel=1e-5, abs=1e-4), field
    np.testing.assert_array_equal(got.unit_fired, ref.unit_fired)
    np.testing.assert_array_equal(got.unit_saturated, ref.unit_saturated)
    # float32 logs may put a value lying on a bucket edge one bucket over
    assert np.abs(got.hist - ref.hist).sum() <= 2 and got.hist.sum() == ref.hist.sum()


def test_jax_observations_stay_on_device_until_the_step():
    """observe_* queues jax arrays; the one copy to the host happens in Monitor.step."""
    mon = Monitor(every=1, console=False, strict=True)
    x = jax.random.normal(jax.random.key(0), (32, 16))
    mon.observe_activation("h", jnp.maximum(x, 0), kind="relu")
    mon.observe_activation("h", jnp.maximum(-x, 0), kind="relu")  # a second call merges on the device
    mon.observe_gradient("w", x)
    mon.observe_update("w", 0.01 * x, param=x)
    vectors = [vec for _, _, vec in mon._pending.values()]
    assert vectors and all(isinstance(v, jax.Array) for v in vectors)
    mon.step(0, loss=jnp.float32(2.5))
    h = mon.history.latest_summary("activation", "h")
    assert h.count == 2 * 32 * 16 and h.positive == pytest.approx(np.count_nonzero(np.asarray(x) != 0))
    assert mon.history.values(None, "loss")[-1] == 2.5
    ratio = mon.history.values("w", "update/ratio")[-1]
    assert ratio == pytest.approx(0.01, rel=1e-5)
    mon.close()


# -- names from tree paths --------------------------------------------------------
class _Linen(nn.Module):
    bias: float = 0.0
    width: int = 32

    @nn.compact
    def __call__(self, x):
        for i in range(2):
            x = nn.relu(nn.Dense(self.width, bias_init=nn.initializers.constant(self.bias))(x))
            self.sow("intermediates", f"relu{i + 1}", x)
        return nn.Dense(3)(x)


def test_names_come_from_tree_paths_in_depth_order():
    model = _Linen()
    x = jnp.ones((4, 5))
    variables = model.init(jax.random.key(0), x)
    names = [n for n, _ in named_leaves(variables["params"])]
    assert names == ["Dense_0.kernel", "Dense_0.bias", "Dense_1.kernel", "Dense_1.bias", "Dense_2.kernel",
                     "Dense_2.bias"]  # Linen's own (creation) order
    _, state = model.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
    acts = [n for n, _ in named_leaves(state, activation=True)]
    assert acts == ["Dense_0", "relu1", "Dense_1", "relu2", "Dense_2", ""]  # call order; "" is the model
    # natural order for sorted containers, non-float leaves skipped
    tree = {f"layer{i}": {"w": jnp.ones(2)} for i in (10, 9, 2)} | {"count": jnp.int32(3), "key": jax.random.key(1)}
    assert [n for n, _ in named_leaves(dict(sorted(tree.items())))] == ["layer2.w", "layer9.w", "layer10.w"]
    # a tuple holds the calls of one sown value (one name); a list holds layers (one name each)
    twice = {"h": (jnp.ones(2), jnp.ones(2))}
    assert [n for n, _ in named_leaves(twice, activation=True)] == ["h", "h"]
    assert [n for n, _ in named_leaves({"blocks": [{"w": jnp.ones(2)}] * 2})] == ["blocks.0.w", "blocks.1.w"]


def test_kind_from_name():
    assert [nnjax.kind_from_name(n) for n in ("relu1", "block.act_tanh", "leaky_relu_0", "Dense_0", "gelu")] \
        == ["relu", "tanh", "leaky_relu", "linear", "gelu"]


def test_bad_trees_are_reported_not_raised(caplog):
    mon = Monitor(every=1, console=False)
    nnjax.observe_tree(mon, "gradz", {"a": jnp.ones(3)})
    nnjax.observe_tree(mon, "grads", {"a": jnp.ones(3)})
    mon.step(0, loss=1.0)
    assert "unknown tree 'gradz'" in caplog.text
    assert mon.history.names("gradient") == ["a"]
    mon.close()


# -- training through Flax and Optax ------------------------------------------------
def _data(n=512, d=20, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x @ rng.normal(size=(d, classes))).argmax(1)
    return x, y


def train_linen(tx, *, bias=0.0, steps=120, every=5):
    """A Linen MLP trained by an optax optimizer, watched by nnjax.step; stops when told to."""
    x_all, y_all = _data()
    model = _Linen(bias=bias)
    params = model.init(jax.random.key(0), x_all[:1])["params"]
    opt_state = tx.init(params)

    def loss_fn(p, x, y):
        logits, state = model.apply({"params": p}, x, mutable=["intermediates"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), state["intermediates"]

    @jax.jit
    def train_step(params, opt_state, x, y):
        (loss, inter), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, grads, updates, inter

    rng = np.random.default_rng(1)
    mon = Monitor(every=every, num_classes=3, console=False)
    for step in range(steps):
        idx = rng.integers(0, len(x_all), 64)
        new_params, opt_state, loss, grads, updates, inter = train_step(params, opt_state, x_all[idx], y_all[idx])
        nnjax.step(mon, step, loss=loss, grads=grads, params=params, updates=updates, activations=inter,
                   inputs=x_all[idx])
        params = new_params
        if mon.should_stop:
            break
    mon.close()
    return mon, step


def test_linen_healthy_run_has_no_warnings():
    mon, last = train_linen(optax.adam(3e-3))
    assert last == 119 and not mon.should_stop
    assert warnings_of(mon) == []
    loss = mon.history.values(None, "loss")
    assert loss[-10:].mean() < 0.6 * loss[:3].mean()
    assert mon.history.names("activation") == ["relu1", "relu2"]
    assert {"Dense_0.kernel", "Dense_2.bias"} <= set(mon.history.names("update"))
    ratio = mon.history.values("Dense_1.kernel", "update/ratio")
    assert len(ratio) > 5 and np.all((ratio > 1e-5) & (ratio < 1e-1))


def test_linen_learning_rate_far_too_high_stops_training():
    mon, last = train_linen(optax.sgd(20.0))
    found = fired(mon, "loss-exploding") + fired(mon, "loss-nan")
    assert found and found[0].severity == "critical"
    assert mon.should_stop and last < 20


def test_linen_dead_relu_initialisation():
    mon, _ = train_linen(optax.sgd(0.1), bias=-3.0, steps=40)
    dead = {f.where for f in fired(mon, "dead-relu")}
    assert dead == {"relu1", "relu2"}
    assert fired(mon, "dead-relu")[0].evidence["dead_fraction"] > 0.8


class _Nnx(nnx.Module):
    def __init__(self, rngs, bias=0.0):
        init = nnx.initializers.constant(bias)
        self.fc1 = nnx.Linear(20, 32, bias_init=init, rngs=rngs)
        self.fc2 = nnx.Linear(32, 3, rngs=rngs)

    def __call__(self, x):
        h = nnx.relu(self.fc1(x))
        self.sow(nnx.Intermediate, "relu", h)
        return self.fc2(h)


def train_nnx(lr, *, bias=0.0, steps=60, every=5):
    """An NNX model: parameters before and after each step give the updates (no optax tree needed)."""
    x_all, y_all = _data()
    model = _Nnx(nnx.Rngs(0), bias=bias)
    optimizer = nnx.Optimizer(model, optax.sgd(lr), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, x, y):
        def loss_fn(model):
            logits, inter = nnx.capture(model, nnx.Intermediate)(x)  # what the model sowed
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), inter

        (loss, inter), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        return loss, grads, inter

    rng = np.random.default_rng(1)
    mon = Monitor(every=every, num_classes=3, console=False)
    for step in range(steps):
        idx = rng.integers(0, len(x_all), 64)
        params = nnx.state(model, nnx.Param)  # immutable arrays: a free snapshot
        loss, grads, inter = train_step(model, optimizer, x_all[idx], y_all[idx])
        nnjax.step(mon, step, loss=loss, grads=grads, params=params, activations=inter)
        if mon.should_stop:
            break
    mon.close()
    return mon, step


def test_nnx_dead_relu_and_names():
    mon, _ = train_nnx(0.1, bias=-4.0, steps=25)
    assert [f.where for f in fired(mon, "dead-relu")] == ["relu"]
    assert mon.history.names("gradient") == ["fc1.bias", "fc1.kernel", "fc2.bias", "fc2.kernel"]
    assert mon.history.meta["fc1.kernel"]["fan_in"] == 20


def test_nnx_learning_rate_far_too_high_stops_training():
    mon, last = train_nnx(50.0)
    assert fired(mon, "loss-exploding") or fired(mon, "loss-nan")
    assert mon.should_stop and last < 30
    ratio = mon.history.values("fc1.kernel", "update/ratio")
    assert len(ratio) and math.isfinite(ratio[0]) and ratio[0] > 0.01
