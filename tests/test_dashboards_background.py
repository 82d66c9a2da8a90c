"""Writing never makes a training step wait on the disk, and loses nothing it did not say it lost."""
from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import SCALARS, TENSORS, EventAccumulator

from nnhealth import Monitor
from nnhealth.dashboards import tensorboard as tb
from nnhealth.dashboards.background import HISTOGRAMS, KEEP, BackgroundWriter
from nnhealth.dashboards.background import SCALARS as SCALAR_JOBS
from nnhealth.sinks import StepRecord
from nnhealth.stats import Summary, summarize


def read(logdir) -> EventAccumulator:
    acc = EventAccumulator(str(logdir), size_guidance={SCALARS: 0, TENSORS: 0})
    acc.Reload()
    return acc


def sampled_record(step: int) -> StepRecord:
    x = np.random.default_rng(step).standard_normal((64, 32))
    return StepRecord(step, scalars={(None, "loss"): 1.0 / (step + 1), ("fc1", "activation/std"): 1.0},
                      summaries={("activation", "fc1"): Summary(*summarize(x, "relu", hist=True, units=True))},
                      meta={"fc1": {"kind": "relu"}})


class SlowDisk:
    """Makes every event write wait until the test opens the gate."""

    def __init__(self, monkeypatch, sink):
        self.gate = threading.Event()
        self.calls = 0
        original = sink._events.add_event

        def add_event(event):
            self.calls += 1
            self.gate.wait(30)
            original(event)
        monkeypatch.setattr(sink._events, "add_event", add_event)


def test_a_step_does_not_wait_for_a_stalled_disk(tmp_path, monkeypatch):
    sink = tb.TensorBoardSink(tmp_path, every=1)
    disk = SlowDisk(monkeypatch, sink)
    longest = 0.0
    for step in range(200):
        t = time.perf_counter()
        sink.write_step(sampled_record(step))
        longest = max(longest, time.perf_counter() - t)
    assert longest < 0.05, f"write_step blocked for {longest * 1e3:.1f} ms while the disk was stalled"
    assert sink.dropped == {"scalars": 0, "histograms": 0}
    disk.gate.set()
    sink.close()
    acc = read(tmp_path)
    assert [e.step for e in acc.Scalars("loss/train")] == list(range(200))
    assert len(acc.Tensors("nnhealth_state/activation/fc1")) == 200


def test_a_full_queue_drops_histograms_first_and_counts_what_it_dropped(tmp_path, monkeypatch, caplog):
    record = sampled_record(0)
    step_bytes = 2 * tb.SCALAR_BYTES + record.summaries[("activation", "fc1")].v.nbytes + tb.SUMMARY_BYTES
    sink = tb.TensorBoardSink(tmp_path, every=1, max_queue_bytes=3 * step_bytes)
    disk = SlowDisk(monkeypatch, sink)  # the writer now hangs in its first (kept) job
    for step in range(3):
        sink.write_step(sampled_record(step))      # the queue is exactly full
    assert sink.dropped == {"scalars": 0, "histograms": 0}
    for step in range(3, 300):                     # scalars evict histograms until only scalars are left
        sink.write_step(sampled_record(step))
    dropped = sink.dropped
    assert dropped["histograms"] == 300 and dropped["scalars"] > 0
    disk.gate.set()
    with caplog.at_level(logging.WARNING, logger="nnhealth"):
        sink.close()
    assert "could not keep up" in caplog.text
    assert f"the histograms of {dropped['histograms']} step(s), the scalars of {dropped['scalars']} step(s)" in caplog.text
    acc = read(tmp_path)
    scalar_steps = [e.step for e in acc.Scalars("loss/train")]
    state = acc.Tags()["tensors"]
    hist_steps = [e.step for e in acc.Tensors("nnhealth_state/activation/fc1")] if "nnhealth_state/activation/fc1" in state else []
    # every step is either written or counted as dropped, and scalars outlived the histograms
    assert len(scalar_steps) + dropped["scalars"] == 300 and len(hist_steps) + dropped["histograms"] == 300
    assert scalar_steps[:3] == [0, 1, 2] and len(scalar_steps) > len(hist_steps)
    assert acc.Scalars("nnhealth/dropped_histograms")[-1].value == dropped["histograms"]
    assert acc.Scalars("nnhealth/dropped_scalars")[-1].value == dropped["scalars"]
    assert acc.Tensors("nnhealth/run") and acc.Tensors("custom_scalars__config__")  # kept jobs are never dropped


