"""Reading event files: the same numbers as TensorBoard's own reader, and exact words about damage."""
from __future__ import annotations

import os
import struct
import tracemalloc

import pytest
from hypothesis import given, settings, strategies as st
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as tb_masked_crc32c
from tensorboard.summary.writer.record_writer import RecordWriter
from tensorboard.util import tensor_util

from logs_writers import (event_file, flip_byte, per_epoch, record_offsets, train, truncate_mid_record,
                          write_keras, write_torch)
from nnhealth.logs import records
from nnhealth.logs.discovery import find_runs
from nnhealth.logs.events import EventFile
from nnhealth.logs.records import RecordFile
from nnhealth.logs.runlog import RunLog


def _events(n: int) -> list[bytes]:
    out = []
    for step in range(n):
        ev = event_pb2.Event(wall_time=1.0 + step, step=step)
        ev.summary.value.add(tag="loss", simple_value=2.0 - 0.01 * step)
        out.append(ev.SerializeToString())
    return out


def _write_records(path, payloads) -> None:
    with open(path, "wb") as fh:
        w = RecordWriter(fh)
        for p in payloads:
            w.write(p)


def _read_all(path, **kw):
    rf = RecordFile(path, **kw)
    return rf, list(rf.read())


def _run_log(folder) -> RunLog:
    (spec,) = find_runs(folder)
    log = RunLog(spec)
    log.poll()
    log.finish()
    return log


# -- the same numbers as TensorBoard's reader --------------------------------------------------

