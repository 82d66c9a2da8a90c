"""A study as a TensorBoard HParams experiment, written with TensorBoard's own protobufs (no TensorFlow).

The layout is the one TensorBoard's HParams tab reads: the experiment
(each parameter's domain, the metrics) in the log directory itself, and one
run per trial, ``trial-0007/``, holding the trial's parameter values, its
metrics as scalars and how it ended. Each trial also gets an ``outcome``
column: ``complete``, or what pruned it (``loss-exploding``,
``optuna:MedianPruner``, ...), so sick trials can be filtered in the table.
"""
from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.plugins.hparams import summary_v2 as hp
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from .pruning import PRUNED_BY, STEPS

#: suffix of the event files written here, so that rewriting a sweep replaces them and nothing else
SUFFIX = ".nnhealth-hparams"
OUTCOME = "outcome"
STUDY = "study"
STATUS = {TrialState.COMPLETE: api_pb2.STATUS_SUCCESS, TrialState.PRUNED: api_pb2.STATUS_FAILURE,
          TrialState.FAIL: api_pb2.STATUS_FAILURE, TrialState.RUNNING: api_pb2.STATUS_RUNNING,
          TrialState.WAITING: api_pb2.STATUS_UNKNOWN}


def run_name(trial: optuna.trial.FrozenTrial) -> str:
    return f"trial-{trial.number:04d}"


def _safe(name: str) -> str:
    """A study name as one directory name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip(".") or "study"


def _outcome(trial) -> str:
    if trial.state == TrialState.PRUNED:
        return str(trial.user_attrs.get(PRUNED_BY, "pruned"))
    return trial.state.name.lower()


def _discrete(choices: list) -> hp.Discrete:
    """A categorical parameter's domain: TensorBoard takes one type of bool, float or str."""
    if all(isinstance(c, bool) for c in choices) or all(isinstance(c, str) for c in choices):
        return hp.Discrete(choices)
    if all(isinstance(c, (int, float)) for c in choices):
        return hp.Discrete([float(c) for c in choices])
    return hp.Discrete([str(c) for c in choices])


def _domains(trials) -> dict[str, object]:
    """{name: HParam domain} over every trial's distribution of each parameter."""
    ranges: dict[str, object] = {}
    for t in trials:
        for name, d in t.distributions.items():
            have = ranges.get(name)
            if isinstance(d, (FloatDistribution, IntDistribution)):
                lo, hi = (d.low, d.high) if not isinstance(have, tuple) else (min(have[1], d.low), max(have[2], d.high))
                ranges[name] = (type(d), lo, hi)
            elif isinstance(d, CategoricalDistribution):
                ranges[name] = list(dict.fromkeys([*(have if isinstance(have, list) else []), *d.choices]))
    domains = {}
    for name, r in ranges.items():
        if isinstance(r, tuple):
            kind, lo, hi = r
            domains[name] = hp.IntInterval(int(lo), int(hi)) if kind is IntDistribution else \
                hp.RealInterval(float(lo), float(hi))
        else:
            domains[name] = _discrete(r)
    return domains


def _value(trial, name, domain):
    value = trial.params[name]
    if isinstance(domain, hp.Discrete) and domain.dtype is str and not isinstance(value, str):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _scalar(tag: str, value: float) -> summary_pb2.Summary:
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=float(value))])


def _session_end(status: int, end_time: float) -> summary_pb2.Summary:
    """TensorBoard's session-end record (its own helper for it needs TensorFlow)."""
    info = plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=end_time)
    data = metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(session_end_info=info))
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(
        tag=metadata.SESSION_END_INFO_TAG, metadata=data, tensor=metadata.NULL_TENSOR)])


