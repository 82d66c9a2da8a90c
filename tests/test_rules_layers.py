"""Layer-level rules on constructed activations, gradients, parameters, updates and inputs."""
import numpy as np

from conftest import drive, fired, warnings_of

B = 64  # batch size of the constructed activations


def acts(layers):
    """layers: [(name, kind, fn(rng) -> array)] observed on every step, with a flat healthy loss."""
    def feed(mon, step, rng):
        for name, kind, fn in layers:
            mon.observe_activation(name, fn(rng, step), kind=kind)
        return {"loss": 2.3 * 0.99**step}
    return feed


def relu(x):
    return np.maximum(x, 0)


def test_dead_relu_fires_when_the_window_is_full():
    feed = acts([("fc1", "relu", lambda r, s: relu(r.standard_normal((B, 100)) - 5))])
    (f,) = fired(drive(feed, 10), "dead-relu")
    assert (f.step, f.where) == (2, "fc1")
    assert f.evidence["dead_fraction"] > 0.99 and f.evidence["samples"] == 3 * B


def test_dead_relu_threshold_is_overridable():
    feed = acts([("fc1", "relu", lambda r, s: relu(r.standard_normal((B, 100)) - 5))])
    assert not fired(drive(feed, 10, thresholds={"dead-relu.max_dead_fraction": 1.0}), "dead-relu")


def test_dead_relu_counts_conv_channels():
    def conv(r, s):
        x = r.standard_normal((8, 16, 6, 6))
        x[:, :12] -= 10  # 12 of 16 channels never fire
        return relu(x)
    (f,) = fired(drive(acts([("conv1", "relu", conv)]), 6), "dead-relu")
    assert f.evidence["units"] == 16 and f.evidence["dead_units"] == 12


def test_dead_relu_silent_on_healthy_relu_and_on_leaky_relu():
    healthy = acts([("fc1", "relu", lambda r, s: relu(r.standard_normal((B, 100)))),
                    ("fc2", "leaky_relu", lambda r, s: np.where((x := r.standard_normal((B, 50)) - 5) > 0, x, 0.01 * x))])
    assert not warnings_of(drive(healthy, 20))


def test_saturated_tanh_fires_and_healthy_tanh_does_not():
    feed = acts([("h", "tanh", lambda r, s: np.tanh(10 * r.standard_normal((B, 50))))])
    (f,) = fired(drive(feed, 10), "saturated-activations")
    assert f.step == 2 and f.evidence["saturated_fraction"] > 0.5
    feed = acts([("h", "tanh", lambda r, s: np.tanh(0.5 * r.standard_normal((B, 50))))])
    assert not warnings_of(drive(feed, 10))


def test_saturated_sigmoid_uses_the_derivative_definition():
    feed = acts([("h", "sigmoid", lambda r, s: 1 / (1 + np.exp(-8 * np.sign(r.standard_normal((B, 30))))))])
    (f,) = fired(drive(feed, 5), "saturated-activations")  # sigmoid(8) = 0.99966: derivative 0.13% of max
    assert f.where == "h"


def _depth(stds, kind="tanh"):
    return acts([(f"l{i}", kind, (lambda sd: lambda r, s: sd * r.standard_normal((B, 40)))(sd))
                 for i, sd in enumerate(stds)])


def test_vanishing_activations_named_at_the_first_collapsed_layer():
    (f,) = fired(drive(_depth([1, 0.1, 0.01, 1e-3, 1e-4]), 10), "vanishing-activations")
    assert (f.step, f.where) == (2, "l3")
    assert f.evidence["ratio"] < 1e-3 and f.evidence["layers"] == 5


def test_exploding_activations_only_for_unbounded_kinds():
    (f,) = fired(drive(_depth([1, 10, 100], kind="linear"), 10), "exploding-activations")
    assert (f.step, f.where) == (2, "l2")
    assert not warnings_of(drive(_depth([1, 1.2, 0.9, 1.1], kind="relu"), 10))


def grads(layers, n_steps_nan=None):
    def feed(mon, step, rng):
        for name, scale in layers:
            g = scale * rng.standard_normal((20, 20))
            if n_steps_nan is not None and step >= n_steps_nan and name == layers[0][0]:
                g[0, 0] = np.nan
            mon.observe_gradient(name, g)
            mon.observe_gradient(name.replace(".W", ".b"), np.ones(20))  # biases never count as weights
        return {"loss": 2.0}
    return feed


