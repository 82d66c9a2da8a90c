"""The TensorBoard sink, read back with TensorBoard's own EventAccumulator.

A real (faulty) numpy training run is watched by a Monitor with a logdir;
every scalar, histogram, text and the custom-scalars layout is then found
in the event files with the values the Monitor computed.
"""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from dashboards_runs import record_run
from nnhealth.dashboards import protos, tags
from nnhealth.dashboards.layout import CHARTS, chart_tags
from tensorboard.backend.event_processing.event_accumulator import (
    HISTOGRAMS,
    SCALARS,
    TENSORS,
    EventAccumulator,
)
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.util import tensor_util

from nnhealth import Monitor
from nnhealth.logs.runlog import full_vector
from nnhealth.stats import Layout, Summary, summarize
from nnhealth.stats import histogram as H

DEAD = "<script>alert(1)</script>"


def read(logdir) -> EventAccumulator:
    acc = EventAccumulator(str(logdir), size_guidance={SCALARS: 0, HISTOGRAMS: 0, TENSORS: 0})
    acc.Reload()
    return acc


def text_of(acc, tag, index=-1) -> str:
    return tensor_util.make_ndarray(acc.Tensors(tag)[index].tensor_proto).reshape(-1)[0].decode("utf-8")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    rec = record_run(tmp_path_factory.mktemp("run"), steps=30, dead_layer=DEAD)
    return rec, read(rec.logdir)


def test_model_scalars_have_the_training_values(run):
    rec, acc = run
    loss = acc.Scalars("loss/train")
    assert [e.step for e in loss] == list(range(30))
    assert np.allclose([e.value for e in loss], rec.losses, rtol=1e-6)  # simple_value is float32
    val = acc.Scalars("loss/val")
    assert [e.step for e in val] == rec.val_steps
    for tag in ("accuracy/train", "accuracy/val", "gap/loss", "gap/accuracy", "gradient/total_norm"):
        assert acc.Scalars(tag), tag
    by_step = {e.step: e.value for e in loss}
    for e in acc.Scalars("gap/loss"):
        assert e.value == pytest.approx(next(v.value for v in val if v.step == e.step) - by_step[e.step], abs=1e-5)


def test_layer_scalars_match_the_monitors_history(run):
    rec, acc = run
    h = rec.monitor.history
    scalar_tags = set(acc.Tags()["scalars"])
    for where, stat in h.keys():  # History.keys(): the (where, stat) series it holds
        tag = tags.scalar_tag(where, stat)
        assert tag in scalar_tags, tag
        steps, values = h.series(where, stat).arrays()
        got = {e.step: e.value for e in acc.Scalars(tag)}
        expected = {int(s): v for s, v in zip(steps, values)}
        assert set(got) == set(expected), tag
        for s, v in expected.items():
            assert got[s] == pytest.approx(v, rel=1e-5, abs=1e-30, nan_ok=True), (tag, s)
    # the names the dashboards rely on
    for tag in (f"activation_dead_fraction/{DEAD}", "activation_std/layer0", f"activation_saturated_fraction/{DEAD}",
                "gradient_norm/layer0.W", "update_ratio/layer0.W", "parameter_norm/out.W", "input_mean/input"):
        assert tag in scalar_tags, tag
    assert acc.Scalars(f"activation_dead_fraction/{DEAD}")[-1].value > 0.5
    for e in acc.Scalars("update_ratio/layer0.W"):
        log10 = {x.step: x.value for x in acc.Scalars("update_ratio_log10/layer0.W")}
        assert log10[e.step] == pytest.approx(math.log10(e.value), abs=1e-5)


def test_histograms_hold_the_activations_of_every_sampled_step(run):
    rec, acc = run
    assert set(acc.Tags()["histograms"]) == {"activation_hist/layer0", f"activation_hist/{DEAD}", "input_hist/input"}
    events = acc.Histograms("activation_hist/layer0")
    assert [e.step for e in events] == list(range(30))
    last = rec.monitor.history.latest_summary("activation", "layer0")
    hv = events[-1].histogram_value
    assert hv.num == last.count and hv.min == last.min and hv.max == last.max
    assert hv.sum == pytest.approx(last.sum) and hv.sum_squares == pytest.approx(last.sumsq)
    assert sum(hv.bucket) == last.count
    assert list(hv.bucket_limit) == sorted(hv.bucket_limit)
    # ReLU: the zeros sit in the bucket that ends at 0, nothing below it
    zero_bucket = list(hv.bucket_limit).index(0.0)
    assert hv.bucket[zero_bucket] == last.zeros and sum(hv.bucket[:zero_bucket]) == 0


def test_histogram_buckets_count_exactly_what_numpy_counts():
    rng = np.random.default_rng(7)
    for x in (rng.standard_normal(5000) * 3, np.maximum(rng.standard_normal(4000), 0),
              np.concatenate([-rng.lognormal(0, 4, 3000), np.zeros(100), rng.lognormal(2, 1, 2000)]),
              np.zeros(50)):
        s = Summary(*summarize(x, "linear", hist=True))
        ((limits, counts),) = protos.histogram_buckets([s.hist])
        assert sum(counts) == x.size
        assert all(a < b for a, b in zip(limits, limits[1:]))
        cum = np.cumsum(counts)
        for limit, c in zip(limits, cum):
            # nnhealth's buckets are [left, right), the zero bucket [0, 0]
            expected = np.sum(x <= 0) if limit == 0 else np.sum(x < limit)
            assert c == expected, (limit, c, expected)


