"""TensorBoard events for nnhealth's numbers, serialised straight to protobuf bytes.

The formats are those TensorBoard's own readers and plugins understand
(scalars as ``simple_value``, histograms as ``HistogramProto``, mergeable
states as 1-D ``DT_DOUBLE`` tensors, text and custom-scalars layouts as
string tensors with their plugin's metadata); only the way they are built
differs. A sampled step writes a hundred values or more, and building them
as protobuf objects cost about a millisecond of the writer thread's CPU,
holding the GIL the training thread needs. Here the per-tag part of every
value is serialised once and cached, the numbers go in as numpy bytes (a
packed repeated double and ``tensor_content`` are both the raw
little-endian array), and an event is one ``bytes.join``. Field numbers are
read from TensorBoard's generated classes; the tests parse the bytes back
with them.

A value is handed around as an *entry*: the bytes of one ``Summary.value``
field (key, length, ``Summary.Value``), so an event's summary is the
concatenation of its entries. A state's entry comes in two pieces, a cached
prefix and the vector itself, which is copied once, into the event.
"""
from __future__ import annotations

import json
import math
import struct
from functools import lru_cache
from itertools import pairwise

import numpy as np
from tensorboard.compat.proto import (
    event_pb2,
    summary_pb2,
    tensor_pb2,
    tensor_shape_pb2,
    types_pb2,
)
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as custom_scalar_metadata
from tensorboard.plugins.text import metadata as text_metadata

from ..stats import histogram
from ..stats.summary import Summary
from . import tags

Value = summary_pb2.Summary.Value

#: protobuf wire types
VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5
#: tags whose serialised parts are cached (a model has a few per layer; bounded for odd metric names)
CACHED_TAGS = 1 << 16

_ONE_BYTE = [bytes([n]) for n in range(0x80)]


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _ONE_BYTE[n]
    if n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _key(message, name: str, wire: int) -> bytes:
    """The key of field ``name`` of ``message``: its number and wire type, as a varint."""
    return _varint(message.DESCRIPTOR.fields_by_name[name].number << 3 | wire)


_EVENT_WALL_TIME = _key(event_pb2.Event, "wall_time", FIXED64)
_EVENT_STEP = _key(event_pb2.Event, "step", VARINT)
_EVENT_SUMMARY = _key(event_pb2.Event, "summary", LENGTH)
_SUMMARY_VALUE = _key(summary_pb2.Summary, "value", LENGTH)
_TAG = _key(Value, "tag", LENGTH)
_SIMPLE_VALUE = _key(Value, "simple_value", FIXED32)
_HISTO = _key(Value, "histo", LENGTH)
_TENSOR = _key(Value, "tensor", LENGTH)
_METADATA = _key(Value, "metadata", LENGTH)
_DTYPE = _key(tensor_pb2.TensorProto, "dtype", VARINT)
_SHAPE = _key(tensor_pb2.TensorProto, "tensor_shape", LENGTH)
_CONTENT = _key(tensor_pb2.TensorProto, "tensor_content", LENGTH)
_DIM = _key(tensor_shape_pb2.TensorShapeProto, "dim", LENGTH)
_DIM_SIZE = _key(tensor_shape_pb2.TensorShapeProto.Dim, "size", VARINT)
_BUCKET_LIMIT = _key(summary_pb2.HistogramProto, "bucket_limit", LENGTH)  # packed repeated double
_BUCKET = _key(summary_pb2.HistogramProto, "bucket", LENGTH)
#: HistogramProto's five leading doubles, each after its key
_HISTO_HEAD = struct.Struct("<" + "cd" * 5)
_HISTO_KEYS = [_key(summary_pb2.HistogramProto, name, FIXED64) for name in ("min", "max", "num", "sum", "sum_squares")]
_DOUBLE = struct.Struct("<d")
_FLOAT = struct.Struct("<f")
_UINT64 = (1 << 64) - 1


def _field(key: bytes, *parts) -> bytes:
    """A length-delimited field holding the concatenation of ``parts`` (bytes or arrays)."""
    payload = b"".join(parts)
    return key + _varint(len(payload)) + payload


@lru_cache(maxsize=CACHED_TAGS)
def _tag_field(tag: str) -> bytes:
    return _field(_TAG, tag.encode("utf-8"))


def event(step: int, wall_time: float, pieces: list, size: int | None = None) -> bytes:
    """A serialised ``Event`` whose summary is the concatenation of ``pieces``: entries, or parts of
    them (bytes, or the contiguous arrays of states, copied once, here). ``size``: their length in
    bytes, which the caller must give when arrays are among them."""
    if size is None:
        size = sum(map(len, pieces))
    return b"".join([_EVENT_WALL_TIME, _DOUBLE.pack(wall_time), _EVENT_STEP, _varint(step & _UINT64),
                     _EVENT_SUMMARY, _varint(size), *pieces])