def test_vanishing_gradients_absolute_and_relative():
    (f,) = fired(drive(grads([("l0.W", 1e-9), ("l1.W", 1e-9)]), 8), "vanishing-gradients")
    assert (f.step, f.where) == (2, "l0.W")
    (f,) = fired(drive(grads([("l0.W", 1e-5), ("l1.W", 1e-1)]), 8), "vanishing-gradients")
    assert (f.step, f.where) == (2, "l0.W") and f.evidence["ratio"] < 1e-3
    assert not fired(drive(grads([("l0.W", 1e-2), ("l1.W", 1e-2)]), 8), "vanishing-gradients")


def test_exploding_gradients_ratio_and_non_finite():
    (f,) = fired(drive(grads([("l0.W", 100.0), ("l1.W", 0.1)]), 8), "exploding-gradients")
    assert (f.step, f.where, f.severity) == (2, "l0.W", "warning")
    mon = drive(grads([("l0.W", 1.0), ("l1.W", 1.0)], n_steps_nan=4), 8)
    (f,) = fired(mon, "exploding-gradients")
    assert (f.step, f.severity) == (4, "critical") and mon.should_stop
    assert not fired(drive(grads([("l0.W", 1.0), ("l1.W", 0.5)]), 8), "exploding-gradients")


def growing_grads(loss):
    """Both weight gradients grow 30x over 40 steps (together: no first/last imbalance)."""
    def feed(mon, step, rng):
        scale = 30.0 ** (step / 40) if step < 40 else 30.0
        for name in ("l0.W", "l1.W"):
            mon.observe_gradient(name, scale * rng.standard_normal((20, 20)))
        return {"loss": loss(step)}
    return feed


def test_exploding_gradients_growth_counts_when_the_loss_climbs_back():
    # the loss fell below 0.5, then climbed back to 2 while the gradient norm grew 30x: exploding
    (f,) = fired(drive(growing_grads(lambda s: 2.0 * 0.9**s if s < 25 else 2.0), 60), "exploding-gradients")
    assert f.where is None and 10 < f.evidence["growth"] < 1000
    assert f.evidence["lowest_loss"] < 0.5 and f.evidence["loss"] == 2.0
    # the same growth with a falling loss (a model leaving a plateau) is not
    assert not fired(drive(growing_grads(lambda s: 2.0 * 0.97**s), 60), "exploding-gradients")
    # nor with a loss that rose less than loss_rise x its lowest
    assert not fired(drive(growing_grads(lambda s: 1.0 if s < 25 else 2.0), 60), "exploding-gradients")


def updates(ratio):
    W = np.random.default_rng(0).standard_normal((30, 30))

    def feed(mon, step, rng):
        mon.observe_update("l0.W", ratio * W * (1 + 0.01 * step), param=W)
        return {"loss": 2.0}
    return feed


def test_update_ratio_high_and_low_after_five_samples():
    (f,) = fired(drive(updates(0.2), 10), "update-ratio-high")
    assert f.step == 4 and abs(f.evidence["ratio"] - 0.2) < 0.01
    (f,) = fired(drive(updates(1e-7), 10), "update-ratio-low")
    assert f.step == 4
    mon = drive(updates(1e-3), 10)
    assert not fired(mon, "update-ratio-high") and not fired(mon, "update-ratio-low")


def test_update_ratio_from_parameter_snapshots_on_consecutive_steps():
    def feed(mon, step, rng):
        mon.observe_parameter("l0.W", W0 * (1 + 0.3 * step))
        return {"loss": 2.0}
    W0 = np.random.default_rng(0).standard_normal((30, 30)) + 0.1
    mon = drive(feed, 12, every=2)
    ratios = mon.history.values("l0.W", "update/ratio")
    assert len(ratios) == 6 and np.allclose(ratios[0], 0.3)


def inputs(fn):
    def feed(mon, step, rng):
        mon.observe_input(fn(rng))
        return {"loss": 2.0}
    return feed


def test_input_not_normalized_offset_and_scales():
    (f,) = fired(drive(inputs(lambda r: r.standard_normal((B, 10)) + 50), 4), "input-not-normalized")
    assert (f.step, f.where) == (0, "input") and f.evidence["off_centre_fraction"] == 1.0
    scales = np.logspace(0, 3, 10)
    (f,) = fired(drive(inputs(lambda r: r.standard_normal((B, 10)) * scales), 4), "input-not-normalized")
    assert f.evidence["scale_ratio"] > 500
    assert not warnings_of(drive(inputs(lambda r: r.standard_normal((B, 10))), 4))