def _clear(root: Path) -> None:
    """Remove what an earlier call wrote under ``root`` (only files with our suffix, then emptied folders)."""
    if not root.is_dir():
        return
    emptied = set()
    for f in root.rglob(f"events.out.tfevents.*{SUFFIX}"):
        f.unlink()
        emptied.update(p for p in f.parents if p != root and root in p.parents)
    for d in sorted(emptied, key=lambda d: len(d.parts), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()


def _write(directory: Path, events: list[tuple[int, float, summary_pb2.Summary]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    writer = EventFileWriter(str(directory), filename_suffix=SUFFIX)
    try:
        for step, wall_time, summary in events:
            writer.add_event(event_pb2.Event(step=step, wall_time=wall_time, summary=summary))
    finally:
        writer.close()


def write_hparams(studies: optuna.Study | list[optuna.Study], logdir: str | os.PathLike, *,
                  value_name: str = "objective", attrs: tuple[str, ...] | list[str] = ()) -> Path:
    """Write a study (or the stages of one sweep) for TensorBoard's HParams tab under ``logdir``.

    Metrics per trial: ``trial/<value_name>`` (the objective, complete trials),
    ``trial/steps`` (steps run), ``trial/<attr>`` for each numeric user
    attribute named in ``attrs``; the intermediate values are also a scalar
    series, ``trial/intermediate``. Several studies (a coarse and a fine stage)
    share one experiment: their runs are ``<study name>/trial-NNNN`` and a
    ``study`` column tells them apart. Writing again replaces what was
    written before, so a sweep can be rewritten as it grows. Returns ``logdir``.
    """
    studies = [studies] if isinstance(studies, optuna.Study) else list(studies)
    if not studies:
        raise ValueError("write_hparams needs at least one study")
    if any(len(s.directions) > 1 for s in studies):
        raise ValueError("write_hparams writes single-objective studies")
    if len({s.direction for s in studies}) > 1:
        raise ValueError("the studies optimise in different directions; write them to separate logdirs")
    names = [s.study_name for s in studies]
    if len(set(names)) < len(names):
        raise ValueError(f"the studies need distinct names to be told apart, got {names}")
    several = len(studies) > 1
    root = Path(logdir)
    runs = [(s, t) for s in studies for t in s.get_trials(deepcopy=False)]
    domains = _domains([t for _, t in runs])
    hparams = [hp.HParam(name, domain) for name, domain in domains.items()]
    outcomes = sorted({_outcome(t) for _, t in runs} | {"complete"})
    hparams.append(hp.HParam(OUTCOME, hp.Discrete(outcomes),
                             description="how the trial ended: complete, or what pruned it"))
    if several:
        hparams.append(hp.HParam(STUDY, hp.Discrete(names), description="the stage of the sweep"))
    direction = studies[0].direction.name.lower()
    metrics = [hp.Metric(f"trial/{value_name}", display_name=value_name, description=f"the objective ({direction})"),
               hp.Metric("trial/steps", display_name="steps", description="training steps the trial ran")]
    metrics += [hp.Metric(f"trial/{a}", display_name=a) for a in attrs]
    created = min((t.datetime_start.timestamp() for _, t in runs if t.datetime_start), default=time.time())
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"logdir {str(root)!r} exists and is not a directory")
    _clear(root)
    _write(root, [(0, created, hp.hparams_config_pb(hparams, metrics, time_created_secs=created))])

    for study, t in runs:
        values = {name: _value(t, name, domains[name]) for name in t.params}
        values[OUTCOME] = _outcome(t)
        run = run_name(t)
        if several:
            values[STUDY] = study.study_name
            run = f"{_safe(study.study_name)}/{run}"
        _write(root / run, _trial_events(t, values, run, created, value_name, attrs))
    return root


def _trial_events(t, values: dict, run: str, created: float, value_name: str, attrs) -> list:
    start = t.datetime_start.timestamp() if t.datetime_start else created
    end = t.datetime_complete.timestamp() if t.datetime_complete else time.time()
    steps = t.user_attrs.get(STEPS)
    if steps is None:
        steps = max(t.intermediate_values) + 1 if t.intermediate_values else 0
    last = max(int(steps) - 1, 0)
    events = [(0, start, hp.hparams_pb(values, trial_id=run, start_time_secs=start))]
    events += [(int(s), start, _scalar("trial/intermediate", v))
               for s, v in sorted(t.intermediate_values.items()) if math.isfinite(v)]
    events.append((last, end, _scalar("trial/steps", steps)))
    if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value):
        events.append((last, end, _scalar(f"trial/{value_name}", t.value)))
    for a in attrs:
        v = t.user_attrs.get(a)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            events.append((last, end, _scalar(f"trial/{a}", v)))
    events.append((last, end, _session_end(STATUS.get(t.state, api_pb2.STATUS_UNKNOWN), end)))
    return events