def test_the_queue_evicts_the_oldest_histograms_to_make_room_for_scalars():
    gate, out = threading.Event(), []
    w = BackgroundWriter(max_bytes=10)
    w.put(lambda: gate.wait(30), KEEP)                      # holds the writer thread
    for name, kind, cost in (("h1", HISTOGRAMS, 4), ("s1", SCALAR_JOBS, 1), ("h2", HISTOGRAMS, 4),
                             ("s2", SCALAR_JOBS, 1),     # 10 of 10 bytes
                             ("h3", HISTOGRAMS, 4),      # no room: dropped
                             ("s3", SCALAR_JOBS, 1),     # evicts h1
                             ("s4", SCALAR_JOBS, 4),     # evicts h2
                             ("s5", SCALAR_JOBS, 5),     # only scalars queued: dropped
                             ("k", KEEP, 10**9)):        # kept jobs always fit
        w.put(lambda name=name: out.append(name), kind, cost=cost)
    assert w.dropped == {"scalars": 1, "histograms": 3}
    gate.set()
    w.close(timeout=10)
    assert out == ["s1", "s2", "s3", "s4", "k"]


def test_background_writer_runs_jobs_in_order_and_flush_waits_for_them():
    out = []
    w = BackgroundWriter(max_bytes=100_000)
    for i in range(50):
        w.put(lambda i=i: (time.sleep(0.001), out.append(i)), SCALAR_JOBS if i % 2 else HISTOGRAMS, cost=1000)
    w.put(lambda: out.append("keep"), KEEP)
    w.flush(timeout=10)
    assert out == list(range(50)) + ["keep"]
    w.close(timeout=10)
    w.put(lambda: out.append("late"), SCALAR_JOBS)   # after close: ignored, never raises
    assert out[-1] == "keep"


def test_a_writer_error_raised_on_the_training_thread_does_not_keep_its_frames_alive():
    import gc
    import weakref

    class Model:  # what the training loop's frame holds
        pass

    def fail():
        raise OSError(28, "No space left on device")

    w = BackgroundWriter(max_bytes=100_000)
    w.put(fail, KEEP)

    def training_loop():
        model = Model()
        with pytest.raises(OSError, match="No space left") as raised:
            w.flush(timeout=10)
        assert raised.value.errno == 28  # the error as the writer met it
        return weakref.ref(model)

    model = training_loop()
    gc.collect()
    assert model() is None  # the writer keeps its error, not the loop that was told of it
    w.close(timeout=10)


def test_a_failing_disk_stops_the_sink_but_not_the_training(tmp_path, monkeypatch, caplog):
    mon = Monitor(logdir=tmp_path, every=1, console=False)
    (sink,) = [s for s in mon._sinks if isinstance(s, tb.TensorBoardSink)]

    def broken(event):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(sink._events, "add_event", broken)
    with caplog.at_level(logging.ERROR, logger="nnhealth"):
        for step in range(20):
            mon.observe_activation("fc1", np.ones((8, 4)), kind="relu")
            mon.step(step, loss=1.0)
            time.sleep(0.005)
        mon.close()
    assert sink not in mon._sinks
    assert "writing files stopped" in caplog.text and "No space left on device" in caplog.text
    assert mon.history.latest_summary("activation", "fc1") is not None