def test_input_integer_ids_are_skipped():
    mon = drive(inputs(lambda r: r.integers(0, 1000, size=(B, 12))), 4)
    assert not mon.findings and not mon.history.names("input")


def params(ws):
    def feed(mon, step, rng):
        for name, w in ws:
            mon.observe_parameter(name, w)
        return {"loss": 2.0}
    return feed


def test_weights_symmetric_on_hidden_layers_only():
    r = np.random.default_rng(0)
    mon = drive(params([("l0.W", np.zeros((10, 20))), ("l1.W", np.full((20, 20), 0.5)),
                        ("out.W", np.zeros((20, 3)))]), 2)
    assert [(f.step, f.where) for f in fired(mon, "weights-symmetric")] == [(0, "l0.W"), (0, "l1.W")]
    rows_equal = np.tile(r.standard_normal((10, 1)), (1, 20))  # every unit (column) has the same weights
    assert fired(drive(params([("l0.W", rows_equal), ("out.W", r.standard_normal((20, 3)))]), 1), "weights-symmetric")
    healthy = params([("l0.W", r.standard_normal((10, 20))), ("out.W", np.zeros((20, 3)))])
    assert not fired(drive(healthy, 2), "weights-symmetric")


def test_non_finite_values_names_the_place_and_role():
    def feed(mon, step, rng):
        h = rng.standard_normal((B, 8))
        if step == 3:
            h[0, 0] = np.inf
        mon.observe_activation("fc1", h, kind="linear")
        return {"loss": 2.0}
    (f,) = fired(drive(feed, 6), "non-finite-values")
    assert (f.step, f.where, f.evidence["role"], f.evidence["nonfinite"]) == (3, "fc1", "activation", 1)


def test_update_ratio_high_gives_the_output_layer_its_own_limit():
    W = np.random.default_rng(0).standard_normal((30, 30))

    def feed(hidden, output):
        def f(mon, step, rng):
            mon.observe_update("l0.W", hidden * W, param=W)
            mon.observe_update("out.W", output * W, param=W)
            return {"loss": 2.0}
        return f
    assert not fired(drive(feed(0.05, 0.2), 8), "update-ratio-high")  # a small head learning fast is healthy
    assert [f.where for f in fired(drive(feed(0.2, 0.2), 8), "update-ratio-high")] == ["l0.W"]
    assert [f.where for f in fired(drive(feed(0.05, 0.5), 8), "update-ratio-high")] == ["out.W"]


def test_exploding_activations_ignores_a_dead_reference_layer():
    def feed(mon, step, rng):
        stem = np.maximum(rng.standard_normal((B, 40)) - 3, 0)  # mostly dead: tiny spread
        mon.observe_activation("stem", stem, kind="relu")
        mon.observe_activation("block", np.maximum(rng.standard_normal((B, 40)), 0), kind="relu")
        return {"loss": 2.0}
    mon = drive(feed, 6)
    assert fired(mon, "dead-relu") and not fired(mon, "exploding-activations")


def test_input_features_off_centre_are_counted_as_their_scores_say():
    """The off-centre fraction is counted without building every feature's score, and is the same: on
    constant features, zero means, and spreads made NaN or infinite by non-finite sums."""
    from nnhealth.rules.input_not_normalized import _off_centre, _scores
    means = np.array([0.0, 0.0, 2.0, -2.0, np.nan, 1.0, 0.0, 5.0, np.inf, 3.0, -0.5, -0.0])
    stds = np.array([0.0, 1.0, 0.0, 1.0, np.nan, np.nan, np.nan, 2.0, np.nan, np.inf, 0.25, 0.0])
    rng = np.random.default_rng(0)
    cases = [(means, stds), (rng.standard_normal(784), rng.random(784) * (rng.random(784) > 0.2))]
    for m, s in cases:
        for limit in (0.0, 0.5, 1.0, 2.5, 1e9):
            assert _off_centre(m, s, limit) == float(np.mean(_scores(m, s) > limit))


def test_input_window_moments_give_the_merged_summary_means_and_stds():
    from nnhealth.rules.input_not_normalized import _window
    mon = drive(inputs(lambda r: r.standard_normal((B, 12)) * np.logspace(0, 2, 12) + 3.0), 9)
    h = mon.history
    s = h.window_summary("input", "input")
    samples, count, means, stds = _window(h, "input")
    assert h.window_moments("input", "input") is not None and (samples, count) == (s.samples, s.count)
    np.testing.assert_array_equal(means, s.unit_means())
    np.testing.assert_array_equal(stds, s.unit_stds())
