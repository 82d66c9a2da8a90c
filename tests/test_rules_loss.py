"""Loss- and metric-level rules on constructed series: the exact step they fire, and silence when healthy."""
import math

import numpy as np
import pytest

from conftest import drive, fired


def losses(values, **metrics):
    def feed(mon, step, rng):
        out = {"loss": values[step]}
        for name, series in metrics.items():
            if series[step] is not None:
                out[name] = series[step]
        return out
    return feed, len(values)


def healthy_curve(n=200):
    return [2.3 * math.exp(-s / 60) + 0.1 for s in range(n)]


def test_loss_nan_fires_on_the_step_and_stops():
    feed, n = losses([2.3, 2.2, 2.1, 2.0, 1.9, float("nan")])
    mon = drive(feed, n)
    (f,) = fired(mon, "loss-nan")
    assert (f.step, f.severity) == (5, "critical")
    assert mon.should_stop


def test_loss_nan_reported_again_only_after_it_cleared():
    feed, n = losses([2.3, float("nan"), float("inf"), 2.0, float("nan")])
    mon = drive(feed, n)
    assert [f.step for f in fired(mon, "loss-nan")] == [1, 4]


def test_loss_exploding_needs_two_values_above_three_times_the_start():
    vals = [2.0] * 10 + [7.0, 2.0] + [2.0] * 5 + [7.0, 7.5]
    feed, n = losses(vals)
    mon = drive(feed, n)
    (f,) = fired(mon, "loss-exploding")
    assert f.step == 18 and f.severity == "critical"
    assert f.evidence["start_loss"] == 2.0 and f.evidence["ratio"] > 3
    assert mon.should_stop


def test_loss_exploding_silent_on_a_healthy_curve_and_a_single_spike():
    vals = healthy_curve()
    vals[50] = 9.0
    feed, n = losses(vals)
    assert not fired(drive(feed, n), "loss-exploding")


def test_loss_not_decreasing_fires_when_the_minimum_history_is_reached():
    rng = np.random.default_rng(1)
    vals = list(2.3 + 0.01 * rng.standard_normal(120))
    feed, n = losses(vals)
    (f,) = fired(drive(feed, n), "loss-not-decreasing")
    assert f.step == 49 and abs(f.evidence["improvement"]) < 0.01


def test_loss_not_decreasing_silent_on_a_healthy_curve():
    feed, n = losses(healthy_curve())
    assert not fired(drive(feed, n), "loss-not-decreasing")


def test_loss_not_decreasing_judged_only_on_sampled_steps():
    feed, n = losses([2.3] * 120)
    (f,) = fired(drive(feed, n, every=10), "loss-not-decreasing")
    assert f.step == 50


def test_init_plateau_fires_once_the_drop_is_seen():
    vals = [2.3] * 40 + [1.0] * 60
    feed, n = losses(vals)
    (f,) = fired(drive(feed, n), "init-plateau")
    assert f.step == 42
    assert f.evidence["plateau_steps"] == 38 and f.evidence["drop"] > 0.5


def test_init_plateau_silent_when_the_loss_falls_from_the_start():
    feed, n = losses(healthy_curve())
    assert not fired(drive(feed, n), "init-plateau")


def test_initial_loss_unexpected_compares_the_first_loss_with_ln_c():
    feed, n = losses([10.0] + healthy_curve(30))
    (f,) = fired(drive(feed, n, num_classes=10), "initial-loss-unexpected")
    assert f.step == 0 and math.isclose(f.evidence["expected"], math.log(10))
    feed, n = losses(healthy_curve(30))
    assert not fired(drive(feed, n, num_classes=10), "initial-loss-unexpected")
    feed, n = losses([10.0] * 30)
    assert not fired(drive(feed, n), "initial-loss-unexpected")  # no num_classes: not judged


def _every(k, value, n):
    return [value if s % k == 0 else None for s in range(n)]


def test_overfitting_fires_after_three_validation_points_with_a_gap():
    n = 60
    feed, _ = losses(healthy_curve(n), train_acc=[0.99] * n, val_acc=_every(10, 0.6, n))
    (f,) = fired(drive(feed, n), "overfitting")
    assert f.step == 20 and f.evidence["gap"] > 0.3


def test_overfitting_from_a_rising_validation_loss():
    n = 100
    val_loss = [None] * n
    for i, s in enumerate(range(0, n, 10)):
        val_loss[s] = 1.0 - 0.1 * i if i < 4 else 0.7 + 0.2 * (i - 3)
    feed, _ = losses(healthy_curve(n), val_loss=val_loss)
    (f,) = fired(drive(feed, n), "overfitting")
    assert f.step == 60 and f.evidence["best_step"] == 30


