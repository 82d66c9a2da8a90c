"""A log folder read back: scalars, histograms and findings, whoever wrote them.

TensorBoard's own compat layers (``data_compat``, ``dataclass_compat``, applied
by nnhealth's checked reader :mod:`nnhealth.logs.events`) turn every format
(TF1-style ``simple_value``/``HistogramProto`` as nnhealth and PyTorch write
them, TF2-style tensors as Keras writes them) into one shape: scalars of the
``scalars`` plugin, histograms as ``[k, 3]`` tensors (left edge, right edge,
count) of the ``histograms`` plugin. The files may come from anywhere: sizes
are checked before anything is allocated, and damaged records are skipped and
named. Findings come from ``findings.jsonl``. Nothing here needs nnhealth to
have written the run.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tensorboard.util import tensor_util

from ..finding import Finding
from ..logs.discovery import RunSpec, event_files, find_runs
from ..logs.events import EventFile
from ..logs.runlog import MAX_TEXT_BYTES, _elements
from ..sinks.jsonl import FILENAME as FINDINGS_FILE
from ..sinks.jsonl import read_findings
from . import tags

EVENT_FILE_MARK = "tfevents"

#: where other tools put the training and validation loss (first match wins, case-insensitive)
TRAIN_LOSS_TAGS = ("loss/train", "train/loss", "loss", "train_loss", "training_loss", "loss/training",
                   "epoch_loss", "train/epoch_loss")
VAL_LOSS_TAGS = ("loss/val", "val/loss", "val_loss", "validation_loss", "loss/validation", "valid/loss",
                 "loss/valid", "valid_loss", "eval/loss", "eval_loss", "test/loss", "test_loss",
                 "validation/epoch_loss", "val/epoch_loss", "eval/epoch_loss")


def _has_events(folder: Path) -> bool:
    try:
        return any(EVENT_FILE_MARK in entry.name and entry.is_file() for entry in os.scandir(folder))
    except OSError:
        return False


def find_run(path) -> RunSpec:
    """The one run under ``path``, found as ``nnhealth check`` finds runs (:func:`find_runs`): a folder
    with event files, or Keras' ``train/`` and ``validation/`` folders as the two halves of one run
    (their tags read as ``train/epoch_loss``, ``validation/epoch_loss``...)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such log folder: {str(path)!r}")
    if path.is_file():
        if EVENT_FILE_MARK not in path.name:
            raise ValueError(f"{str(path)!r} is not a TensorBoard event file")
        path = path.parent
    if not _has_events(path) and not any(EVENT_FILE_MARK in f for _, _, files in os.walk(path) for f in files):
        raise ValueError(f"no TensorBoard event files (events.out.tfevents.*) under {str(path)!r}")
    runs = find_runs(path)
    own = [r for r in runs if r.path == path]  # the folder itself is a run: nested ones are others
    if own:
        return own[0]
    if len(runs) > 1:
        listed = "\n  ".join(r.name for r in runs[:20]) + ("\n  ..." if len(runs) > 20 else "")
        raise ValueError(f"{str(path)!r} holds {len(runs)} runs; give one of them:\n  {listed}")
    return runs[0]


