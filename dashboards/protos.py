"""TensorBoard protobufs for nnhealth's numbers, built with the ``tensorboard`` package alone.

No TensorFlow and no torch: ``Summary.Value`` protos are filled in directly,
in the formats TensorBoard's own readers and plugins understand (scalars as
``simple_value``, histograms as ``HistogramProto``, text and custom-scalars
layouts as string tensors with their plugin's metadata).
"""
from __future__ import annotations

import json
import math

import numpy as np
from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as custom_scalar_metadata
from tensorboard.plugins.text import metadata as text_metadata

from ..stats import histogram
from ..stats.summary import Summary
from . import tags

Value = summary_pb2.Summary.Value


def scalar(tag: str, value: float) -> Value:
    return Value(tag=tag, simple_value=float(value))


def histogram_buckets(counts: np.ndarray) -> tuple[list[float], list[float]]:
    """(bucket_limit, bucket) in TensorBoard's convention from counts on nnhealth's fixed edges.

    A TensorBoard bucket ``i`` holds the values in ``(limit[i-1], limit[i]]``
    (the first one starts at the histogram's min). Empty buckets are left
    out, except that a zero-count bucket is put in front of a non-empty one
    whose left edge is beyond the previous limit, so its count is not smeared
    over the gap. The exact-zero bucket becomes the narrow interval
    ``(-1e-12, 0]``, merged with the smallest negative magnitudes, which
    also end at 0.
    """
    counts = np.asarray(counts, dtype=np.float64)
    idx = np.flatnonzero(counts)
    if idx.size == 0:
        return [], []
    bucket = counts[idx]
    left, right = histogram.LEFT[idx], histogram.RIGHT[idx] + 0.0  # + 0.0: -0.0 -> 0.0
    z = int(np.searchsorted(idx, histogram.ZERO))
    if z < idx.size and idx[z] == histogram.ZERO:
        if z > 0 and idx[z - 1] == histogram.ZERO - 1:
            bucket[z - 1] += bucket[z]
            left, right, bucket = np.delete(left, z), np.delete(right, z), np.delete(bucket, z)
        else:
            left = left.copy()
            left[z] = -histogram.RIGHT[histogram.ZERO + 1]
    gaps = np.flatnonzero(left[1:] > right[:-1]) + 1
    return np.insert(right, gaps, left[gaps]).tolist(), np.insert(bucket, gaps, 0.0).tolist()


def histogram_value(tag: str, s: Summary) -> Value | None:
    """A ``HistogramProto`` of the summary's finite values; None when it has none or no histogram."""
    counts = s.hist
    if counts is None or s.count <= 0 or not math.isfinite(s.min) or not math.isfinite(s.max):
        return None
    limits, bucket = histogram_buckets(counts)
    if not limits:
        return None
    proto = summary_pb2.HistogramProto(min=s.min, max=s.max, num=s.count, sum=s.sum, sum_squares=s.sumsq,
                                       bucket_limit=limits, bucket=bucket)
    return Value(tag=tag, histo=proto)


def _string_tensor(text: str | bytes) -> tensor_pb2.TensorProto:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=tensor_shape_pb2.TensorShapeProto(),
                                  string_val=[data])


def text(tag: str, markdown: str, description: str = "") -> Value:
    """A text-plugin summary (TensorBoard renders it as markdown)."""
    meta = text_metadata.create_summary_metadata(display_name=tag, description=description)
    return Value(tag=tag, metadata=meta, tensor=_string_tensor(markdown))


def layout_value(layout: layout_pb2.Layout) -> Value:
    """The custom-scalars layout, under the tag its plugin looks for."""
    return Value(tag=custom_scalar_metadata.CONFIG_SUMMARY_TAG,
                 metadata=custom_scalar_metadata.create_summary_metadata(),
                 tensor=_string_tensor(layout.SerializeToString()))


def state_metadata(role: str, where: str, s: Summary, facts: dict) -> summary_pb2.SummaryMetadata:
    content = {"version": tags.FORMAT_VERSION, "role": role, "where": where, "layout": s.layout.to_json(),
               "meta": facts}
    return summary_pb2.SummaryMetadata(
        display_name=f"{role} {where}",
        summary_description="nnhealth's mergeable statistics (Summary.v); `nnhealth check` replays them",
        plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name=tags.STATE_PLUGIN, content=json.dumps(content, default=str).encode("utf-8")),
    )


def state_value(role: str, where: str, s: Summary, facts: dict, with_metadata: bool = True) -> Value:
    """The summary's packed vector as a 1-D DT_DOUBLE tensor, its layout in the metadata (which
    readers take from a tag's first event, so it may be left out while it does not change)."""
    vector = np.ascontiguousarray(s.v, dtype="<f8")
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_DOUBLE,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=vector.size)]),
        tensor_content=vector.tobytes(),
    )
    value = Value(tag=tags.state_tag(role, where), tensor=tensor)
    if with_metadata:
        value.metadata.CopyFrom(state_metadata(role, where, s, facts))
    return value