def entry(value: Value) -> bytes:
    """The entry of a ``Summary.Value`` built as a protobuf object (rare values: text, layout)."""
    return _field(_SUMMARY_VALUE, value.SerializeToString())


def _float32(x: float) -> bytes:
    """``x`` as protobuf stores a float field: rounded to float32, beyond its range infinite."""
    try:
        return _FLOAT.pack(x)
    except OverflowError:
        return _FLOAT.pack(math.copysign(math.inf, x))


@lru_cache(maxsize=CACHED_TAGS)
def _scalar_prefix(tag: str) -> bytes:
    """Everything of a scalar's entry but its 4 value bytes."""
    tag_field = _tag_field(tag)
    return _SUMMARY_VALUE + _varint(len(tag_field) + 5) + tag_field + _SIMPLE_VALUE


def scalar(tag: str, value: float) -> bytes:
    return _scalar_prefix(tag) + _float32(value)


class ScalarBlock:
    """The entries of a fixed sequence of scalar tags: one template whose 4-byte value slots are
    filled in by numpy, so a step's hundred scalars cost a few microseconds, not one call each."""

    def __init__(self, tags: list[str]):
        prefixes = [_scalar_prefix(tag) for tag in tags]
        self._template = np.frombuffer(b"".join(p + bytes(4) for p in prefixes), dtype=np.uint8)
        ends = np.cumsum([len(p) + 4 for p in prefixes], dtype=np.intp)
        self._slots = ((ends - 4)[:, None] + np.arange(4)).ravel()
        self._pack = struct.Struct(f"<{len(tags)}f").pack

    def entries(self, values) -> bytes:
        """The entries with ``values`` (one per tag, in order)."""
        try:
            raw = self._pack(*values)
        except OverflowError:  # a finite value beyond float32: infinite, as protobuf stores it
            raw = b"".join(map(_float32, values))
        out = self._template.copy()
        out[self._slots] = np.frombuffer(raw, dtype=np.uint8)
        return out.tobytes()


