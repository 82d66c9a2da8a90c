"""One sweep, two worker processes, one shared Optuna storage: nnhealth prunes sick trials in both."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

optuna = pytest.importorskip("optuna")

from nnhealth.tune import PRUNED_BY, STEPS, review  # noqa: E402

# Each worker gets its own learning rates (one of them diverges) whatever order the trials interleave in.
WORKER_LRS = {0: [0.05, 20.0, 0.2], 1: [8.0, 0.02, 0.1]}

WORKER = textwrap.dedent('''
    import pathlib, sys, time

    import optuna

    from nnhealth.demo import network
    from nnhealth.demo.search import Stage, objective, single_threaded_blas

    kind, where, worker, barrier = sys.argv[1], sys.argv[2], int(sys.argv[3]), pathlib.Path(sys.argv[4])
    lrs = [float(v) for v in sys.argv[5].split(",")]


    class Listed(optuna.samplers.BaseSampler):
        """Hands out this worker's values in order."""

        def __init__(self, values):
            self.values = list(values)

        def infer_relative_search_space(self, study, trial):
            return {}

        def sample_relative(self, study, trial, search_space):
            return {}

        def sample_independent(self, study, trial, name, distribution):
            return self.values.pop(0)


    if kind == "journal":
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(where))
    else:
        storage = where
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="shared-sweep", storage=storage, sampler=Listed(lrs),
                              pruner=optuna.pruners.NopPruner())
    (barrier / f"ready-{worker}").touch()            # start together, so the two really overlap
    deadline = time.time() + 60
    while len(list(barrier.glob("ready-*"))) < 2 and time.time() < deadline:
        time.sleep(0.02)
    run = objective(network, Stage("shared", 1e-4, 1e2, len(lrs), steps=60))


    def tagged(trial):
        trial.set_user_attr("worker", worker)
        return run(trial)


    with single_threaded_blas():
        study.optimize(tagged, n_trials=len(lrs))
''')


def storage_for(kind, tmp_path):
    if kind == "journal":
        where = str(tmp_path / "sweep.journal")
        return where, optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(where))
    where = f"sqlite:///{tmp_path / 'sweep.db'}"
    return where, where


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_two_workers_share_one_sweep_and_both_prune(kind, tmp_path):
    where, storage = storage_for(kind, tmp_path)
    optuna.create_study(study_name="shared-sweep", storage=storage)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    workers = [subprocess.Popen([sys.executable, str(script), kind, where, str(w), str(barrier),
                                 ",".join(map(str, lrs))], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for w, lrs in WORKER_LRS.items()]
    for w in workers:
        _, err = w.communicate(timeout=240)
        assert w.returncode == 0, err

    study = optuna.load_study(study_name="shared-sweep", storage=storage)
    trials = study.trials
    assert len(trials) == 6 and all(t.state.is_finished() for t in trials)
    complete_steps = {t.user_attrs[STEPS] for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
    assert complete_steps == {60}
    for worker, lrs in WORKER_LRS.items():
        mine = {t.params["lr"]: t for t in trials if t.user_attrs["worker"] == worker}
        assert sorted(mine) == sorted(lrs)
        diverging = max(lrs)
        sick = mine[diverging]
        assert sick.state == optuna.trial.TrialState.PRUNED, (worker, sick.user_attrs)
        assert sick.user_attrs[PRUNED_BY] in ("loss-exploding", "loss-nan")
        assert sick.user_attrs[STEPS] < 10
        assert all(t.state == optuna.trial.TrialState.COMPLETE for lr, t in mine.items() if lr != diverging)
    spans = {w: (min(t.datetime_start for t in trials if t.user_attrs["worker"] == w),
                 max(t.datetime_complete for t in trials if t.user_attrs["worker"] == w)) for w in WORKER_LRS}
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1]      # the workers ran at the same time
    verdict = review(study)
    assert verdict.complete == 4 and verdict.pruned == 2 and verdict["lr"].edge is None
