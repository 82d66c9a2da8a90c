"""Bad configuration is refused when the Monitor is made, before training starts, naming the argument.

Already covered elsewhere (not repeated here):
tests/test_monitor.py::test_bad_configuration_fails_at_construction (every=0, every=2.5, num_classes=1,
unknown rule ids in ``rules``/``disable`` with a suggestion, unknown threshold names, a fraction above 1,
a negative factor, a bare threshold name), tests/test_monitor.py::test_logdir_that_is_a_file_or_cannot_be_created,
tests/test_torch_lifecycle.py::test_watch_refuses_what_it_cannot_watch (not a module, not an optimizer,
watched twice) and tests/test_check_robust.py::test_usage_errors_are_exit_status_2 (the same mistakes on
the ``nnhealth check`` command line).
"""
from __future__ import annotations

import dataclasses
import os
import sys
import threading
from pathlib import Path

import pytest

from nnhealth import Monitor, lifecycle
from nnhealth.rules import RULES


class NotASink:
    def write(self, record):
        pass


@pytest.mark.parametrize("kwargs, message", [
    (dict(every=-1), "every must be a whole number of steps >= 1, got -1"),
    (dict(every="10"), "every must be a whole number of steps >= 1, got '10'"),
    (dict(every=True), "every must be a whole number of steps >= 1, got True"),
    (dict(num_classes=10.0), "num_classes must be a whole number >= 2 (or None), got 10.0"),
    (dict(window=0), "window must be a whole number of sampled steps >= 1, got 0"),
    (dict(history_capacity=0), "history_capacity must be a whole number of steps >= window (5), got 0"),
    (dict(history_capacity=8, window=10), "history_capacity must be a whole number of steps >= window (10), got 8"),
    (dict(rules="dead-relu"), "rules must be a list of rule ids, e.g. ['dead-relu'], got 'dead-relu'"),
    (dict(disable="underfitting"), "disable must be a list of rule ids, e.g. ['underfitting']"),
    (dict(thresholds=[("dead-relu.max_dead_fraction", 0.7)]), "thresholds must be a dict such as"),
    (dict(thresholds={"dead-relu.max_dead_fraction": float("nan")}),
     "threshold dead-relu.max_dead_fraction must be a finite number >= 0, got nan"),
    (dict(thresholds={"loss-exploding.factor": float("inf")}), "loss-exploding.factor must be a finite number"),
    (dict(thresholds={"dead-relu.max_dead_fraction": "0.7"}), "dead-relu.max_dead_fraction must be a number, got '0.7'"),
    (dict(thresholds={"dead-relu": {"max_dead_fractoin": 0.7}}), "did you mean 'max_dead_fraction'?"),
    (dict(thresholds={"dead-rellu": {"max_dead_fraction": 0.7}}), "unknown rule id 'dead-rellu' (did you mean 'dead-relu'?)"),
    (dict(logdir=""), "logdir must be a folder path (or None: no files), got ''"),
    (dict(logdir=3), "logdir must be a folder path (or None: no files), got 3"),
    (dict(sinks="tensorboard"), "sinks must be a list of sinks"),
    (dict(sinks=[NotASink()]), "sinks[0] (<"),
])
def test_bad_arguments_are_refused_at_construction_naming_the_argument(kwargs, message):
    with pytest.raises(ValueError) as e:
        Monitor(console=False, **kwargs)
    assert message in str(e.value)


def test_integer_thresholds_must_be_whole_numbers():
    ints = [(rid, f.name) for rid, rule in RULES.items() for f in dataclasses.fields(rule.thresholds)
            if f.type in ("int", int)]
    assert ints, "no integer threshold to test"
    rid, name = ints[0]
    with pytest.raises(ValueError, match=f"threshold {rid}.{name} must be a whole number, got 2.5"):
        Monitor(console=False, thresholds={f"{rid}.{name}": 2.5})


def unwritable_folders(tmp_path) -> list:
    out = []
    if sys.platform.startswith("linux") and Path("/sys").is_dir():
        out.append(Path("/sys"))  # sysfs refuses new files, even to root
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        out.append(locked)
    return out


def test_an_unwritable_logdir_is_refused_at_construction(tmp_path):
    folders = unwritable_folders(tmp_path)
    if not folders:
        pytest.skip("no folder this user cannot write to")
    for folder in folders:
        with pytest.raises(ValueError, match=f"logdir '{folder}' is not writable: "):
            Monitor(logdir=folder, console=False)


def test_a_refused_configuration_leaves_nothing_behind(tmp_path):
    threads = threading.active_count()
    live = len(lifecycle._live)
    with pytest.raises(ValueError):
        Monitor(logdir=tmp_path / "run", thresholds={"dead-relu.max_dead_fraction": 2.0})
    with pytest.raises(ValueError):
        Monitor(logdir=tmp_path / "run", sinks=["console"])
    assert not (tmp_path / "run").exists()  # no folder, no event file, no findings.jsonl
    assert threading.active_count() == threads and len(lifecycle._live) == live  # no writer thread, nothing to flush
