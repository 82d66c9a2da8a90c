"""``nnhealth.load``: every scalar curve under a log folder as one tidy pandas frame, for notebooks."""
from __future__ import annotations

import warnings

import pandas as pd

COLUMNS = ("run", "step", "where", "stat", "value", "wall_time", "tag")
LAYER_ROLES = ("activation", "gradient", "parameter", "update", "input")


class LogReadWarning(UserWarning):
    """A file (or part of one) under the log folder could not be read; the rest was."""


def _names(tag: str, signal_of: dict, nnhealth_run: bool) -> tuple[str | None, str]:
    """(where, stat) of a tag, named as ``Monitor.history.to_dataframe()`` names them."""
    if tag in signal_of:
        return None, signal_of[tag]
    if nnhealth_run:
        first, sep, where = tag.partition("/")
        for role in LAYER_ROLES:
            if sep and first.startswith(role + "_"):
                return where, f"{role}/{first[len(role) + 1:]}"
        if first == "metrics" and sep:
            return None, where
    return None, tag


def load(logdir, *, tags: dict | None = None) -> pd.DataFrame:
    """Every scalar of every run under ``logdir`` (any tool's TensorBoard logs) as a tidy frame.

    Columns: ``run`` (the run's folder), ``step``, ``where`` (layer or
    parameter for nnhealth's per-layer curves, else None), ``stat`` (the
    signal name - ``loss``, ``val_loss``, ``train_acc``, ``val_acc``,
    ``epoch`` - for the tags ``nnhealth check`` reads as those, the tag
    itself otherwise), ``value``, ``wall_time`` and ``tag`` (as written,
    prefixed with ``train/`` or ``validation/`` for Keras' sub-folders).
    ``tags`` maps signals to tags like ``nnhealth check --tag``. Damaged files
    are read as far as possible, each problem issued as a
    :class:`LogReadWarning`.

    >>> import tempfile
    >>> from torch.utils.tensorboard import SummaryWriter
    >>> logdir = tempfile.mkdtemp()
    >>> with SummaryWriter(f"{logdir}/exp1") as w:
    ...     for step in range(3):
    ...         w.add_scalar("Loss/train", 2.3 - step, step)
    >>> df = load(logdir)
    >>> df[["step", "stat", "tag"]].values.tolist()
    [[0, 'loss', 'Loss/train'], [1, 'loss', 'Loss/train'], [2, 'loss', 'Loss/train']]
    >>> df["value"].round(3).tolist()
    [2.3, 1.3, 0.3]
    """
    from .discovery import find_runs
    from .runlog import RunLog
    from .tags import resolve

    frames = []
    for spec in find_runs(logdir):
        log = RunLog(spec)
        log.poll()
        log.finish()
        for problem in log.problems():
            warnings.warn(LogReadWarning(problem), stacklevel=2)
        mapping = resolve(log.scalars, tags)
        signal_of = {tag: signal for signal, tag in mapping.signals.items()}
        for tag, series in log.scalars.items():
            if not series:
                continue
            where, stat = _names(tag, signal_of, log.is_nnhealth)
            steps = sorted(series)
            frames.append(pd.DataFrame({
                "run": spec.name, "step": pd.Series(steps, dtype="int64"), "where": where, "stat": stat,
                "value": pd.Series([series[s][1] for s in steps], dtype="float64"),
                "wall_time": pd.Series([series[s][0] for s in steps], dtype="float64"), "tag": tag,
            }))
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype={"step": "int64", "value": "float64", "wall_time": "float64"}
                                          .get(c, "object")) for c in COLUMNS})
    df = pd.concat(frames, ignore_index=True)
    df["where"] = df["where"].astype(object).where(df["where"].notna(), None)
    return df.sort_values(["run", "step", "stat"], kind="stable", ignore_index=True)[list(COLUMNS)]