def test_in_a_plain_interpreter_without_close_nothing_is_lost_and_no_tf_or_torch_is_imported(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from nnhealth import Monitor
        before = set(sys.modules)
        mon = Monitor(logdir={str(tmp_path)!r}, every=1, console=False)
        for step in range(300):
            mon.observe_activation("fc1", np.random.default_rng(step).standard_normal((32, 16)), kind="tanh")
            mon.step(step, loss=1.0 / (step + 1))
        heavy = [m for m in ("tensorflow", "torch", "jax") if m in set(sys.modules) - before]
        print("imported:", heavy)
        # no close(): the atexit hook must flush what the writer thread still holds
    """)
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "imported: []" in done.stdout
    acc = read(tmp_path)
    assert [e.step for e in acc.Scalars("loss/train")] == list(range(300))
    assert len(acc.Tensors("nnhealth_state/activation/fc1")) == 300


def test_flush_makes_everything_so_far_readable_while_the_run_goes_on(tmp_path):
    mon = Monitor(logdir=tmp_path, every=1, console=False)
    for step in range(10):
        mon.observe_activation("fc1", np.ones((8, 4)) * step, kind="relu")
        mon.step(step, loss=float(step))
    mon.flush()
    assert [e.value for e in read(tmp_path).Scalars("loss/train")] == [float(s) for s in range(10)]
    mon.close()


@pytest.mark.parametrize("max_bytes", [0, -1])
def test_the_queue_must_hold_something(max_bytes):
    with pytest.raises(ValueError):
        BackgroundWriter(max_bytes=max_bytes)


def test_event_records_are_framed_byte_for_byte_as_tensorboards_own_writer_frames_them(tmp_path):
    import io

    from tensorboard.summary.writer.record_writer import RecordWriter

    from nnhealth.dashboards.event_file import CRC32C_IMPLEMENTATION, EventFile, frame

    for data in (b"", b"x", bytes(range(256)) * 500):
        buf = io.BytesIO()
        RecordWriter(buf).write(data)
        assert frame(data) == buf.getvalue()
    assert CRC32C_IMPLEMENTATION in ("google-crc32c", "crc32c"), "the pure-Python CRC holds the GIL for ms per step"
    a, b = EventFile(tmp_path), EventFile(tmp_path)          # same second, same process: two files
    assert a.path != b.path and a.path.name.startswith("events.out.tfevents.")
    a.close(), b.close()


def test_the_writer_wakes_by_its_period_for_small_jobs_and_at_once_for_kept_ones_or_a_half_full_queue():
    w = BackgroundWriter(max_bytes=100, period=60.0)
    small, big, kept = threading.Event(), threading.Event(), threading.Event()
    w.put(small.set, SCALAR_JOBS, cost=10)       # no wake-up: the training thread pays no system call
    time.sleep(0.2)
    assert not small.is_set()
    w.put(big.set, HISTOGRAMS, cost=45)          # more than half of max_bytes queued: woken
    assert big.wait(10) and small.is_set()
    w.put(kept.set, KEEP)
    assert kept.wait(10)
    w.put(small.clear, SCALAR_JOBS, cost=1)
    w.flush(timeout=10)                          # a flush does not wait for the period either
    assert not small.is_set()
    w.close(timeout=10)


def test_a_dropped_histogram_job_leaves_its_scalar_fallback_in_its_place():
    gate, out = threading.Event(), []
    w = BackgroundWriter(max_bytes=10)
    w.put(lambda: gate.wait(30), KEEP)                      # holds the writer thread
    for name, cost, fallback_cost in (("a", 6, 1), ("b", 6, 2)):   # b does not fit: its fallback is queued
        w.put(lambda name=name: out.append(name), HISTOGRAMS, cost=cost,
              fallback=(lambda name=name: out.append(name + " scalars"), fallback_cost, 3))
    w.put(lambda: out.append("s"), SCALAR_JOBS, cost=4)     # evicts a, whose fallback stays first
    w.put(lambda: out.append("t"), SCALAR_JOBS, cost=4)     # no histogram left to evict: dropped
    assert w.dropped == {"scalars": 1, "histograms": 2}
    gate.set()
    w.close(timeout=10)
    assert out == ["a scalars", "b scalars", "s"]
