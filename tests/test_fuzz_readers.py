"""Hypothesis fuzzing of what reads log folders from anywhere: records, events, states, findings.jsonl.

``nnhealth check`` and ``nnhealth report`` read folders other people and
other programs wrote, so every byte is untrusted. The properties: no input
makes a reader raise (a damaged part is a named problem and the rest is
read), no record before the damage is lost, and no state the reader accepts
makes a rule fail during the replay. Hand-made damage (truncation, bit
flips, absurd lengths) is tested in tests/test_logs_records.py and
tests/test_check_robust.py; here hypothesis makes the damage.

The committed default runs a few dozen examples per test; for a long run:
``NNHEALTH_FUZZ_EXAMPLES=3000 python -m pytest tests/test_fuzz_readers.py``.
The regressions it found are kept as explicit tests in tests/test_reliability_untrusted.py
(nested JSON, finding records of the wrong shape, tensors numpy cannot hold).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

from nnhealth.cli import main
from nnhealth.dashboards.event_file import EventFile as EventWriter
from nnhealth.dashboards.event_file import frame
from nnhealth.dashboards.figures import Panel
from nnhealth.dashboards.report import render_html
from nnhealth.dashboards.run_data import read_run
from nnhealth.finding import SEVERITIES
from nnhealth.logs.records import RecordFile
from nnhealth.sinks.jsonl import read_findings

#: TensorBoard's compat layer warns when it casts a fuzzed histogram's huge values: expected here
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")

EXAMPLES = int(os.environ.get("NNHEALTH_FUZZ_EXAMPLES", "30"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

EVENT_FILE = "events.out.tfevents.1700000000.fuzz.1.0"


@contextlib.contextmanager
def folder():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


class Errors(logging.Handler):
    """The ``nnhealth`` logger's error records: a rule switched off during a replay is one."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list = []

    def emit(self, record):
        self.records.append(record)


def check_and_report(run: Path) -> dict:
    """``nnhealth check --json`` and the report's reader and page on ``run``; returns check's report."""
    errors = Errors()
    logger = logging.getLogger("nnhealth")
    logger.addHandler(errors)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(["check", "--json", str(run)])
    finally:
        logger.removeHandler(errors)
    assert status in (0, 1, 2), err.getvalue()
    assert [r.getMessage() for r in errors.records] == []
    reports = json.loads(out.getvalue()) if status != 2 else [{}]
    if not list(run.glob("events.out.tfevents.*")):  # the report needs event files: a usage error
        return reports[0]
    data = read_run(run)
    page = render_html(data, [Panel("loss", "Loss", "", notes=["no figure in the fuzz run"])])
    assert page.startswith("<!DOCTYPE html>") and all(isinstance(p, str) for p in data.problems)
    return reports[0]


# -- records ------------------------------------------------------------------------------

@FUZZ
@given(data=st.binary(max_size=3000))
def test_any_bytes_as_an_event_file(data):
    with folder() as run:
        (run / EVENT_FILE).write_bytes(data)
        reader = RecordFile(run / EVENT_FILE)
        payloads = list(reader.read())
        assert sum(len(p) for p in payloads) <= len(data)
        check_and_report(run)


DAMAGE = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, 10**6)),
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(0, 7)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=40)),
)


@FUZZ
@given(payloads=st.lists(st.binary(max_size=200), min_size=1, max_size=12), damage=DAMAGE)
def test_every_record_before_the_damage_is_read(payloads, damage):
    framed = [frame(p) for p in payloads]
    data = b"".join(framed)
    at = damage[1] % (len(data) + 1)
    if damage[0] == "truncate":
        data = data[:at]
    elif damage[0] == "flip" and at < len(data):
        data = data[:at] + bytes([data[at] ^ (1 << damage[2])]) + data[at + 1:]
    elif damage[0] == "insert":
        data = data[:at] + damage[2] + data[at:]
    intact = []  # the records that end before the damage
    end = 0
    for p, f in zip(payloads, framed):
        end += len(f)
        if end > at:
            break
        intact.append(p)
    with folder() as run:
        (run / EVENT_FILE).write_bytes(data)
        got = list(RecordFile(run / EVENT_FILE).read())
    assert got[:len(intact)] == intact