def test_pytorch_scalars_equal_what_tensorboards_accumulator_reads(tmp_path):
    write_torch(tmp_path / "run", train("overfit"))
    acc = event_accumulator.EventAccumulator(str(tmp_path / "run"), size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    log = _run_log(tmp_path / "run")
    assert sorted(log.scalars) == sorted(acc.Tags()["scalars"])
    for tag in acc.Tags()["scalars"]:
        theirs = [(e.step, e.value) for e in acc.Scalars(tag)]
        ours = [(s, v) for s, (_, v) in sorted(log.scalars[tag].items())]
        assert ours == theirs, tag
    assert log.problems() == []


def test_keras_tensor_scalars_equal_what_tensorboards_accumulator_reads(tmp_path):
    write_keras(tmp_path / "fit", per_epoch(train("healthy", val_every=10)))
    log = _run_log(tmp_path / "fit")
    for split in ("train", "validation"):
        acc = event_accumulator.EventAccumulator(str(tmp_path / "fit" / split),
                                                 size_guidance={event_accumulator.TENSORS: 0})
        acc.Reload()
        for tag in acc.Tags()["tensors"]:
            if tag == "keras":
                continue
            theirs = [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
            ours = [(s, v) for s, (_, v) in sorted(log.scalars[f"{split}/{tag}"].items())]
            assert ours == theirs, tag
    assert "train/keras" in log.other_tags
    assert len(log.scalars["train/epoch_loss"]) == 30


# -- damage ---------------------------------------------------------------------------------------

def test_truncated_last_record_keeps_the_records_before_and_completes_when_the_writer_goes_on(tmp_path):
    path = tmp_path / "events.out.tfevents.1"
    payloads = _events(10)
    _write_records(path, payloads)
    whole = path.read_bytes()
    cut = truncate_mid_record(path, 7)
    rf, got = _read_all(path)
    assert got == payloads[:7]
    assert rf.pending == cut - record_offsets_of(whole)[7]
    assert rf.problems == []  # still being written, maybe: not a problem yet
    message = rf.truncation()
    assert str(path) in message and f"byte {record_offsets_of(whole)[7]}" in message
    assert "truncated last record" in message and "the 7 records before it were read" in message
    with open(path, "ab") as fh:  # the writer finishes the record and writes the rest
        fh.write(whole[cut:])
    assert list(rf.read()) == payloads[7:]
    assert rf.pending == 0 and rf.truncation() is None


def record_offsets_of(data: bytes) -> list[int]:
    out, at = [], 0
    while at < len(data):
        out.append(at)
        at += 16 + struct.unpack("<Q", data[at:at + 8])[0]
    return out


def test_a_record_failing_its_checksum_is_skipped_and_the_next_ones_are_read(tmp_path):
    path = tmp_path / "events.out.tfevents.1"
    payloads = _events(8)
    _write_records(path, payloads)
    at = record_offsets(path)[3]
    flip_byte(path, at + 12 + 5)  # inside record 3's payload
    rf, got = _read_all(path)
    assert got == payloads[:3] + payloads[4:]
    (problem,) = rf.problems
    assert problem.startswith(f"{path}: corrupt record at byte {at}") and "checksum" in problem


def test_a_damaged_header_is_skipped_to_the_next_intact_record(tmp_path):
    path = tmp_path / "events.out.tfevents.1"
    payloads = _events(8)
    _write_records(path, payloads)
    offsets = record_offsets(path)
    flip_byte(path, offsets[2] + 1)  # record 2's length
    rf, got = _read_all(path)
    assert got == payloads[:2] + payloads[3:]
    (problem,) = rf.problems
    assert f"corrupt record header (its length fails its checksum) at byte {offsets[2]}" in problem
    assert f"skipped {offsets[3] - offsets[2]} bytes to the next intact record" in problem


def test_an_absurd_length_is_refused_before_anything_is_allocated(tmp_path):
    path = tmp_path / "events.out.tfevents.1"
    payloads = _events(3)
    length = struct.pack("<Q", 1 << 40)
    crafted = length + struct.pack("<I", tb_masked_crc32c(length))  # a valid header announcing 1 TiB
    with open(path, "wb") as fh:
        w = RecordWriter(fh)
        w.write(payloads[0])
        fh.write(crafted)
        w.write(payloads[1])
        w.write(payloads[2])
    tracemalloc.start()
    rf, got = _read_all(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert got == payloads
    assert peak < 16 << 20
    (problem,) = rf.problems
    assert "announces 1099511627776 bytes, over the" in problem and "skipped 12 bytes" in problem


def test_a_file_that_is_not_an_event_file_says_so(tmp_path):
    path = tmp_path / "events.out.tfevents.garbage"
    path.write_bytes(os.urandom(5000))
    rf, got = _read_all(path)
    assert got == []
    assert rf.problems == [f"{path}: not a TensorBoard event file, or corrupt from its first byte: no intact "
                           "record in its 5000 bytes"]


def test_an_empty_file_has_no_records_and_no_problem(tmp_path):
    path = tmp_path / "events.out.tfevents.1"
    path.write_bytes(b"")
    rf, got = _read_all(path)
    assert (got, rf.problems, rf.truncation()) == ([], [], None)


def test_a_record_that_is_not_an_event_is_reported_and_skipped(tmp_path):
    path = tmp_path / "events.out.tfevents.1"
    payloads = _events(3)
    _write_records(path, [payloads[0], b"\xff\xff\xff not a protobuf", payloads[2]])
    ef = EventFile(path)
    events = list(ef.read())
    assert [e.step for e in events] == [0, 2]
    (problem,) = ef.problems
    assert problem.startswith(f"{path}: record 2 is not a TensorBoard event")


def test_a_file_that_shrinks_while_followed_is_reported(tmp_path):
    path = tmp_path / "events.out.tfevents.1"
    _write_records(path, _events(5))
    rf, got = _read_all(path)
    assert len(got) == 5
    _write_records(path, _events(2))
    assert list(rf.read()) == []
    assert "shrank" in rf.problems[0]


def test_damaged_event_files_of_a_run_are_named_and_the_rest_is_used(tmp_path):
    rows = train("healthy")
    write_torch(tmp_path / "run", rows)
    path = event_file(tmp_path / "run")
    offsets = record_offsets(path)
    flip_byte(path, offsets[100] + 14)
    truncate_mid_record(path, len(offsets) - 1)
    log = _run_log(tmp_path / "run")
    problems = log.problems()
    assert len(problems) == 2
    assert problems[0].startswith(f"{path}: corrupt record at byte {offsets[100]}")
    assert problems[1].startswith(f"{path}: truncated last record at byte {offsets[-1]}")
    written = sum(len(r) - 1 for r in rows)  # SummaryWriter writes one event per scalar
    assert sum(len(series) for series in log.scalars.values()) == written - 2  # one lost to each damage


# -- checksums --------------------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4096))
def test_the_checksum_in_use_is_tensorboards(data):
    assert records.masked_crc32c(data) == tb_masked_crc32c(data)


def test_the_reader_checks_payloads_with_the_fast_checksum_when_installed():
    pytest.importorskip("google_crc32c")
    assert records.masked_crc32c is not tb_masked_crc32c


def test_an_event_tensorboards_compat_layer_cannot_convert_is_reported_and_skipped(tmp_path):
    """A histogram with more counts than bucket limits makes data_compat raise: that event only is lost."""
    path = tmp_path / "events.out.tfevents.1"
    bad = event_pb2.Event(wall_time=1.0, step=1)
    bad.summary.value.add(tag="weights").histo.CopyFrom(
        summary_pb2.HistogramProto(min=0, max=1, num=3, bucket_limit=[], bucket=[1.0, 0.0, 2.0]))
    payloads = _events(3)
    _write_records(path, [payloads[0], bad.SerializeToString(), payloads[2]])
    ef = EventFile(path)
    assert [e.step for e in ef.read()] == [0, 2]
    (problem,) = ef.problems
    assert problem.startswith(f"{path}: event at step 1 cannot be converted by TensorBoard's compat layer")
