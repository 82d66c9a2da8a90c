"""``nnhealth demo --search``: the lecture's coarse-to-fine learning-rate search, with sick trials pruned.

Stage 1 samples the learning rate of the healthy demo network (numpy, or the
same model in PyTorch) at random in log space over six decades, with short
runs. nnhealth watches every trial and ends it at its first critical finding
(the loss is NaN, or above 3x its start) or dead-ReLU warning, so the
diverging trials cost a few steps instead of a full run. :func:`nnhealth.tune.review` then checks that the
best value lies inside the range and proposes a finer one; stage 2 searches
it with longer runs, and is reviewed the same way.
"""
from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

STOP_ON = ("dead-relu",)         # warnings that also end a trial (critical findings always do)
BASE = "none"                    # the healthy recipe of nnhealth.demo.network; only lr changes


@dataclass(frozen=True)
class Stage:
    name: str
    low: float
    high: float
    trials: int
    steps: int


COARSE = Stage("coarse", 1e-4, 1e2, trials=14, steps=60)
FINE_TRIALS, FINE_STEPS = 8, 150


def single_threaded_blas():
    """The demo's matrices are tiny: threaded BLAS only adds overhead (4x slower on 2 busy cores)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


@contextlib.contextmanager
def _single_threaded(network):
    """One thread for the tiny demo matrices, in numpy's BLAS and, for the PyTorch network, in torch."""
    torch = sys.modules.get("torch") if network.__name__.endswith("torch_network") else None
    threads = torch.get_num_threads() if torch is not None else None
    with single_threaded_blas():
        if torch is not None:
            torch.set_num_threads(1)
        try:
            yield
        finally:
            if torch is not None:
                torch.set_num_threads(threads)


@contextlib.contextmanager
def _quiet_optuna(optuna):
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def objective(network, stage: Stage, *, seed: int = 0, every: int = 5):
    """The Optuna objective of one stage: validation loss of the demo network after ``stage.steps`` steps."""
    from .. import Monitor
    from ..tune import HealthPruningCallback

    spec = network.FAULTS[BASE]

    def run(trial) -> float:
        lr = trial.suggest_float("lr", stage.low, stage.high, log=True)
        with Monitor(every=every, num_classes=spec.fault.num_classes, console=False) as mon, \
                HealthPruningCallback(trial, mon, stop_on=STOP_ON, report_every=5) as guard:
            result = network.train(network.with_changes(spec, lr=lr), observer=mon, seed=seed, steps=stage.steps,
                                   callback=lambda info: guard(info.step, info.loss))
        _, val_loss, val_acc = result.val_history[-1]
        trial.set_user_attr("val_acc", round(float(val_acc), 4))
        return float(val_loss)

    return run


def run_stage(optuna, network, stage: Stage, *, seed: int = 0, sampler_seed: int = 0, every: int = 5):
    """Search one stage with random sampling (the lecture prefers it to a grid); returns the study."""
    study = optuna.create_study(study_name=stage.name, direction="minimize",
                                sampler=optuna.samplers.RandomSampler(seed=sampler_seed),
                                pruner=optuna.pruners.NopPruner())   # only nnhealth's verdicts prune here
    study.optimize(objective(network, stage, seed=seed, every=every), n_trials=stage.trials)
    return study


def _checked(logdir: Path) -> Path:
    """The records' folder, made if needed (write_hparams replaces an earlier search's runs, and only those)."""
    if logdir.exists() and not logdir.is_dir():
        raise NotADirectoryError(f"logdir {str(logdir)!r} exists and is not a directory")
    logdir.mkdir(parents=True, exist_ok=True)
    return logdir


def _pruned_steps(study) -> list[int]:
    from optuna.trial import TrialState

    from ..tune import STEPS

    return [t.user_attrs[STEPS] for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
            if STEPS in t.user_attrs]


def run_search(args) -> int:
    """Run the two stages and print them; ``args`` may carry ``seed``, ``every``, ``logdir`` (None: no files)
    and ``framework`` (``numpy``, the default, or ``torch``: the same network in PyTorch)."""
    framework = getattr(args, "framework", None) or "numpy"
    if framework not in ("numpy", "torch"):
        print(f"nnhealth demo --search: unknown framework {framework!r}; use numpy or torch", file=sys.stderr)
        return 2
    try:
        import optuna

        from .. import tune
    except ImportError as e:
        print(f"nnhealth demo --search needs Optuna ({e}): pip install 'nnhealth[tune]'", file=sys.stderr)
        return 2
    if framework == "torch":
        try:
            from . import torch_network as network
        except ImportError as e:
            print(f"nnhealth demo --search --framework torch needs PyTorch ({e}): pip install 'nnhealth[torch]'",
                  file=sys.stderr)
            return 2
    else:
        from . import network

    seed = getattr(args, "seed", 0) or 0
    every = getattr(args, "every", None) or 5
    logdir = getattr(args, "logdir", None)
    logdir = _checked(Path(logdir)) if logdir is not None else None
    started = time.perf_counter()
    print(f"nnhealth demo --search: coarse-to-fine learning-rate search on the {framework} demo network "
          f"(healthy recipe, SGD + momentum), random search with Optuna {optuna.__version__}")
    print(f"nnhealth ends a trial at its first critical finding (loss-nan, loss-exploding) or "
          f"{', '.join(STOP_ON)} warning; objective: validation loss\n")
    studies = []
    stage = COARSE
    with _single_threaded(network), _quiet_optuna(optuna):
        for number in (1, 2):
            print(f"stage {number}, {stage.name}: lr log-uniform in [{stage.low:.3g}, {stage.high:.3g}], "
                  f"{stage.trials} trials x {stage.steps} steps", flush=True)
            study = run_stage(optuna, network, stage, seed=seed, sampler_seed=seed + number, every=every)
            studies.append(study)
            print(tune.trials_table(study, attrs=("val_acc",), value_name="val_loss"))
            verdict = tune.review(study)
            print("review: " + str(verdict).replace("\n", "\n        ") + "\n", flush=True)
            if verdict.best_trial is None:
                print("no trial completed: nothing to refine", file=sys.stderr)
                return 1
            low, high = verdict["lr"].next_low, verdict["lr"].next_high
            stage = Stage("fine", low, high, FINE_TRIALS, FINE_STEPS)

    best = min((s.best_trial for s in studies), key=lambda t: t.value)
    pruned = [n for s in studies for n in _pruned_steps(s)]
    total = sum(len(s.trials) for s in studies)
    print(f"best: lr {best.params['lr']:.3g}, validation loss {best.value:.3g}, validation accuracy "
          f"{best.user_attrs['val_acc']:.2f}")
    if pruned:
        print(f"{len(pruned)} of {total} trials pruned after {min(pruned)}-{max(pruned)} steps "
              f"(complete trials ran {COARSE.steps} or {FINE_STEPS})")
    print(f"searched in {time.perf_counter() - started:.1f}s")
    if logdir is not None:
        tune.write_hparams(studies, logdir, value_name="val_loss", attrs=("val_acc",))
        plots = [logdir / f"search-{s.study_name}.png" for s in studies]
        for s, path in zip(studies, plots):
            tune.plot_search(s, path=path, value_name="validation loss")
        print(f"records in {logdir}/ - tensorboard --logdir {logdir} (HParams tab: both stages); "
              f"plots: {', '.join(p.name for p in plots)}")
    return 0