@dataclass
class RunData:
    """Everything the report shows, keyed by tag, in the order the tags first appear."""

    path: Path
    #: tag -> (steps, values), sorted by step; the newest value wins where a step repeats
    scalars: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    #: tag -> [(step, buckets [k, 3]: left, right, count)], sorted by step
    histograms: dict[str, list[tuple[int, np.ndarray]]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    #: the run description nnhealth writes (``nnhealth/run``), None for other tools' runs
    run_info: dict | None = None
    #: facts per layer or parameter name (activation kind, ...) from nnhealth's state metadata
    meta: dict[str, dict] = field(default_factory=dict)
    #: things that could not be read, in words
    problems: list[str] = field(default_factory=list)
    has_findings_file: bool = False

    # -- lookups -------------------------------------------------------------
    def group(self, name: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{layer: series} of the scalar tags ``name/<layer>``, in depth (first written) order."""
        prefix = name + "/"
        return {tag[len(prefix):]: series for tag, series in self.scalars.items() if tag.startswith(prefix)}

    def histogram_group(self, name: str) -> dict[str, list[tuple[int, np.ndarray]]]:
        prefix = name + "/"
        return {tag[len(prefix):]: h for tag, h in self.histograms.items() if tag.startswith(prefix)}

    def first_tag(self, candidates) -> str | None:
        """The first of ``candidates`` this run has as a scalar tag (case-insensitive)."""
        lower = {tag.lower(): tag for tag in self.scalars}
        for c in candidates:
            if c.lower() in lower:
                return lower[c.lower()]
        return None

    @property
    def train_loss_tag(self) -> str | None:
        return self.first_tag(TRAIN_LOSS_TAGS)

    @property
    def val_loss_tag(self) -> str | None:
        return self.first_tag(VAL_LOSS_TAGS)

    @property
    def steps(self) -> tuple[int, int] | None:
        """First and last step of any scalar or histogram."""
        found = [s for s, _ in self.scalars.values() if s.size] + [
            np.array([step for step, _ in h]) for h in self.histograms.values() if h]
        if not found:
            return None
        return int(min(a.min() for a in found)), int(max(a.max() for a in found))


#: the most numbers one histogram may declare (nnhealth's have about 1,100 buckets of 3 numbers,
#: TensorBoard's default 30): a damaged or hostile file cannot make the reader allocate more
MAX_HISTOGRAM_NUMBERS = 1 << 20


def _series(points) -> tuple[np.ndarray, np.ndarray]:
    """``[(step, wall_time, value)]`` as (steps, values), sorted by step; the newest value wins a step."""
    latest: dict[int, tuple[float, float]] = {}
    for step, wall, value in points:
        if step not in latest or wall >= latest[step][0]:
            latest[step] = (wall, value)
    steps = np.array(sorted(latest), dtype=np.int64)
    return steps, np.array([latest[s][1] for s in steps], dtype=np.float64)


def _histograms(points) -> list[tuple[int, np.ndarray]]:
    """``[(step, wall_time, buckets)]`` sorted by step; the newest histogram wins a step."""
    latest: dict[int, tuple[float, np.ndarray]] = {}
    for step, wall, buckets in points:
        if step not in latest or wall >= latest[step][0]:
            latest[step] = (wall, buckets)
    return [(s, latest[s][1]) for s in sorted(latest)]


def _numbers(tensor, max_numbers: int):
    """The values of a TensorProto as float64, or None when it declares more than ``max_numbers``
    (checked before anything is allocated) or does not hold numbers."""
    n = _elements(tensor)
    if n < 0 or n > max_numbers:
        return None
    try:
        return np.asarray(tensor_util.make_ndarray(tensor), dtype=np.float64)
    except (ValueError, TypeError, IndexError, KeyError, OverflowError):  # a dtype numpy lacks, -1 as uint8
        return None


def _values(spec: RunSpec, problems: list):
    """(step, wall_time, value) of every summary value in the run's event files, in writing order
    within each of its folders (a split folder's tags get its name as a prefix), read with nnhealth's
    checked reader (:mod:`nnhealth.logs.events`): every size is checked before it is allocated, and a
    damaged record is skipped and named (TensorBoard's loader stops there)."""
    for prefix, folder in spec.parts:
        yield from _folder_values(folder, prefix, problems)


def _folder_values(folder: Path, prefix: str, problems: list):
    for path in event_files(folder):
        reader = EventFile(path)
        try:
            for event in reader.read():
                step, wall = int(event.step), float(event.wall_time)
                for value in event.summary.value:
                    if prefix:
                        value.tag = prefix + value.tag
                    yield step, wall, value
        except OSError as e:
            problems.append(f"{path}: cannot be read ({e.strerror or e})")
        problems.extend(reader.problems)
        cut = reader.records.truncation()
        if cut:
            problems.append(cut)


def read_run(path) -> RunData:
    """Read one run (a folder with event files, or a folder holding exactly one such folder).

    As in TensorBoard, a tag belongs to the plugin named by the metadata of its first value.
    """
    spec = find_run(path)
    folder = spec.path
    run = RunData(path=folder)
    plugin_of: dict[str, tuple[str, bytes]] = {}   # tag -> (plugin, content) of its first metadata
    scalars: dict[str, list] = {}
    histograms: dict[str, list] = {}
    skipped: dict[tuple[str, str], int] = {}      # (tag, plugin) -> values that could not be read
    description = None
    for step, wall, value in _values(spec, run.problems):
        tag, kind = value.tag, value.WhichOneof("value")
        if kind == "simple_value":
            plugin_of.setdefault(tag, ("scalars", b""))
        elif value.HasField("metadata"):
            data = value.metadata.plugin_data
            plugin_of.setdefault(tag, (data.plugin_name, data.content))
        plugin = plugin_of.get(tag, ("", b""))[0]
        if plugin == "scalars":
            x = float(value.simple_value) if kind == "simple_value" else _numbers(value.tensor, 1)
            if x is not None and np.size(x) == 1:
                scalars.setdefault(tag, []).append((step, wall, float(np.reshape(x, -1)[0])))
            else:
                skipped[(tag, plugin)] = skipped.get((tag, plugin), 0) + 1
        elif plugin == "histograms" and kind == "tensor":
            x = _numbers(value.tensor, MAX_HISTOGRAM_NUMBERS)
            if x is not None and x.ndim == 2 and x.shape[1] == 3:
                histograms.setdefault(tag, []).append((step, wall, x))
            else:
                skipped[(tag, plugin)] = skipped.get((tag, plugin), 0) + 1
        elif plugin == "text" and tag == tags.RUN and description is None:
            if _elements(value.tensor) == 1:
                description = value.tensor
            else:
                skipped[(tag, plugin)] = skipped.get((tag, plugin), 0) + 1
    for (tag, plugin), n in skipped.items():
        run.problems.append(f"{tag}: {n} value(s) skipped: not a readable {plugin} value (wrong shape or type, or "
                            "more numbers than such a value holds)")
    for tag, points in scalars.items():
        run.scalars[tag] = _series(points)
    for tag, points in histograms.items():
        run.histograms[tag] = _histograms(points)
    if description is not None:
        try:
            raw = tensor_util.make_ndarray(description).reshape(-1)[0]
            info = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else str(raw))
            if not isinstance(info, dict):
                raise ValueError("not a JSON object")
            run.run_info = info
        except (ValueError, IndexError, KeyError, AttributeError, TypeError, RecursionError) as e:
            run.problems.append(f"{tags.RUN}: unreadable run description ({e})")
    for tag, (plugin, content) in plugin_of.items():
        if plugin != tags.STATE_PLUGIN:
            continue
        try:
            if len(content) > MAX_TEXT_BYTES:
                raise ValueError("too long")
            info = json.loads(content.decode("utf-8"))
            run.meta.setdefault(str(info["where"]), {}).update(info.get("meta") or {})
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            run.problems.append(f"{tag}: unreadable metadata")
    findings_path = folder / FINDINGS_FILE
    if findings_path.is_file():
        run.has_findings_file = True
        run.findings, problems = read_findings(findings_path)
        run.problems.extend(problems)
    return run