def test_overfitting_silent_without_a_gap():
    n = 60
    feed, _ = losses(healthy_curve(n), train_acc=[0.95] * n, val_acc=_every(10, 0.93, n))
    assert not fired(drive(feed, n), "overfitting")


def test_underfitting_is_info_and_needs_a_levelled_loss():
    n = 60
    feed, _ = losses([1.5] * n, train_acc=[0.4] * n, val_acc=_every(10, 0.39, n))
    (f,) = fired(drive(feed, n), "underfitting")
    assert f.step == 20 and f.severity == "info"
    feed, _ = losses(healthy_curve(n), train_acc=[0.4] * n, val_acc=_every(10, 0.39, n))
    assert not fired(drive(feed, n), "underfitting")  # still learning: not judged as underfitting


def test_loss_not_decreasing_says_lower_the_rate_when_the_loss_rises():
    feed, n = losses([2.0 + 0.01 * s for s in range(80)])
    (f,) = fired(drive(feed, n), "loss-not-decreasing")
    assert f.message.startswith("loss rose") and "lower it" in f.advice


def test_init_plateau_silent_on_a_long_slow_healthy_decay():
    """5,000 points: the kept points have a gap once the ring buffer wrapped."""
    feed, n = losses([2.3 * math.exp(-s / 1500) + 0.1 for s in range(5000)])
    assert not fired(drive(feed, n, every=50), "init-plateau")


def test_overfitting_ignores_a_near_zero_validation_loss_wobbling():
    n = 100
    val_loss = [None] * n
    for i, s in enumerate(range(0, n, 10)):
        val_loss[s] = [1.0, 0.4, 0.1, 0.03, 0.02, 0.05, 0.06, 0.05, 0.06, 0.05][i]
    feed, _ = losses(healthy_curve(n), val_loss=val_loss)
    assert not fired(drive(feed, n), "overfitting")  # +0.04 over the best is 4% of the first value


def _init_plateau_losses():
    """Loss curves that move init-plateau's search along the kept points while points start to be hidden."""
    rng = np.random.default_rng(0)

    def flat(n):
        return list(2.3 + 0.005 * rng.standard_normal(n))
    sudden = flat(50) + [2.1] * 25 + [1.0] * 30  # the drop comes once points are hidden: still found
    slow = flat(50) + [2.3 * 0.99 ** s for s in range(100)]
    long_flat = [v if s % 17 else math.nan for s, v in enumerate(flat(150))] + [1.0] * 20
    falling = healthy_curve(150)
    # a healthy start judged with the latest points' help: not kept once NaN take their place
    sparse = [v if s % 16 < 5 else math.nan for s, v in enumerate(healthy_curve(64))] + healthy_curve(11)[6:]
    sparse += [math.nan] * 3 + [0.5] * 10
    # once points are hidden, the last first points meet later ones: a window of them may end the plateau
    # (two low points end the head, one low point every 7 after it, NaN in the head)
    straddle = [math.nan if s in (5, 9, 13) else 1.0 if s >= 62 else v for s, v in enumerate(flat(64))]
    straddle += [1.0 if s % 7 == 3 else v for s, v in enumerate(flat(60))]
    return {"sudden": sudden, "slow": slow, "long_flat": long_flat, "falling": falling, "sparse": sparse,
            "straddle": straddle}


@pytest.mark.parametrize("head,capacity", [(64, 5), (32, 8)])
def test_init_plateau_verdicts_carried_from_step_to_step_equal_fresh_ones(head, capacity):
    """init-plateau resumes its search where the last step's stopped and keeps a healthy start's verdict
    for the run: whatever the losses, each step's verdict equals the one judged from the history alone."""
    from nnhealth.history import History
    from nnhealth.rules import RULES, Context

    rule = RULES["init-plateau"]
    th = rule.default_thresholds()
    verdicts = set()
    for name, values in _init_plateau_losses().items():
        h = History(capacity=capacity, head=head)
        for step, loss in enumerate(values):
            h.record_many(step, {(None, "loss"): loss})
            ctx = Context(history=h, step=step)
            kept = rule.check(ctx, th)
            carried, h.carry = h.carry, {}
            assert rule.check(ctx, th) == kept, (name, step)
            h.carry = carried
            verdicts.add((name, "none" if kept is None else len(kept)))
    assert ("falling", 0) in verdicts
    if head == 64:
        assert {("sudden", 1), ("sparse", 0), ("sparse", "none"), ("straddle", 1)} <= verdicts
