"""review(): best values at the edge of the searched range, the next range; the trials table and the plot."""
from __future__ import annotations

import math

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

from nnhealth.demo import network  # noqa: E402
from nnhealth.demo.search import Stage, objective, single_threaded_blas  # noqa: E402
from nnhealth.tune import PRUNED_AT, PRUNED_BY, plot_search, review, trials_table  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)


def demo_study(low, high, lrs, steps=60, name="lr-search") -> optuna.Study:
    """The demo's learning-rate search over [low, high], at the given learning rates."""
    study = optuna.create_study(study_name=name, pruner=optuna.pruners.NopPruner())
    for lr in lrs:
        study.enqueue_trial({"lr": lr})
    with single_threaded_blas():
        study.optimize(objective(network, Stage(name, low, high, len(lrs), steps)), n_trials=len(lrs))
    return study


@pytest.fixture(scope="module")
def narrow():
    """A deliberately narrow range, [1e-4, 1e-3], far below the demo network's best learning rate (~0.1)."""
    return demo_study(1e-4, 1e-3, np.geomspace(1e-4, 1e-3, 5).tolist())


@pytest.fixture(scope="module")
def coarse():
    """Six decades, with the diverging learning rates at the top end."""
    return demo_study(1e-4, 1e2, [1e-4, 1e-3, 0.01, 0.1, 0.3, 2.0, 30.0])


def synthetic(low, high, optimum, n=30, log=True, seed=0) -> optuna.Study:
    """(log10 x - log10 optimum)^2, sampled at random: where the best lands is known."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    f = math.log10 if log else (lambda v: v)
    study.optimize(lambda t: (f(t.suggest_float("x", low, high, log=log)) - f(optimum)) ** 2, n_trials=n)
    return study


def test_a_best_value_at_the_edge_of_a_narrow_range_is_flagged(narrow):
    r = review(narrow)
    lr = r["lr"]
    assert lr.edge == "high" and lr.at_edge and r.at_edge == [lr]
    assert lr.best == pytest.approx(1e-3) and lr.position == pytest.approx(1.0)
    # same width (one decade), centred on the best value: the search moves up, past the old edge
    assert lr.next_low == pytest.approx(10 ** -3.5) and lr.next_high == pytest.approx(10 ** -2.5)
    assert "above 0.001" in lr.advice
    assert "AT THE HIGH EDGE" in str(r)


def test_a_best_value_inside_a_wide_range_gets_a_finer_range(coarse):
    r = review(coarse)
    lr = r["lr"]
    assert lr.edge is None and 0.3 < lr.position < 0.8
    assert 1e-4 <= lr.next_low < lr.best < lr.next_high <= 1e2
    assert math.log(lr.next_high / lr.next_low) < 0.5 * math.log(1e6)      # finer than the coarse range
    assert r.pruned == 2 and r.pruned_by == {"dead-relu": 1, "loss-exploding": 1}
    assert r.pruned_ranges == {"dead-relu": {"lr": (2.0, 2.0)}, "loss-exploding": {"lr": (30.0, 30.0)}}
    assert "pruned: dead-relu x1 (lr 2), loss-exploding x1 (lr 30)" in str(r)
    assert r.next_ranges == {"lr": (lr.next_low, lr.next_high)}


def test_the_outer_tenth_of_the_log_range_is_the_edge():
    low = review(synthetic(1e-2, 1e2, optimum=1e-4))["x"]
    assert low.edge == "low" and low.position < 0.1 and "below 0.01" in low.advice
    assert low.next_low < 1e-2 < low.next_high
    inside = review(synthetic(1e-2, 1e2, optimum=10 ** -1.5))["x"]   # 1/8 of the way in: not an edge
    assert inside.edge is None and 0.1 < inside.position < 0.2
    assert review(synthetic(1e-2, 1e2, optimum=10 ** -1.5), edge_fraction=0.2)["x"].edge == "low"


def test_linear_and_integer_parameters_and_a_natural_bound():
    study = optuna.create_study()
    for dropout, width, act in [(0.3, 64, "tanh"), (0.0, 1024, "relu"), (0.2, 256, "relu"), (0.45, 32, "tanh")]:
        study.enqueue_trial({"dropout": dropout, "width": width, "act": act})

    def objective(t):   # best with no dropout and the widest layer
        dropout, width = t.suggest_float("dropout", 0.0, 0.5), t.suggest_int("width", 16, 1024, log=True)
        return dropout + math.log(1024 / width) + (t.suggest_categorical("act", ["relu", "tanh"]) == "tanh")

    study.optimize(objective, n_trials=4)
    r = review(study)
    assert [p.name for p in r.params] == ["dropout", "width"]                 # categorical: no edge to judge
    dropout, width = r["dropout"], r["width"]
    assert dropout.edge == "low" and not dropout.log and dropout.next_low == 0.0
    assert "natural bound" in dropout.advice
    assert width.edge == "high" and width.log
    assert isinstance(width.next_low, int) and isinstance(width.next_high, int) and width.next_high > 1024


def test_pruned_only_and_unsupported_studies():
    study = optuna.create_study()

    def pruned(trial):
        trial.suggest_float("lr", 1e-3, 1.0, log=True)
        trial.set_user_attr(PRUNED_BY, "loss-nan")
        trial.set_user_attr(PRUNED_AT, 3)
        raise optuna.TrialPruned()

    study.optimize(pruned, n_trials=3)
    r = review(study)
    assert r.best_trial is None and r.params == () and r.pruned_by == {"loss-nan": 3}
    assert str(r).startswith("no trial completed (3 finished, 3 pruned)")
    with pytest.raises(ValueError, match="single-objective"):
        review(optuna.create_study(directions=["minimize", "maximize"]))
    with pytest.raises(ValueError, match="no numeric parameter named \\['momentum'\\]"):
        review(synthetic(1e-2, 1e2, optimum=1.0, n=3), params=["momentum"])
    few = review(synthetic(1e-2, 1e2, optimum=1.0, n=2))
    assert "run more before trusting this" in few["x"].advice


def test_the_trials_table_says_how_each_trial_ended(coarse):
    table = trials_table(coarse, attrs=("val_acc",), value_name="val loss")
    lines = table.splitlines()
    assert lines[0].split() == ["trial", "lr", "steps", "val", "loss", "val_acc", "outcome"]
    assert len(lines) == 1 + len(coarse.trials)
    best = coarse.best_trial.number
    assert lines[1 + best].split()[0] == f"{best}*"
    diverged = next(line for line in lines if line.split()[1] == "30")
    assert "pruned at step" in diverged and diverged.split()[3:5] == ["-", "-"]   # no value, no accuracy
    assert diverged.split()[2] != "60"


def test_the_plot_has_a_log_axis_per_parameter_and_marks_pruned_trials(coarse, tmp_path):
    path = tmp_path / "search.png"
    fig = plot_search(coarse, path=path, value_name="validation loss")
    assert path.stat().st_size > 10_000
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 1 and axes[0].get_xscale() == "log" and axes[0].get_xlabel() == "lr (log scale)"
    labels = axes[0].get_legend_handles_labels()[1]
    assert "complete" in labels and any(label.startswith("pruned: ") for label in labels)
    assert any(label.startswith("best (trial ") for label in labels)
    with pytest.raises(ValueError, match="no numeric parameter named"):
        plot_search(coarse, params=["momentum"])


@pytest.mark.parametrize("module", ["nnhealth.tune.pruning", "nnhealth.tune.review"])
def test_the_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