def test_findings_are_a_markdown_table_with_escaped_names(run):
    rec, acc = run
    table = text_of(acc, tags.FINDINGS)
    lines = table.splitlines()
    assert lines[0] == "| step | severity | symptom | where | evidence | advice |"
    dead = [line for line in lines if "dead-relu" in line]
    assert len(dead) == 1
    cells = [c.strip() for c in dead[0].strip("|").split("|")]
    finding = next(f for f in rec.monitor.findings if f.symptom == "dead-relu")
    assert cells[0] == str(finding.step) and cells[1] == "warning" and cells[3] == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert finding.advice.split(",")[0] in cells[5]
    assert "<script>" not in table
    assert len(lines) == 2 + len(rec.monitor.findings)
    # one table per step where findings appeared, at that step
    assert [e.step for e in acc.Tensors(tags.FINDINGS)] == sorted({f.step for f in rec.monitor.findings})
    meta = acc.SummaryMetadata(tags.FINDINGS)
    assert meta.plugin_data.plugin_name == "text"


def test_run_description_and_custom_scalars_layout(run):
    _, acc = run
    assert json.loads(text_of(acc, tags.RUN)) == {"version": tags.FORMAT_VERSION, "every": 1, "num_classes": 2}
    assert acc.SummaryMetadata("custom_scalars__config__").plugin_data.plugin_name == "custom_scalars"
    raw = tensor_util.make_ndarray(acc.Tensors("custom_scalars__config__")[0].tensor_proto).reshape(-1)[0]
    layout = layout_pb2.Layout.FromString(raw)
    (category,) = layout.category
    assert category.title == "nnhealth" and not category.closed
    titles = [c.title for c in category.chart]
    assert titles == [t for t, _ in CHARTS]
    scalar_tags = acc.Tags()["scalars"]
    matched = {c.title: chart_tags(tuple(c.multiline.tag), scalar_tags) for c in category.chart}
    assert matched[titles[0]] == ["loss/train", "loss/val"]
    assert matched[titles[2]] == ["gap/accuracy", "gap/loss"]
    assert len(matched[titles[3]]) == 6  # every parameter's update ratio on one chart
    assert set(matched[titles[4]]) == {"activation_dead_fraction/layer0", f"activation_dead_fraction/{DEAD}"}
    assert all(matched.values()), matched
    for chart in category.chart:
        for regex in chart.multiline.tag:
            re.compile(regex)


def test_state_tensors_replay_to_the_same_findings(run):
    rec, acc = run
    state_tags = [t for t in acc.Tags()["tensors"] if t.startswith(tags.STATE_PREFIX)]
    assert f"{tags.STATE_PREFIX}update_base/layer0.W" in state_tags
    by_step: dict[int, dict] = {}
    meta: dict = {}
    for tag in state_tags:
        content = json.loads(acc.SummaryMetadata(tag).plugin_data.content)
        assert acc.SummaryMetadata(tag).plugin_data.plugin_name == "nnhealth" and content["version"] == 2
        layout = Layout.from_json(content["layout"])
        meta.setdefault(content["where"], {}).update(content["meta"])
        for e in acc.Tensors(tag):
            vec = tensor_util.make_ndarray(e.tensor_proto)
            assert vec.dtype == np.float64 and vec.ndim == 1
            if layout.hist:  # version 2: the histogram is stored from its first to its last filled bucket
                assert vec.size < layout.size
                vec = full_vector(layout, vec)
            by_step.setdefault(e.step, {})[(content["role"], content["where"])] = Summary(layout, vec)
    assert meta[DEAD]["kind"] == "relu"
    latest = rec.monitor.history.latest_summary("activation", DEAD)
    assert np.array_equal(by_step[29][("activation", DEAD)].v, latest.v)
    # replay the recorded run through a fresh Monitor: same findings, same steps
    names = {"loss/train": "loss", "loss/val": "val_loss", "accuracy/train": "train_acc", "accuracy/val": "val_acc"}
    values: dict[int, dict] = {}
    for tag, name in names.items():
        for e in acc.Scalars(tag):
            values.setdefault(e.step, {})[name] = e.value
    replay = Monitor(console=False, num_classes=2, every=1)
    for step in sorted(values):
        replay.ingest(step, values[step], by_step.get(step, {}), meta=meta if step == 0 else None)
    assert [(f.symptom, f.where, f.step) for f in replay.findings] == \
           [(f.symptom, f.where, f.step) for f in rec.monitor.findings]


def test_histogram_values_skip_summaries_without_finite_values():
    s = Summary(*summarize(np.array([np.nan, np.inf]), "linear", hist=True))
    assert protos.histogram_values([("activation_hist/x", s)]) == []
    assert protos.histogram_values([("activation_hist/x", Summary(*summarize(np.ones(3), "linear")))]) == []
    assert H.NUM_BUCKETS == Layout(hist=True).size - Layout().size


def test_state_metadata_rides_on_the_first_event_and_on_changes_only(tmp_path):
    from nnhealth.dashboards.tensorboard import TensorBoardSink
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    from nnhealth.sinks import StepRecord

    sink = TensorBoardSink(tmp_path)
    for step, units in enumerate((4, 4, 4, 6, 6)):   # the layer's unit count changes at step 3
        s = Summary(*summarize(np.ones((8, units)), "relu", hist=True, units=True))
        sink.write_step(StepRecord(step, {}, {("activation", "fc1"): s}, {"fc1": {"kind": "relu"}}))
    sink.close()
    seen = []
    for event in EventFileLoader(str(sink.path)).Load():
        for v in event.summary.value:
            if v.tag == "nnhealth_state/activation/fc1":
                layout = json.loads(v.metadata.plugin_data.content)["layout"] if v.HasField("metadata") else None
                seen.append((event.step, layout and layout["units"]))
    assert seen == [(0, 4), (1, None), (2, None), (3, 6), (4, None)]
