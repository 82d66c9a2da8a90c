"""write_hparams, read back by TensorBoard's own HParams plugin backend (what its HParams tab calls)."""
from __future__ import annotations

import math

import pytest

optuna = pytest.importorskip("optuna")

from tensorboard import context as tb_context  # noqa: E402
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer  # noqa: E402
from tensorboard.plugins import base_plugin  # noqa: E402
from tensorboard.plugins.hparams import api_pb2, backend_context, get_experiment, list_session_groups  # noqa: E402

from nnhealth import Monitor  # noqa: E402
from nnhealth.tune import HealthPruningCallback, write_hparams  # noqa: E402
from nnhealth.tune.hparams import SUFFIX  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)


def toy_objective(trial):
    """A loss that shrinks for lr < 1 and doubles every step for lr >= 1 (nnhealth prunes those)."""
    lr = trial.suggest_float("lr", 1e-3, 1e3, log=True)
    layers = trial.suggest_int("layers", 1, 4)
    trial.suggest_categorical("optimizer", ["sgd", "adam"])
    loss = 2.3
    with Monitor(console=False) as mon, HealthPruningCallback(trial, mon) as guard:
        for step in range(20):
            loss *= (0.9 if lr < 1 else 2.0) ** (1 / layers)
            mon.step(step, loss=loss)
            guard(step, loss)
    trial.set_user_attr("accuracy", 1 - loss / 2.3)
    return loss


def sweep(name, seed, n):
    study = optuna.create_study(study_name=name, sampler=optuna.samplers.RandomSampler(seed=seed))
    study.enqueue_trial({"lr": 10.0, "layers": 1, "optimizer": "sgd"})      # one that diverges, for sure
    study.optimize(toy_objective, n_trials=n)
    return study


class HParamsTab:
    """What TensorBoard's HParams tab asks its backend, on one logdir."""

    def __init__(self, logdir):
        mux = plugin_event_multiplexer.EventMultiplexer()
        mux.AddRunsFromDirectory(str(logdir))
        mux.Reload()
        tb = base_plugin.TBContext(logdir=str(logdir), multiplexer=mux,
                                   data_provider=data_provider.MultiplexerDataProvider(mux, str(logdir)))
        self.backend = backend_context.Context(tb)

    def experiment(self) -> api_pb2.Experiment:
        return get_experiment.Handler(tb_context.RequestContext(), self.backend, "",
                                      api_pb2.GetExperimentRequest()).run()

    def sessions(self) -> dict[str, api_pb2.SessionGroup]:
        exp = self.experiment()
        request = api_pb2.ListSessionGroupsRequest(start_index=0, slice_size=1000, allowed_statuses=[
            api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE, api_pb2.STATUS_RUNNING])
        for h in exp.hparam_infos:
            request.col_params.add(hparam=h.name)
        for m in exp.metric_infos:
            request.col_params.add(metric=m.name)
        groups = list_session_groups.Handler(tb_context.RequestContext(), self.backend, "", request).run()
        return {g.name: g for g in groups.session_groups}


def metrics(group) -> dict[str, float]:
    return {m.name.tag: m.value for m in group.metric_values}


def test_a_study_appears_in_the_hparams_tab(tmp_path):
    study = sweep("lr-sweep", seed=0, n=6)
    assert {t.state.name for t in study.trials} == {"COMPLETE", "PRUNED"}
    (tmp_path / "notes").mkdir()                       # not ours: left alone by rewrites
    write_hparams(study, tmp_path, value_name="loss", attrs=("accuracy",))
    write_hparams(study, tmp_path, value_name="loss", attrs=("accuracy",))
    assert (tmp_path / "notes").is_dir()
    tab = HParamsTab(tmp_path)
    exp = tab.experiment()
    infos = {h.name: h for h in exp.hparam_infos}
    assert set(infos) == {"lr", "layers", "optimizer", "outcome"}
    assert (infos["lr"].domain_interval.min_value, infos["lr"].domain_interval.max_value) == (1e-3, 1e3)
    assert {v.string_value for v in infos["optimizer"].domain_discrete.values} == {"sgd", "adam"}
    assert {m.name.tag for m in exp.metric_infos} == {"trial/loss", "trial/steps", "trial/accuracy"}

    groups = tab.sessions()
    assert sorted(groups) == [f"trial-{n:04d}" for n in range(6)]
    for t in study.trials:
        group = groups[f"trial-{t.number:04d}"]
        assert group.hparams["lr"].number_value == pytest.approx(t.params["lr"])
        assert group.hparams["optimizer"].string_value == t.params["optimizer"]
        session = group.sessions[0]
        if t.state == optuna.trial.TrialState.PRUNED:
            assert group.hparams["outcome"].string_value == "loss-exploding"
            assert session.status == api_pb2.STATUS_FAILURE
            assert "trial/loss" not in metrics(group) and metrics(group)["trial/steps"] < 20
        else:
            assert group.hparams["outcome"].string_value == "complete"
            assert session.status == api_pb2.STATUS_SUCCESS
            assert metrics(group)["trial/loss"] == pytest.approx(t.value, rel=1e-6)
            assert metrics(group)["trial/steps"] == 20
            assert metrics(group)["trial/accuracy"] == pytest.approx(t.user_attrs["accuracy"], rel=1e-6)
        assert session.start_time_secs == pytest.approx(t.datetime_start.timestamp(), abs=1e-3)


def test_stages_share_one_experiment_and_rewriting_replaces(tmp_path):
    coarse, fine = sweep("coarse", seed=1, n=3), sweep("fine", seed=2, n=2)
    write_hparams(coarse, tmp_path)
    write_hparams([coarse, fine], tmp_path)            # the sweep grew: written again over the first
    assert len(list(tmp_path.glob(f"*{SUFFIX}"))) == 1
    assert not list(tmp_path.glob("trial-*"))          # the single-study layout is gone, not left as stale runs
    groups = HParamsTab(tmp_path).sessions()
    assert sorted(groups) == ["coarse/trial-0000", "coarse/trial-0001", "coarse/trial-0002",
                              "fine/trial-0000", "fine/trial-0001"]
    assert {g.hparams["study"].string_value for g in groups.values()} == {"coarse", "fine"}
    for run in groups:
        files = list((tmp_path / run).iterdir())
        assert len(files) == 1 and files[0].name.endswith(SUFFIX)


def test_the_intermediate_values_are_a_scalar_series(tmp_path):
    study = sweep("series", seed=3, n=2)
    write_hparams(study, tmp_path)
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(tmp_path))
    mux.Reload()
    pruned = next(t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED)
    events = mux.Tensors(f"trial-{pruned.number:04d}", "trial/intermediate")
    got = {e.step: float(e.tensor_proto.float_val[0]) for e in events}
    want = {s: v for s, v in pruned.intermediate_values.items() if math.isfinite(v)}
    assert got.keys() == want.keys() and all(got[s] == pytest.approx(want[s], rel=1e-6) for s in want)


def test_what_cannot_be_written_is_refused(tmp_path):
    with pytest.raises(ValueError, match="single-objective"):
        write_hparams(optuna.create_study(directions=["minimize", "minimize"]), tmp_path)
    with pytest.raises(ValueError, match="different directions"):
        write_hparams([optuna.create_study(study_name="a"), optuna.create_study(study_name="b",
                                                                                direction="maximize")], tmp_path)
    with pytest.raises(ValueError, match="distinct names"):
        write_hparams([optuna.create_study(study_name="a"), optuna.create_study(study_name="a")], tmp_path)
