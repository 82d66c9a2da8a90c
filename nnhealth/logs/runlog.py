"""Everything one run's files hold, read incrementally and checked before use.

A :class:`RunLog` reads the event files of one run (all its folders, files
appearing while it is followed) and keeps what the replay and ``load`` need:

- scalar curves, per tag: ``{step: (wall_time, value)}``. When a tag's step
  goes back (a run resumed from a checkpoint), the later points of the
  earlier attempt are dropped, as TensorBoard does;
- nnhealth's recorded states (``nnhealth_state/<role>/<where>`` tensors) per
  step, as :class:`~nnhealth.stats.Summary` objects with their layer facts;
- nnhealth's run description (``nnhealth/run``) and ``findings.jsonl``.

Every size is checked before anything is allocated from it, and nothing is
evaluated: JSON and protobufs only.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tensorboard.util import tensor_util

from ..finding import Finding
from ..rules.base import ROLES
from ..sinks.jsonl import FILENAME as FINDINGS_FILE
from ..sinks.jsonl import read_findings
from ..stats import Layout, Summary, histogram
from ..stats.summary import HEADER
from .discovery import RunSpec, event_files
from .events import EventFile
from .plausible import implausible

STATE_PREFIX = "nnhealth_state/"
#: 1: full packed vectors; 2: histograms trimmed to their non-empty buckets (:func:`full_vector`)
STATE_VERSIONS = (1, 2)
RUN_TAG = "nnhealth/run"
#: a packed summary is a header, a histogram and per-unit counts: far below this
MAX_STATE_NUMBERS = 1 << 22
#: JSON descriptions (run description, state metadata) are a few hundred bytes
MAX_TEXT_BYTES = 1 << 16
STATE_ROLES = frozenset(ROLES) | {"update_base"}


def _elements(tensor) -> int:
    """Number of elements a TensorProto declares (-1 when its shape is invalid)."""
    n = 1
    for d in tensor.tensor_shape.dim:
        if d.size < 0:
            return -1
        n *= d.size
    return n


class RunLog:
    """The data of one run, updated by :meth:`poll`."""

    def __init__(self, spec: RunSpec):
        self.spec = spec
        self.files: dict[Path, tuple[str, EventFile]] = {}
        self.scalars: dict[str, dict[int, tuple[float, float]]] = {}
        self.states: dict[int, dict[tuple[str, str], tuple[Summary, dict]]] = {}
        self.roles: set[str] = set()
        self.state_steps = 0
        self.other_tags: set[str] = set()
        self.description: dict | None = None
        self.recorded: list[Finding] = []
        self.notes: list[str] = []
        self.events = 0
        self.finished = False
        self.max_step = -1
        #: smallest step that got new data since :meth:`take_changes`
        self.changed_from: int | None = None
        self._problems: list[str] = []
        self._said: set[str] = set()
        self._plugins: dict[str, str] = {}
        self._last_step: dict[str, int] = {}
        self._state_info: dict[str, tuple] = {}
        self._findings_size = -1
        self._findings_problems: list[str] = []

    # -- public --------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def is_nnhealth(self) -> bool:
        return self.description is not None or bool(self.roles) or self._findings_size >= 0

    def problems(self) -> list[str]:
        """Every problem met so far, file by file (a truncated last record only once finished)."""
        out = list(self._problems)
        for _, ef in self.files.values():
            out.extend(ef.problems)
            if self.finished:
                cut = ef.records.truncation()
                if cut:
                    out.append(cut)
        out.extend(self._findings_problems)
        return out

    def take_changes(self) -> int | None:
        changed, self.changed_from = self.changed_from, None
        return changed

    def poll(self) -> bool:
        """Read whatever was written since the last poll; True when something new arrived."""
        before = (self.events, len(self.recorded))
        for prefix, folder in self.spec.parts:
            for path in event_files(folder):
                if path not in self.files:
                    self.files[path] = (prefix, EventFile(path))
        for path, (prefix, ef) in self.files.items():
            try:
                for event in ef.read():
                    self._add(prefix, event)
            except OSError as e:
                self.add_problem(f"{path}: cannot be read ({e.strerror or e})")
        self._read_findings()
        return (self.events, len(self.recorded)) != before

    def finish(self) -> None:
        """No more data will come: an incomplete last record is now a truncated one."""
        self.finished = True
        damaged = any(ef.problems for _, ef in self.files.values())
        if self.events == 0 and not self.recorded and self.files and not damaged:
            self.add_problem(f"{self.spec.path}: no summaries in its event files "
                      f"({', '.join(p.name for p in self.files)})")

    # -- reading -------------------------------------------------------------
    def add_problem(self, message: str) -> None:
        if message not in self._said:
            self._said.add(message)
            self._problems.append(message)

    def _changed(self, step: int) -> None:
        self.changed_from = step if self.changed_from is None else min(self.changed_from, step)
        self.max_step = max(self.max_step, step)

    def _add(self, prefix: str, event) -> None:
        if not event.HasField("summary"):
            return
        step, wall = int(event.step), float(event.wall_time)
        for value in event.summary.value:
            tag = prefix + value.tag
            self.events += 1
            if value.WhichOneof("value") == "simple_value":
                self._plugins.setdefault(tag, "scalars")
                self._point(tag, step, wall, float(value.simple_value))
                continue
            plugin = value.metadata.plugin_data.plugin_name if value.HasField("metadata") else ""
            if plugin:
                self._plugins.setdefault(tag, plugin)
            plugin = self._plugins.get(tag, "")
            try:
                if plugin == "scalars":
                    self._scalar(tag, step, wall, value)
                elif plugin == "nnhealth" and value.tag.startswith(STATE_PREFIX):
                    self._state(tag, step, value)
                elif plugin == "text" and value.tag == RUN_TAG:
                    self._description(value)
                else:
                    self.other_tags.add(tag)
            except (TypeError, ValueError, KeyError, OverflowError) as e:  # a malformed tensor: skip it, read on
                self.add_problem(f"{self.spec.path}: tag {tag!r} at step {step} cannot be read ({e}); skipped")

    def _scalar(self, tag: str, step: int, wall: float, value) -> None:
        n = _elements(value.tensor)
        if n != 1:
            self.add_problem(f"{self.spec.path}: tag {tag!r} holds {n} numbers per step, not one; skipped")
            return
        self._point(tag, step, wall, float(np.asarray(tensor_util.make_ndarray(value.tensor),
                                                     dtype=np.float64).reshape(-1)[0]))

    def _point(self, tag: str, step: int, wall: float, number: float) -> None:
        series = self.scalars.setdefault(tag, {})
        last = self._last_step.get(tag)
        if last is not None and step < last:
            later = [s for s in series if s >= step]
            for s in later:
                del series[s]
            for s in [s for s in self.states if s >= step]:  # nnhealth writes a step's scalars first
                del self.states[s]
            self.notes.append(f"{tag} went back from step {last} to {step} (a resumed run): the {len(later)} "
                              "later points of the earlier attempt are dropped, as TensorBoard does")
        self._last_step[tag] = step
        series[step] = (wall, number)
        self._changed(step)

    def _state(self, tag: str, step: int, value) -> None:
        content = value.metadata.plugin_data.content if value.HasField("metadata") else b""
        if content:
            info = self._state_meta(tag, content)
        else:  # writers put the description on a tag's first value only
            cached = self._state_info.get(tag)
            info = cached[:-1] if cached else None
        if info is None:
            self.add_problem(f"{self.spec.path}: tag {tag!r} holds an nnhealth state without its description; skipped")
            return
        role, where, layout, meta, version = info
        n = _elements(value.tensor)
        trimmed = version >= 2 and layout.hist
        if not (n == layout.size or (trimmed and len(HEADER) + 2 <= n <= layout.size + 2)):
            self.add_problem(f"{self.spec.path}: tag {tag!r} at step {step} holds {n} numbers, its layout "
                      f"expects {layout.size}; skipped")
            return
        vector = np.asarray(tensor_util.make_ndarray(value.tensor), dtype=np.float64).reshape(-1)
        if trimmed:
            vector = full_vector(layout, vector)
            if vector is None:
                self.add_problem(f"{self.spec.path}: tag {tag!r} at step {step}: its histogram's bucket range "
                                 "does not fit its layout; skipped")
                return
        problem = implausible(layout, vector)
        if problem is not None:  # the rules trust these numbers: refuse what nnhealth never writes
            self.add_problem(f"{self.spec.path}: tag {tag!r} holds a state nnhealth cannot have written "
                             f"({problem}); skipped")
            return
        steps = self.states.setdefault(step, {})
        if not steps:
            self.state_steps += 1
        steps[(role, where)] = (Summary(layout, vector), meta)
        self.roles.add(role)
        self._changed(step)

    def _state_meta(self, tag: str, content: bytes):
        cached = self._state_info.get(tag)
        if cached is not None and cached[-1] == content:
            return cached[:-1]
        d = self._json(content, f"tag {tag!r}: state description")
        if d is None:
            return None
        role, where, layout, meta = d.get("role"), d.get("where"), d.get("layout"), d.get("meta") or {}
        version = d.get("version")
        if (version not in STATE_VERSIONS or isinstance(version, bool) or role not in STATE_ROLES
                or not isinstance(where, str) or not where or not isinstance(layout, dict) or not isinstance(meta, dict)):
            self.add_problem(f"{self.spec.path}: tag {tag!r}: state description is not version 1 or 2 of the "
                      "nnhealth format (role, where, layout, meta); skipped")
            return None
        layout = Layout.from_json(layout)
        if layout.units < 0 or layout.size > MAX_STATE_NUMBERS:
            self.add_problem(f"{self.spec.path}: tag {tag!r}: state layout of {layout.size} numbers is not plausible; "
                      "skipped")
            return None
        info = (role, where, layout, meta, version)
        self._state_info[tag] = info + (content,)
        return info

    def _description(self, value) -> None:
        if _elements(value.tensor) != 1:
            return
        raw = tensor_util.make_ndarray(value.tensor).reshape(-1)[0]
        d = self._json(raw, f"tag {RUN_TAG!r}")
        if d is None:
            return
        every, classes = d.get("every", 1), d.get("num_classes")
        if (not isinstance(every, int) or isinstance(every, bool) or every < 1
                or not (classes is None or (isinstance(classes, int) and not isinstance(classes, bool)
                                            and classes >= 2))):
            self.add_problem(f"{self.spec.path}: {RUN_TAG} has impossible values (every={every!r}, "
                      f"num_classes={classes!r}); ignored")
            return
        self.description = {"every": every, "num_classes": classes}

    def _json(self, raw, what: str):
        if not isinstance(raw, (bytes, str)) or len(raw) > MAX_TEXT_BYTES:
            self.add_problem(f"{self.spec.path}: {what} is not a JSON text of at most {MAX_TEXT_BYTES} bytes; skipped")
            return None
        try:
            d = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as e:  # RecursionError: nested too deep
            self.add_problem(f"{self.spec.path}: {what} is not valid JSON ({e}); skipped")
            return None
        if not isinstance(d, dict):
            self.add_problem(f"{self.spec.path}: {what} is not a JSON object; skipped")
            return None
        return d

    def _read_findings(self) -> None:
        path = self.spec.path / FINDINGS_FILE
        try:
            size = path.stat().st_size
        except OSError:
            return
        if size == self._findings_size:
            return
        self._findings_size = size
        try:
            self.recorded, self._findings_problems = read_findings(path)
        except OSError as e:
            self._findings_problems = [f"{path}: cannot be read ({e.strerror or e})"]


def full_vector(layout: Layout, stored: np.ndarray) -> np.ndarray | None:
    """The full packed vector of a version-2 state: the header, the first kept bucket's index and the
    number kept, those buckets, the per-unit parts; None when the range does not fit the layout."""
    head = len(HEADER)
    lo, n = stored[head], stored[head + 1]
    rest = layout.size - head - histogram.NUM_BUCKETS
    if not (np.isfinite(lo) and np.isfinite(n) and lo == int(lo) and n == int(n) and 0 <= lo and 0 <= n
            and lo + n <= histogram.NUM_BUCKETS
            and stored.size == head + 2 + int(n) + rest):
        return None
    lo, n = int(lo), int(n)
    full = np.zeros(layout.size)
    full[:head] = stored[:head]
    full[head + lo:head + lo + n] = stored[head + 2:head + 2 + n]
    full[head + histogram.NUM_BUCKETS:] = stored[head + 2 + n:]
    return full