def histogram_buckets(rows: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(bucket_limit, bucket) in TensorBoard's convention for each of ``rows``, counts on nnhealth's
    fixed edges, computed in one numpy pass over them all (a step's histograms cost about one).

    A TensorBoard bucket ``i`` holds the values in ``(limit[i-1], limit[i]]``
    (the first one starts at the histogram's min). Empty buckets are left
    out, except that each run of empty buckets between two non-empty ones
    becomes one zero-count bucket, so a count is not smeared over the gap.
    The exact-zero bucket is merged with the smallest negative magnitudes,
    ``(-1e-12, 0]``, which also end at 0.
    """
    n, z = histogram.NUM_BUCKETS, histogram.ZERO
    # one row per histogram, with an empty bucket after the last so that every bucket has a right edge
    counts = np.concatenate([part for row in rows for part in (row, _NO_COUNT)]).reshape(len(rows), n + 1)
    # bucket i spans edges i..i+1. The zero bucket's count goes to the one ending at 0, and the zero
    # bucket takes the place of the next one, whose left edge is 0 too: its own left edge is dropped
    counts[:, z - 1] += counts[:, z]
    counts[:, z] = counts[:, z + 1]
    full = counts > 0
    # keep the edges of the non-empty buckets; each pair of consecutive kept edges is a TensorBoard
    # bucket, counting what the bucket that starts at its left edge holds
    kept = full.copy()
    kept[:, 1:] |= full[:, :-1]
    kept[:, z + 1] = False
    at = np.flatnonzero(kept)
    limits, bucket = _EDGES[at % (n + 1)], counts.ravel()[at]
    ends = np.searchsorted(at, np.arange(len(rows) + 1) * (n + 1))
    return [(limits[a + 1:b], bucket[a:b - 1]) for a, b in pairwise(ends)]


_NO_COUNT = np.zeros(1)
#: the left edge of every bucket, then the right edge of the last one (with 0.0 for -0.0)
_EDGES = np.append(histogram.LEFT, histogram.RIGHT[-1]) + 0.0


def histogram_values(summaries: list[tuple[str, Summary]]) -> list[bytes]:
    """The entries of a ``HistogramProto`` of each (tag, summary)'s finite values, leaving out
    summaries without any or without a histogram."""
    shown = [(tag, s) for tag, s in summaries
             if s.layout.hist and s.count > 0 and math.isfinite(s.min) and math.isfinite(s.max)]
    if not shown:
        return []
    buckets = histogram_buckets([s.hist for _, s in shown])
    k = _HISTO_KEYS
    entries = []
    for (tag, s), (limits, bucket) in zip(shown, buckets):
        if not limits.size:  # counts that do not add up to any value: nothing to show
            continue
        head = _HISTO_HEAD.pack(k[0], s.min, k[1], s.max, k[2], s.count, k[3], s.sum, k[4], s.sumsq)
        size = _varint(8 * limits.size)  # both arrays: float64, one number per bucket
        histo = b"".join((head, _BUCKET_LIMIT, size, limits.astype("<f8", copy=False).tobytes(),
                          _BUCKET, size, bucket.astype("<f8", copy=False).tobytes()))
        entries.append(_field(_SUMMARY_VALUE, _tag_field(tag), _HISTO, _varint(len(histo)), histo))
    return entries


def _string_tensor(text: str | bytes) -> tensor_pb2.TensorProto:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=tensor_shape_pb2.TensorShapeProto(),
                                  string_val=[data])


def text(tag: str, markdown: str, description: str = "") -> bytes:
    """A text-plugin summary (TensorBoard renders it as markdown)."""
    meta = text_metadata.create_summary_metadata(display_name=tag, description=description)
    return entry(Value(tag=tag, metadata=meta, tensor=_string_tensor(markdown)))


def layout_value(layout: layout_pb2.Layout) -> bytes:
    """The custom-scalars layout, under the tag its plugin looks for."""
    return entry(Value(tag=custom_scalar_metadata.CONFIG_SUMMARY_TAG,
                       metadata=custom_scalar_metadata.create_summary_metadata(),
                       tensor=_string_tensor(layout.SerializeToString())))


def state_metadata(role: str, where: str, s: Summary, facts: dict) -> summary_pb2.SummaryMetadata:
    content = {"version": tags.FORMAT_VERSION, "role": role, "where": where, "layout": s.layout.to_json(),
               "meta": facts}
    return summary_pb2.SummaryMetadata(
        display_name=f"{role} {where}",
        summary_description="nnhealth's mergeable statistics (Summary.v); `nnhealth check` replays them",
        plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name=tags.STATE_PLUGIN, content=json.dumps(content, default=str).encode("utf-8")),
    )


@lru_cache(maxsize=CACHED_TAGS)
def _state_head(role: str, where: str, size: int) -> tuple[bytes, bytes]:
    """(tag field, tensor field up to its content) of a state of ``size`` doubles."""
    shape = _field(_SHAPE, _field(_DIM, _DIM_SIZE + _varint(size)))
    tensor = _DTYPE + _varint(types_pb2.DT_DOUBLE) + shape + _CONTENT + _varint(8 * size)
    return _tag_field(tags.state_tag(role, where)), _TENSOR + _varint(len(tensor) + 8 * size) + tensor


@lru_cache(maxsize=CACHED_TAGS)
def state_prefix(role: str, where: str, size: int) -> bytes:
    """Everything of the entry of a state of ``size`` doubles without metadata, but the doubles:
    the entry is this followed by :func:`state_vector` (``8 * size`` bytes)."""
    tag, tensor = _state_head(role, where, size)
    return _SUMMARY_VALUE + _varint(len(tag) + len(tensor) + 8 * size) + tag + tensor


def state_vector(s: Summary) -> np.ndarray:
    """The summary's packed vector as contiguous little-endian doubles, its histogram trimmed to the
    buckets from the first to the last non-empty one (format version 2): the header, then the first
    kept bucket's index and the number kept, those buckets, then the per-unit parts. Of 1,549 fixed
    buckets a layer's values fill a few hundred at most; the full vector was most of a step's bytes."""
    sl = s.layout.slices().get("hist")
    if sl is None:
        return np.ascontiguousarray(s.v, dtype="<f8")
    hist = s.v[sl]
    filled = np.flatnonzero(hist)
    lo, hi = (int(filled[0]), int(filled[-1]) + 1) if filled.size else (0, 0)
    return np.concatenate([s.v[:sl.start], (lo, hi - lo), hist[lo:hi], s.v[sl.stop:]]).astype("<f8", copy=False)


def state_value(role: str, where: str, s: Summary, facts: dict, vector: np.ndarray | None = None) -> bytes:
    """The entry of the summary's packed vector (:func:`state_vector`, unless given) as a 1-D
    DT_DOUBLE tensor with its layout and facts in the metadata (readers take it from a tag's first
    event: later ones may go without, as :func:`state_prefix` and :func:`state_vector`)."""
    vector = state_vector(s) if vector is None else vector
    tag, tensor = _state_head(role, where, vector.size)
    metadata = _field(_METADATA, state_metadata(role, where, s, facts).SerializeToString())
    return _field(_SUMMARY_VALUE, tag, tensor, vector, metadata)
