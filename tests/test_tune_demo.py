"""The coarse-to-fine learning-rate search of ``nnhealth demo --search``, end to end."""
from __future__ import annotations

import re
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

pytest.importorskip("optuna")

from nnhealth.demo.search import COARSE, FINE_STEPS, run_search  # noqa: E402
from nnhealth.tune.hparams import SUFFIX  # noqa: E402


def table_rows(text: str) -> list[list[str]]:
    """The rows of the trial tables: trial number, lr, steps, val loss, val acc, outcome..."""
    return [line.split() for line in text.splitlines() if re.match(r"^\s+\d+\*?\s", line)]


def test_the_search_prunes_diverging_trials_and_refines_the_range(tmp_path, capsys):
    stale = tmp_path / "coarse" / "trial-0099"
    stale.mkdir(parents=True)
    (stale / f"events.out.tfevents.1.host{SUFFIX}").write_bytes(b"")     # an earlier search's run
    (tmp_path / "notes.txt").write_text("mine")                          # not ours: kept
    started = time.perf_counter()
    assert run_search(SimpleNamespace(seed=0, every=5, logdir=str(tmp_path))) == 0
    seconds = time.perf_counter() - started
    out = capsys.readouterr().out

    assert "stage 1, coarse: lr log-uniform in [0.0001, 100], 14 trials x 60 steps" in out
    assert "stage 2, fine: lr log-uniform in [" in out
    rows = table_rows(out)
    assert len(rows) == COARSE.trials + 8
    pruned = [r for r in rows if r[5] == "pruned"]
    complete = [r for r in rows if r[5] == "complete"]
    assert pruned and complete
    assert all(int(r[2]) < COARSE.steps for r in pruned)                     # pruned early...
    assert {int(r[2]) for r in complete} == {COARSE.steps, FINE_STEPS}       # ...while the others ran in full
    assert all(float(r[1]) > 1.0 for r in pruned)                            # only the too-high learning rates
    assert any("loss-exploding" in " ".join(r) for r in pruned)
    fine = re.search(r"stage 2, fine: lr log-uniform in \[([\d.e+-]+), ([\d.e+-]+)\]", out)
    low, high = float(fine.group(1)), float(fine.group(2))
    assert 1e-4 < low < high < 1e2 and high / low < 100                      # a finer range, inside the coarse one
    assert out.count("review: best: trial") == 2 and "inside the range -> next [" in out
    assert re.search(r"best: lr [\d.]+, validation loss [\d.]+, validation accuracy 0\.9\d", out)

    assert all((tmp_path / f"search-{stage}.png").stat().st_size > 10_000 for stage in ("coarse", "fine"))
    assert len(list(tmp_path.glob(f"*{SUFFIX}"))) == 1                       # the HParams experiment
    runs = sorted(p.parent.relative_to(tmp_path).as_posix() for p in tmp_path.glob(f"*/*/*{SUFFIX}"))
    assert len(runs) == COARSE.trials + 8 and "coarse/trial-0099" not in runs
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert seconds < 90, f"the demo search took {seconds:.0f}s; it should take well under a minute"


def test_without_optuna_the_search_says_how_to_get_it():
    code = ("import sys, types; sys.modules['optuna'] = None\n"
            "from nnhealth.demo.search import run_search\n"
            "sys.exit(run_search(types.SimpleNamespace(seed=0, logdir=None)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "pip install 'nnhealth[tune]'" in out.stderr


def test_the_same_search_on_the_pytorch_network(capsys):
    pytest.importorskip("torch")
    assert run_search(SimpleNamespace(seed=0, framework="torch", logdir=None)) == 0
    out = capsys.readouterr().out
    assert "on the torch demo network" in out
    rows = table_rows(out)
    pruned = [r for r in rows if r[5] == "pruned"]
    assert pruned and all(int(r[2]) < COARSE.steps and float(r[1]) > 1.0 for r in pruned)
    assert re.search(r"best: lr [\d.]+, validation loss [\d.]+, validation accuracy 0\.9\d", out)


def test_an_unknown_framework_is_refused(capsys):
    assert run_search(SimpleNamespace(framework="jax", logdir=None)) == 2
    assert "unknown framework 'jax'" in capsys.readouterr().err
