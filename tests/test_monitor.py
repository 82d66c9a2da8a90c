"""The Monitor's manual API: sampling, bad input, configuration errors, warnings and files."""
import json
import logging
import warnings

import numpy as np
import pytest

from nnhealth import Finding, Monitor, TrainingHealthWarning
from nnhealth.monitor import InputError


def dead_layer(rng):
    return np.maximum(rng.standard_normal((64, 50)) - 5, 0)


def test_nothing_is_computed_on_steps_that_are_not_sampled():
    mon = Monitor(every=10, console=False)
    rng = np.random.default_rng(0)
    for step in range(25):
        assert mon.wants_layer_stats() == (step % 10 == 0)
        mon.observe_activation("fc1", dead_layer(rng), kind="relu")
        mon.observe_gradient("fc1.W", rng.standard_normal((5, 5)))
        assert bool(mon._pending) == (step % 10 == 0)
        mon.step(step, loss=1.0)
    assert [s for s, _ in mon.history.summaries("activation", "fc1")] == [0, 10, 20]
    assert len(mon.history.values(None, "loss")) == 25  # the loss is read on every step
    mon.close()


def test_a_layer_called_twice_in_a_step_merges():
    mon = Monitor(every=1, console=False)
    mon.observe_activation("fc1", np.ones((3, 4)), kind="relu")
    mon.observe_activation("fc1", np.zeros((5, 4)), kind="relu")
    mon.step(0, loss=1.0)
    s = mon.history.latest_summary("activation", "fc1")
    assert s.samples == 8 and list(s.unit_fired) == [3, 3, 3, 3]


def test_findings_are_reported_once_per_place_and_in_order():
    mon = Monitor(every=1, console=False)
    rng = np.random.default_rng(0)
    for step in range(20):
        mon.observe_activation("a", dead_layer(rng), kind="relu")
        mon.observe_activation("b", dead_layer(rng), kind="relu")
        new = mon.step(step, loss=2.0 - 0.05 * step)
        assert all(isinstance(f, Finding) for f in new)
    assert [(f.symptom, f.where, f.step) for f in mon.findings if f.symptom == "dead-relu"] == \
        [("dead-relu", "a", 2), ("dead-relu", "b", 2)]
    f = mon.findings[0]
    with pytest.raises(AttributeError):
        f.step = 3  # frozen


@pytest.mark.parametrize("call, message", [
    (lambda m: m.observe_activation("fc1", np.ones((2, 2)), kind="reluu"), "unknown activation kind 'reluu'"),
    (lambda m: m.observe_activation("", np.ones((2, 2))), "name must be a non-empty string"),
    (lambda m: m.observe_activation("fc1", np.array(["a", "b"])), "activation 'fc1' has dtype <U1"),
    (lambda m: m.observe_update("w", np.ones((2, 3)), param=np.ones((3, 2))), "shape (2, 3) but its parameter has (3, 2)"),
    (lambda m: m.step(-1, loss=1.0), "step must be a whole number >= 0, got -1"),
    (lambda m: m.step(0, loss=np.ones(3)), "loss must be a single number"),
])
def test_bad_input_is_a_clear_error_in_strict_mode(call, message):
    mon = Monitor(every=1, console=False, strict=True)
    with pytest.raises(ValueError) as e:
        call(mon)
    assert message in str(e.value)


def test_bad_input_never_reaches_the_training_loop(caplog):
    mon = Monitor(every=1, console=False)
    with caplog.at_level(logging.ERROR, logger="nnhealth"):
        for step in range(3):
            mon.observe_activation("fc1", np.ones((2, 2)), kind="reluu")
            mon.observe_activation("fc2", np.ones((4, 2)), kind="relu")
            mon.observe_update("w", np.ones((2, 3)), param=np.ones((3, 2)))
            mon.step(step, loss=1.0)
        assert mon.step(-5, loss=1.0) == []
    errors = [r.getMessage() for r in caplog.records]
    assert sum("reluu" in e for e in errors) == 1  # reported once, then that observation is off
    assert any("shape (2, 3)" in e for e in errors) and any("step must be" in e for e in errors)
    assert len(mon.history.summaries("activation", "fc2")) == 3  # the healthy parts still work


def test_nan_empty_and_integer_arrays():
    mon = Monitor(every=1, console=False, strict=True)
    mon.observe_activation("nan", np.full((8, 3), np.nan))
    mon.observe_activation("empty", np.zeros((0, 3)), kind="relu")
    mon.observe_activation("ints", np.arange(12).reshape(4, 3), kind="relu")
    mon.step(0, loss=1.0)
    (f,) = mon.findings
    assert (f.symptom, f.where, f.evidence["nonfinite"]) == ("non-finite-values", "nan", 24)
    assert "empty" not in mon.history.names("activation")
    assert mon.history.latest_summary("activation", "ints").sum == 66


@pytest.mark.parametrize("kwargs, message", [
    (dict(every=0), "every must be a whole number of steps >= 1, got 0"),
    (dict(every=2.5), "every must be"),
    (dict(num_classes=1), "num_classes must be"),
    (dict(rules=["dead-relu", "nope"]), "rules: unknown rule id 'nope'"),
    (dict(disable=["dead-reul"]), "did you mean 'dead-relu'"),
    (dict(thresholds={"dead-relu.max_dead": 0.7}), "rule dead-relu has no threshold 'max_dead'"),
    (dict(thresholds={"dead-relu.max_dead_fraction": 1.5}), "dead-relu.max_dead_fraction is a fraction"),
    (dict(thresholds={"loss-exploding.factor": -1}), "loss-exploding.factor must be a finite number >= 0"),
    (dict(thresholds={"nope.x": 1}), "unknown rule id 'nope'"),
    (dict(thresholds={"factor": 1}), "should be 'RULE.NAME'"),
])
def test_bad_configuration_fails_at_construction(kwargs, message):
    with pytest.raises(ValueError) as e:
        Monitor(console=False, **kwargs)
    assert message in str(e.value)


