"""A log folder read back: scalars, histograms and findings, whoever wrote them.

TensorBoard's own reader (``plugin_event_accumulator``) turns every format
(TF1-style ``simple_value``/``HistogramProto`` as nnhealth and PyTorch write
them, TF2-style tensors as Keras writes them) into one shape: scalars as
0-d tensors of the ``scalars`` plugin, histograms as ``[k, 3]`` tensors
(left edge, right edge, count) of the ``histograms`` plugin. Findings come
from ``findings.jsonl``. Nothing here needs nnhealth to have written the run.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing import plugin_event_accumulator as pea
from tensorboard.util import tensor_util

from ..finding import Finding
from ..sinks.jsonl import FILENAME as FINDINGS_FILE
from ..sinks.jsonl import read_findings
from . import tags

EVENT_FILE_MARK = "tfevents"

#: where other tools put the training and validation loss (first match wins, case-insensitive)
TRAIN_LOSS_TAGS = ("loss/train", "train/loss", "loss", "train_loss", "training_loss", "loss/training",
                   "epoch_loss", "train/epoch_loss")
VAL_LOSS_TAGS = ("loss/val", "val/loss", "val_loss", "validation_loss", "loss/validation", "valid/loss",
                 "loss/valid", "valid_loss", "eval/loss", "eval_loss", "test/loss", "test_loss")


def _has_events(folder: Path) -> bool:
    try:
        return any(EVENT_FILE_MARK in entry.name and entry.is_file() for entry in os.scandir(folder))
    except OSError:
        return False


def find_run(path) -> Path:
    """The folder of the one run under ``path`` (the folder itself when it holds event files)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such log folder: {str(path)!r}")
    if path.is_file():
        if EVENT_FILE_MARK not in path.name:
            raise ValueError(f"{str(path)!r} is not a TensorBoard event file")
        return path.parent
    if _has_events(path):
        return path
    runs = sorted(Path(root) for root, _, files in os.walk(path) if any(EVENT_FILE_MARK in f for f in files))
    if not runs:
        raise ValueError(f"no TensorBoard event files (events.out.tfevents.*) under {str(path)!r}")
    if len(runs) > 1:
        listed = "\n  ".join(str(r) for r in runs[:20]) + ("\n  ..." if len(runs) > 20 else "")
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


def _series(events) -> tuple[np.ndarray, np.ndarray]:
    latest: dict[int, tuple[float, float]] = {}
    for e in events:
        try:
            value = float(tensor_util.make_ndarray(e.tensor_proto).reshape(-1)[0])
        except (ValueError, IndexError, TypeError):
            continue
        if e.step not in latest or e.wall_time >= latest[e.step][0]:
            latest[e.step] = (e.wall_time, value)
    steps = np.array(sorted(latest), dtype=np.int64)
    return steps, np.array([latest[s][1] for s in steps], dtype=np.float64)


def _histograms(events) -> list[tuple[int, np.ndarray]]:
    latest: dict[int, tuple[float, np.ndarray]] = {}
    for e in events:
        try:
            buckets = np.asarray(tensor_util.make_ndarray(e.tensor_proto), dtype=np.float64)
        except (ValueError, TypeError):
            continue
        if buckets.ndim != 2 or buckets.shape[1] != 3:
            continue
        if e.step not in latest or e.wall_time >= latest[e.step][0]:
            latest[e.step] = (e.wall_time, buckets)
    return [(s, latest[s][1]) for s in sorted(latest)]


def _plugin_tags(acc, plugin: str) -> dict:
    try:
        return acc.PluginTagToContent(plugin)
    except KeyError:  # no tag of that plugin in this run
        return {}


def read_run(path) -> RunData:
    """Read one run (a folder with event files, or a folder holding exactly one such folder)."""
    folder = find_run(path)
    acc = pea.EventAccumulator(str(folder), size_guidance={pea.TENSORS: 0})
    acc.Reload()
    run = RunData(path=folder)
    for tag in _plugin_tags(acc, "scalars"):
        run.scalars[tag] = _series(acc.Tensors(tag))
    for tag in _plugin_tags(acc, "histograms"):
        run.histograms[tag] = _histograms(acc.Tensors(tag))
    text_tags = _plugin_tags(acc, "text")
    if tags.RUN in text_tags and acc.Tensors(tags.RUN):
        try:
            raw = tensor_util.make_ndarray(acc.Tensors(tags.RUN)[0].tensor_proto).reshape(-1)[0]
            run.run_info = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else str(raw))
        except (ValueError, IndexError, AttributeError) as e:
            run.problems.append(f"{tags.RUN}: unreadable run description ({e})")
    for tag, content in _plugin_tags(acc, tags.STATE_PLUGIN).items():
        try:
            info = json.loads(content.decode("utf-8"))
            run.meta.setdefault(str(info["where"]), {}).update(info.get("meta") or {})
        except (ValueError, KeyError, TypeError, AttributeError):
            run.problems.append(f"{tag}: unreadable metadata")
    findings_path = folder / FINDINGS_FILE
    if findings_path.is_file():
        run.has_findings_file = True
        run.findings, problems = read_findings(findings_path)
        run.problems.extend(problems)
    return run