# -- events: any summary value, as nnhealth's own writer frames it --------------------------

PLUGINS = st.sampled_from(["scalars", "histograms", "text", "nnhealth", "", "custom_scalars", "images", "pr_curves"])
TAGS = st.one_of(st.sampled_from([
    "loss/train", "loss", "val_loss", "train_acc", "val_acc", "epoch", "nnhealth/run",
    "nnhealth_state/activation/fc1", "nnhealth_state/gradient/fc1.weight", "nnhealth_state/update/fc1.weight",
    "nnhealth_state/update_base/fc1.weight", "nnhealth_state/input/input", "activation_hist/fc1",
    "activation_dead_fraction/fc1", "custom_scalars__config__"]), st.text(max_size=12))
JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=8))
JSON = st.recursive(JSON_LEAF, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                      st.dictionaries(st.text(max_size=6), kids, max_size=3)),
                    max_leaves=8)
LAYOUT = st.fixed_dictionaries({}, optional={"hist": JSON_LEAF, "units": st.one_of(st.integers(-3, 10**9), JSON_LEAF),
                                             "moments": JSON_LEAF})
STATE_INFO = st.fixed_dictionaries({}, optional={
    "version": st.sampled_from([1, 1, 2, "1", None]),
    "role": st.sampled_from(["activation", "gradient", "parameter", "update", "update_base", "input", "loss", ""]),
    "where": st.one_of(st.sampled_from(["fc1", "fc1.weight", "input"]), JSON_LEAF),
    "layout": st.one_of(LAYOUT, JSON), "meta": st.one_of(st.dictionaries(st.sampled_from(
        ["kind", "ndim", "fan_in", "init_std", "unit_axis"]), JSON_LEAF, max_size=3), JSON)})
RUN_INFO = st.fixed_dictionaries({}, optional={"version": JSON_LEAF, "every": st.one_of(st.integers(-2, 50), JSON_LEAF),
                                               "num_classes": st.one_of(st.integers(-2, 50), JSON_LEAF)})
CONTENT = st.one_of(st.binary(max_size=64), STATE_INFO.map(lambda d: json.dumps(d).encode()),
                    JSON.map(lambda d: json.dumps(d).encode()))
DTYPES = st.one_of(st.sampled_from([types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_INT32, types_pb2.DT_INT64,
                                    types_pb2.DT_STRING, types_pb2.DT_BOOL, types_pb2.DT_HALF, types_pb2.DT_BFLOAT16,
                                    types_pb2.DT_COMPLEX64, types_pb2.DT_UINT8]), st.integers(0, 30))
DIMS = st.lists(st.one_of(st.integers(-2, 6), st.just(2**40), st.just(1101)), max_size=3)


@st.composite
def tensors(draw):
    t = tensor_pb2.TensorProto(dtype=draw(DTYPES))
    t.tensor_shape.CopyFrom(tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in draw(DIMS)]))
    field = draw(st.sampled_from(["float_val", "double_val", "int_val", "int64_val", "string_val", "bool_val",
                                  "tensor_content", "none"]))
    if field == "tensor_content":
        t.tensor_content = draw(st.binary(max_size=64))
    elif field == "string_val":
        t.string_val.extend(draw(st.lists(st.one_of(CONTENT, RUN_INFO.map(lambda d: json.dumps(d).encode())),
                                          max_size=3)))
    elif field == "float_val":
        t.float_val.extend(draw(st.lists(st.floats(width=32), max_size=6)))
    elif field == "double_val":
        t.double_val.extend(draw(st.lists(st.floats(), max_size=6)))
    elif field in ("int_val", "bool_val"):
        getattr(t, field).extend(draw(st.lists(st.integers(0, 1) if field == "bool_val"
                                               else st.integers(-2**31, 2**31 - 1), max_size=6)))
    elif field == "int64_val":
        t.int64_val.extend(draw(st.lists(st.integers(-2**63, 2**63 - 1), max_size=6)))
    return t