def test_logdir_that_is_a_file_or_cannot_be_created(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        Monitor(logdir=f, console=False)
    with pytest.raises(ValueError, match="is not writable"):
        Monitor(logdir=f / "sub", console=False)


def test_thresholds_accept_nested_form_and_disable_rules():
    mon = Monitor(console=False, thresholds={"dead-relu": {"max_dead_fraction": 0.9}}, disable=["underfitting"])
    assert mon.thresholds["dead-relu"].max_dead_fraction == 0.9
    assert "underfitting" not in [r.id for r in mon.engine.rules]


def test_findings_are_warnings_that_filters_control(tmp_path):
    def run(**kw):
        mon = Monitor(every=1, logdir=tmp_path / "run", tensorboard=False, **kw)
        mon.step(0, loss=2.0)
        mon.step(1, loss=float("nan"))
        return mon

    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingHealthWarning)
        with pytest.raises(TrainingHealthWarning, match="loss-nan at step 1"):
            run()
    # the finding reached the file before the warning became an error
    assert json.loads((tmp_path / "run" / "findings.jsonl").read_text().splitlines()[0])["symptom"] == "loss-nan"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TrainingHealthWarning)
        assert run().findings  # ignored on the console, still recorded


def test_console_line_names_symptom_step_place_evidence_and_advice(capsys):
    mon = Monitor(every=1)
    rng = np.random.default_rng(0)
    for step in range(4):
        mon.observe_activation("fc1", dead_layer(rng), kind="relu")
        mon.step(step, loss=1.0)
    mon.close()
    err = capsys.readouterr().err
    line = next(l for l in err.splitlines() if "dead-relu" in l)
    assert line.startswith("nnhealth warning dead-relu at step 2 [fc1]: 100% of units never fired (dead_fraction=1")
    assert "He initialisation" in line
    assert "nnhealth: 1 finding(s)" in err  # the summary table at close


def test_findings_leave_the_users_own_warnings_shown_once_and_show_again_in_a_second_run(capsys):
    def run():
        mon = Monitor(every=1)
        rng = np.random.default_rng(0)
        for step in range(6):
            warnings.warn("the training loop's own warning, every step", UserWarning)
            mon.observe_activation("fc1", dead_layer(rng), kind="relu")
            mon.step(step, loss=float("nan") if step == 4 else 1.0)
        mon.close()

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")  # Python's own default: each warning once per place
        run()
        first = capsys.readouterr().err
        run()  # the same findings, in the same process
        second = capsys.readouterr().err
    assert len([w for w in seen if "own warning" in str(w.message)]) == 1  # findings change no filter
    for err in (first, second):
        assert "nnhealth warning dead-relu at step 2" in err and "loss-nan at step 4" in err


def test_console_writes_around_a_tqdm_bar(monkeypatch):
    tqdm = pytest.importorskip("tqdm")
    written = []
    monkeypatch.setattr(tqdm.tqdm, "write", classmethod(lambda cls, s, file=None, **kw: written.append(s)))
    mon = Monitor(every=1)
    with tqdm.tqdm(range(3), disable=False) as bar:
        for step in bar:
            mon.step(step, loss=float("nan") if step == 2 else 1.0)
    assert any("loss-nan" in w for w in written)


def test_findings_file_is_appended_as_findings_happen(tmp_path):
    mon = Monitor(every=1, logdir=tmp_path, console=False, tensorboard=False)
    mon.step(0, loss=2.0)
    mon.step(1, loss=float("inf"))
    lines = (tmp_path / "findings.jsonl").read_text().splitlines()  # before close()
    assert [json.loads(l)["symptom"] for l in lines] == ["loss-nan"]
    assert json.loads(lines[0])["evidence"]["loss"] == "inf"
    mon.close()


def test_context_manager_closes_once_and_ignores_later_calls():
    with Monitor(every=1, console=False) as mon:
        mon.step(0, loss=1.0)
    mon.close()
    assert mon.step(1, loss=float("nan")) == [] and not mon.findings


def test_history_is_bounded_and_exports_a_tidy_frame():
    mon = Monitor(every=1, console=False, history_capacity=100)
    for step in range(5000):
        mon.step(step, loss=1.0 / (step + 1), train_acc=0.5)
    s = mon.history.series(None, "loss")
    assert len(s) == 64 + 100 and s.total == 5000 and s.latest_step == 4999
    df = mon.history.to_dataframe()
    assert list(df.columns) == ["step", "where", "stat", "value"]
    assert set(df["stat"]) == {"loss", "train_acc"} and df["step"].max() == 4999


def test_metric_aliases_and_train_loss():
    mon = Monitor(every=1, console=False)
    mon.step(0, train_loss=2.0, accuracy=0.5, val_accuracy=0.4)
    keys = set(mon.history.keys())
    assert {(None, "loss"), (None, "train_acc"), (None, "val_acc")} <= keys


def test_input_error_is_a_value_error():
    assert issubclass(InputError, ValueError)
