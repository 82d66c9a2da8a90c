"""HealthPruningCallback on real searches over the numpy demo network's learning rate."""
from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

optuna = pytest.importorskip("optuna")

from nnhealth import Monitor  # noqa: E402
from nnhealth.demo import network  # noqa: E402
from nnhealth.demo.search import single_threaded_blas  # noqa: E402
from nnhealth.tune import (  # noqa: E402
    FINDINGS, PRUNED_AT, PRUNED_BY, REASON, STEPS, HealthPruningCallback,
)

STEPS_PER_TRIAL = 60


@pytest.fixture(autouse=True)
def _quiet_and_fast():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with single_threaded_blas():
        yield


def lr_objective(stop_on=(), report_every=1, use_study_pruner=True, steps=STEPS_PER_TRIAL):
    def objective(trial):
        lr = trial.suggest_float("lr", 1e-6, 100, log=True)
        spec = network.with_changes("none", lr=lr)
        with Monitor(every=5, num_classes=10, console=False) as mon, \
                HealthPruningCallback(trial, mon, stop_on=stop_on, report_every=report_every,
                                      use_study_pruner=use_study_pruner) as guard:
            result = network.train(spec, observer=mon, steps=steps, callback=lambda i: guard(i.step, i.loss))
        return result.val_history[-1][1]
    return objective


def search(lrs, pruner=None, **options) -> optuna.Study:
    study = optuna.create_study(pruner=pruner or optuna.pruners.NopPruner())
    for lr in lrs:
        study.enqueue_trial({"lr": lr})
    study.optimize(lr_objective(**options), n_trials=len(lrs))
    return study


def by_lr(study):
    return {t.params["lr"]: t for t in study.trials}


def test_diverging_learning_rates_are_pruned_within_a_few_steps():
    trials = by_lr(search([1e-3, 0.03, 0.1, 5.0, 30.0]))
    pruned = {lr for lr, t in trials.items() if t.state == optuna.trial.TrialState.PRUNED}
    assert pruned == {5.0, 30.0}
    for lr in pruned:
        t = trials[lr]
        assert t.user_attrs[PRUNED_BY] in ("loss-exploding", "loss-nan")
        assert t.user_attrs[REASON].startswith(f"nnhealth critical {t.user_attrs[PRUNED_BY]} at step")
        assert t.user_attrs[STEPS] <= 10 and t.user_attrs[PRUNED_AT] == t.user_attrs[STEPS] - 1
        assert max(t.intermediate_values) == t.user_attrs[PRUNED_AT]     # the last step was reported
    for lr in (1e-3, 0.03, 0.1):
        t = trials[lr]
        assert t.state == optuna.trial.TrialState.COMPLETE and PRUNED_BY not in t.user_attrs
        assert t.user_attrs[STEPS] == STEPS_PER_TRIAL


def test_a_chosen_warning_also_ends_a_trial():
    sick = by_lr(search([2.0], stop_on=("dead-relu",)))[2.0]
    assert sick.state == optuna.trial.TrialState.PRUNED
    assert sick.user_attrs[PRUNED_BY] == "dead-relu" and "warning dead-relu" in sick.user_attrs[REASON]
    assert sick.user_attrs[STEPS] < STEPS_PER_TRIAL
    tolerated = by_lr(search([2.0]))[2.0]                     # same run, dead-relu not chosen: it completes
    assert tolerated.state == optuna.trial.TrialState.COMPLETE
    assert "dead-relu" in tolerated.user_attrs[FINDINGS] and tolerated.user_attrs[STEPS] == STEPS_PER_TRIAL


def test_the_studys_own_pruner_keeps_working_and_is_named():
    median = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=10)
    trials = by_lr(search([0.1, 0.05, 1e-5], pruner=median))
    slow = trials[1e-5]
    assert slow.state == optuna.trial.TrialState.PRUNED
    assert slow.user_attrs[PRUNED_BY] == "optuna:MedianPruner" and slow.user_attrs[STEPS] < STEPS_PER_TRIAL
    own_only = by_lr(search([0.1, 0.05, 1e-5], pruner=median, use_study_pruner=False))
    assert own_only[1e-5].state == optuna.trial.TrialState.COMPLETE


def test_values_are_reported_every_k_steps_and_at_the_end():
    trials = by_lr(search([0.03, 30.0], report_every=10))
    assert sorted(trials[0.03].intermediate_values) == list(range(0, STEPS_PER_TRIAL, 10))
    diverged = trials[30.0]
    assert 0 in diverged.intermediate_values and diverged.user_attrs[PRUNED_AT] in diverged.intermediate_values


def test_a_findings_only_monitor_and_repeated_steps_are_fine():
    study = optuna.create_study()
    trial = study.ask()
    with Monitor(every=1, console=False) as mon:
        guard = HealthPruningCallback(trial, mon)
        mon.step(0, loss=2.3)
        guard(0, 2.3)
        guard(0, 2.2)                       # the same step again: not reported twice, no Optuna warning
        guard(1)                            # no value: nothing reported, findings still judged
        mon.step(2, loss=float("nan"))
        with pytest.raises(optuna.TrialPruned, match="loss-nan"):
            guard(2)
    assert trial.user_attrs[PRUNED_BY] == "loss-nan" and trial.user_attrs[STEPS] == 3
    assert study.trials[0].intermediate_values == {0: 2.3}


def test_bad_settings_are_refused():
    trial = optuna.create_study().ask()
    with Monitor(console=False) as mon:
        with pytest.raises(ValueError, match="unknown symptom ids \\['dead-relus'\\]"):
            HealthPruningCallback(trial, mon, stop_on=("dead-relus",))
        with pytest.raises(ValueError, match="report_every"):
            HealthPruningCallback(trial, mon, report_every=0)


def test_importing_nnhealth_imports_no_optuna():
    code = ("import sys, nnhealth, nnhealth.sanity, nnhealth.cli\n"
            "nnhealth.cli.build_parser()\n"          # every command module loaded, as 'nnhealth --help' does
            "print('optuna' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_a_loss_tensor_is_reported_without_an_autograd_warning():
    torch = pytest.importorskip("torch")
    study = optuna.create_study()
    trial = study.ask()
    w = torch.ones(1, requires_grad=True)
    with Monitor(console=False) as mon, HealthPruningCallback(trial, mon, report_every=2) as guard:
        for step in range(3):
            loss = (w * 2.3).sum()
            mon.step(step, loss=loss)
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                guard(step, loss)
    assert study.trials[0].intermediate_values == {0: pytest.approx(2.3), 2: pytest.approx(2.3)}
    assert trial.user_attrs[STEPS] == 3 and trial.user_attrs[FINDINGS] == []