@st.composite
def values(draw):
    v = summary_pb2.Summary.Value(tag=draw(TAGS))
    kind = draw(st.sampled_from(["simple_value", "tensor", "tensor", "histo"]))
    if kind == "simple_value":
        v.simple_value = draw(st.floats(width=32))
    elif kind == "tensor":
        v.tensor.CopyFrom(draw(tensors()))
    else:
        limits = draw(st.lists(st.floats(), max_size=4))
        v.histo.CopyFrom(summary_pb2.HistogramProto(min=draw(st.floats()), max=draw(st.floats()),
                                                    num=draw(st.floats()), bucket_limit=limits,
                                                    bucket=draw(st.lists(st.floats(), max_size=4))))
    if draw(st.booleans()):
        v.metadata.plugin_data.plugin_name = draw(PLUGINS)
        v.metadata.plugin_data.content = draw(CONTENT)
    return v


EVENTS = st.lists(st.builds(lambda step, wall, vs: event_pb2.Event(step=step, wall_time=wall,
                                                                   summary=summary_pb2.Summary(value=vs)),
                            st.integers(-3, 2**40), st.floats(), st.lists(values(), max_size=4)),
                  max_size=12)


def write_events(run: Path, events) -> None:
    writer = EventWriter(run)
    for e in events:
        writer.add_event(e)
    writer.close()


@FUZZ
@given(events=EVENTS)
def test_any_events_are_read_or_named_never_fatal(events):
    with folder() as run:
        write_events(run, events)
        check_and_report(run)


class RunFiles(dict):
    """File name -> bytes, shown briefly when hypothesis prints a falsifying example."""

    def __repr__(self) -> str:
        return f"<the {len(self)} files of a real nnhealth run>"


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> RunFiles:
    """The files of a short run nnhealth wrote: a dead layer, its states, its findings."""
    from nnhealth import Monitor

    run = tmp_path_factory.mktemp("real")
    with Monitor(logdir=run, every=1, console=False) as mon:
        rng = np.random.default_rng(0)
        for step in range(20):
            mon.observe_activation("fc1", np.maximum(rng.standard_normal((16, 8)) - 4, 0), kind="relu")
            mon.observe_gradient("fc1.weight", rng.standard_normal((8, 8)))
            mon.step(step, loss=1.0)
    return RunFiles({p.name: p.read_bytes() for p in run.iterdir()})


@FUZZ
@given(events=EVENTS)
def test_any_events_next_to_a_real_nnhealth_run(real_run, events):
    """Another writer's garbage in a folder nnhealth wrote: read or named, and no rule switched off."""
    with folder() as run:
        for name, data in real_run.items():
            (run / name).write_bytes(data)
        write_events(run, events)
        check_and_report(run)


# -- findings.jsonl -----------------------------------------------------------------------

FINDING_FIELDS = st.fixed_dictionaries({}, optional={
    "symptom": st.one_of(st.sampled_from(["dead-relu", "loss-nan", "not-a-rule"]), JSON_LEAF),
    "severity": st.one_of(st.sampled_from(SEVERITIES), JSON_LEAF),
    "step": st.one_of(st.integers(-5, 2**70), JSON_LEAF),
    "where": JSON, "message": JSON, "evidence": JSON, "advice": JSON})
LINES = st.lists(st.one_of(st.text(max_size=40), JSON.map(json.dumps), FINDING_FIELDS.map(json.dumps)), max_size=8)


@FUZZ
@given(lines=LINES)
def test_any_findings_file_is_read_line_by_line(lines):
    with folder() as run:
        (run / "findings.jsonl").write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
        findings, problems = read_findings(run / "findings.jsonl")
        for f in findings:
            assert f.severity in SEVERITIES and isinstance(f.step, int)
            assert isinstance(f.where, (str, type(None))) and f.line() and f.evidence_text() is not None
            json.loads(f.to_json())
        assert all(p.startswith(str(run / "findings.jsonl")) for p in problems)
        check_and_report(run)
