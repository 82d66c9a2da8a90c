"""The TensorBoard sink's hand-serialised protobufs are the messages TensorBoard's own classes build.

The sink writes event bytes directly (:mod:`nnhealth.dashboards.protos`);
each kind of value is parsed back here with TensorBoard's generated classes
and compared with the same message built the ordinary way.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

from nnhealth.dashboards import protos, tags
from nnhealth.dashboards.tensorboard import _scalar_values
from nnhealth.stats import Layout, Summary, summarize
from nnhealth.stats import histogram as H

Value = summary_pb2.Summary.Value


def parsed(pieces, step=7, wall_time=1234.5) -> event_pb2.Event:
    data = protos.event(step, wall_time, pieces, sum(memoryview(p).nbytes for p in pieces))
    return event_pb2.Event.FromString(data)


def expected_event(values, step=7, wall_time=1234.5) -> event_pb2.Event:
    return event_pb2.Event(step=step, wall_time=wall_time, summary=summary_pb2.Summary(value=values))


@pytest.mark.parametrize("step", [0, 1, 127, 128, 2**40, -3])
def test_event_header_and_scalars(step):
    values = [("loss/train", 2.5), ("activation_std/é layer", -0.125), ("x", float("nan")), ("big", 1e39),
              ("small", -1e39), ("edge", 3.4028235e38), ("tiny", 1e-50), ("int", 3)]
    got = parsed([protos.scalar(tag, v) for tag, v in values], step=step)
    want = expected_event([Value(tag=tag, simple_value=v) for tag, v in values], step=step)
    assert got.step == want.step and got.wall_time == want.wall_time
    assert [v.tag for v in got.summary.value] == [v.tag for v in want.summary.value]
    for a, b in zip(got.summary.value, want.summary.value):
        assert a.WhichOneof("value") == "simple_value"
        assert a.simple_value == b.simple_value or (math.isnan(a.simple_value) and math.isnan(b.simple_value))


def test_a_scalar_block_writes_what_one_scalar_at_a_time_writes():
    tags_ = ["loss/train", "gradient_norm/0.weight", "update_ratio/0.weight"]
    block = protos.ScalarBlock(tags_)
    for numbers in ([1.0, 2.0, 3.0], [0.5, -1e39, float("inf")], [np.float32(0.25), 7, True]):
        assert block.entries(numbers) == b"".join(protos.scalar(t, v) for t, v in zip(tags_, numbers))


def test_step_scalars_with_their_derived_values():
    scalars = {(None, "loss"): 2.0, (None, "val_loss"): 2.5, ("fc1.W", "update/ratio"): 1e-3,
               ("fc2.W", "update/ratio"): 0.0, ("fc1", "activation/std"): 0.5}
    got = {v.tag: v.simple_value for v in parsed(_scalar_values(scalars)).summary.value}
    assert got == pytest.approx({"loss/train": 2.0, "loss/val": 2.5, "update_ratio/fc1.W": 1e-3,
                                 "update_ratio/fc2.W": 0.0, "activation_std/fc1": 0.5,
                                 "update_ratio_log10/fc1.W": -3.0, "gap/loss": 0.5})
    assert _scalar_values({}) == []


def _reference_buckets(counts):
    """The bucket conversion the sink used before it was vectorised (kept to pin the format)."""
    counts = np.asarray(counts, dtype=np.float64)
    idx = np.flatnonzero(counts)
    if idx.size == 0:
        return np.zeros(0), np.zeros(0)
    bucket = counts[idx]
    left, right = H.LEFT[idx], H.RIGHT[idx] + 0.0
    z = int(np.searchsorted(idx, H.ZERO))
    if z < idx.size and idx[z] == H.ZERO:
        if z > 0 and idx[z - 1] == H.ZERO - 1:
            bucket[z - 1] += bucket[z]
            left, right, bucket = np.delete(left, z), np.delete(right, z), np.delete(bucket, z)
        else:
            left = left.copy()
            left[z] = -H.RIGHT[H.ZERO + 1]
    gaps = np.flatnonzero(left[1:] > right[:-1]) + 1
    return np.insert(right, gaps, left[gaps]), np.insert(bucket, gaps, 0.0)


def test_histogram_buckets_of_many_rows_are_those_of_each_row():
    rng = np.random.default_rng(3)
    rows = []
    for _ in range(400):
        c = np.zeros(H.NUM_BUCKETS)
        k = int(rng.integers(0, 40))
        c[rng.integers(0, c.size, k)] = rng.integers(1, 100, k)
        for at, p in ((H.ZERO, 0.4), (H.ZERO - 1, 0.3), (H.ZERO + 1, 0.3), (H.ZERO - 2, 0.1), (H.ZERO + 2, 0.1),
                      (0, 0.1), (H.NUM_BUCKETS - 1, 0.1)):
            if rng.random() < p:
                c[at] = rng.integers(1, 5)
        rows.append(c)
    before = [r.copy() for r in rows]
    for row, (limits, bucket) in zip(rows, protos.histogram_buckets(rows)):
        want_limits, want_bucket = _reference_buckets(row)
        assert np.array_equal(limits, want_limits) and np.array_equal(bucket, want_bucket)
        assert not np.signbit(limits[limits == 0]).any()  # 0.0, not -0.0
    assert all(np.array_equal(a, b) for a, b in zip(rows, before))  # the summaries are not touched


def test_histogram_entries_are_the_histogram_protos():
    rng = np.random.default_rng(0)
    xs = {"activation_hist/relu": np.maximum(rng.standard_normal((64, 32)), 0),
          "input_hist/input": rng.standard_normal((16, 8)) * 1e3,
          "activation_hist/none": np.array([np.nan, np.inf])}
    summaries = [(tag, Summary(*summarize(x, "linear", hist=True))) for tag, x in xs.items()]
    got = parsed(protos.histogram_values(summaries)).summary.value
    assert [v.tag for v in got] == ["activation_hist/relu", "input_hist/input"]  # no finite values: no histogram
    for v, (_, s) in zip(got, summaries):
        ((limits, bucket),) = protos.histogram_buckets([s.hist])
        want = summary_pb2.HistogramProto(min=s.min, max=s.max, num=s.count, sum=s.sum, sum_squares=s.sumsq,
                                          bucket_limit=limits.tolist(), bucket=bucket.tolist())
        assert v.histo == want and not v.HasField("metadata")


def test_state_entries_are_double_tensors_with_metadata_when_asked():
    s = Summary(*summarize(np.arange(24.0).reshape(6, 4) - 5, "relu", hist=True, units=True))
    facts = {"kind": "relu", "fan_in": 12}
    full = protos.state_value("activation", "fc1", s, facts)
    stored = protos.state_vector(s)
    bare = protos.state_prefix("activation", "fc1", stored.size), stored
    got = parsed([full, *bare]).summary.value
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_DOUBLE, tensor_content=stored.tobytes(),
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=stored.size)]))
    assert got[0] == Value(tag=tags.state_tag("activation", "fc1"), tensor=tensor,
                           metadata=protos.state_metadata("activation", "fc1", s, facts))
    assert got[1] == Value(tag=tags.state_tag("activation", "fc1"), tensor=tensor)
    content = json.loads(got[0].metadata.plugin_data.content)
    assert Layout.from_json(content["layout"]) == s.layout and content["meta"] == facts
    assert content["version"] == 2


def test_state_histograms_are_trimmed_to_their_filled_buckets_and_restored_exactly():
    from nnhealth.logs.runlog import full_vector
    from nnhealth.stats import histogram

    rng = np.random.default_rng(3)
    cases = [np.maximum(rng.standard_normal((64, 32)), 0), rng.standard_normal((16, 8)) * 1e3,
             np.zeros((4, 3)), np.array([[np.nan, np.inf]])]
    for x in cases:
        s = Summary(*summarize(x, "relu", hist=True, units=True))
        stored = protos.state_vector(s)
        filled = np.flatnonzero(s.hist)
        kept = filled[-1] - filled[0] + 1 if filled.size else 0
        assert stored.size == s.layout.size - histogram.NUM_BUCKETS + 2 + kept < s.layout.size
        np.testing.assert_array_equal(full_vector(s.layout, stored), s.v)
    # header-only states are written whole
    g = Summary(*summarize(rng.standard_normal(10)))
    np.testing.assert_array_equal(protos.state_vector(g), g.v)


def test_text_and_layout_entries_are_the_protobuf_values():
    got = parsed([protos.text("nnhealth/findings", "| a |", "findings")]).summary.value[0]
    assert got.tag == "nnhealth/findings" and got.metadata.plugin_data.plugin_name == "text"
    assert got.tensor.string_val == [b"| a |"]


def test_state_metadata_is_written_again_when_the_facts_of_a_layer_change(tmp_path):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    from nnhealth.dashboards.tensorboard import TensorBoardSink
    from nnhealth.sinks import StepRecord

    sink = TensorBoardSink(tmp_path)
    s = Summary(*summarize(np.ones((8, 4)), "relu", hist=True, units=True))
    for step, kind in enumerate(("relu", "relu", "tanh", "tanh")):
        facts = {"kind": kind}
        sink.write_step(StepRecord(step, {}, {("activation", "fc1"): s, ("gradient", "fc1"): s}, {"fc1": facts}))
        facts["kind"] = "changed later"  # the Monitor's dict: the sink wrote its own copy
    sink.close()
    seen = []
    for event in EventFileLoader(str(sink.path)).Load():
        for v in event.summary.value:
            if v.tag.startswith(tags.STATE_PREFIX):
                meta = json.loads(v.metadata.plugin_data.content)["meta"] if v.HasField("metadata") else None
                seen.append((event.step, v.tag.split("/")[1], meta and meta["kind"]))
    assert seen == [(0, "activation", "relu"), (0, "gradient", "relu"), (1, "activation", None), (1, "gradient", None),
                    (2, "activation", "tanh"), (2, "gradient", "tanh"), (3, "activation", None), (3, "gradient", None)]
