"""Nothing lost, nothing unbounded: a killed run, a full disk, a deleted log folder, a long run.

Already covered elsewhere (not repeated here): findings.jsonl written before
close (tests/test_monitor.py::test_findings_file_is_appended_as_findings_happen),
files complete after SIGTERM or exit without close
(tests/test_lifecycle.py::test_files_are_complete_after_sigterm_or_exit_without_close,
tests/test_dashboards_background.py::test_in_a_plain_interpreter_without_close_nothing_is_lost_and_no_tf_or_torch_is_imported),
a step never waits for a stalled disk and the bounded writer queue drops
histograms before scalars, counting them
(tests/test_dashboards_background.py::test_a_step_does_not_wait_for_a_stalled_disk,
test_a_full_queue_drops_histograms_first_and_counts_what_it_dropped), damaged
event files read as far as they go (tests/test_check_robust.py).
"""
from __future__ import annotations

import errno
import gc
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from nnhealth import Monitor  # noqa: E402
from nnhealth.dashboards.run_data import read_run  # noqa: E402
from nnhealth.dashboards.tensorboard import TensorBoardSink  # noqa: E402
from nnhealth.sinks import FindingsFile  # noqa: E402
from nnhealth.sinks.jsonl import read_findings  # noqa: E402

#: a training that runs until it is killed; its second ReLU layer is dead from the start
TRAINING = textwrap.dedent("""
    import sys
    import torch
    import torch.nn.functional as F
    from torch import nn
    from nnhealth import Monitor

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    with torch.no_grad():
        model[2].bias.fill_(-30.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    mon = Monitor(logdir=sys.argv[1], every=5, num_classes=4).watch(model, opt)
    x, y = torch.randn(256, 16), torch.randint(0, 4, (256,))
    step = 0
    while True:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.step(step, loss=loss)
        print(step, flush=True)
        step += 1
""")

#: a console line: "nnhealth <severity> <symptom> at step <n> [<where>]: ..."
CONSOLE_LINE = re.compile(r"^nnhealth (?:info|warning|critical) (\S+) at step (\d+)(?: \[([^\]]+)\])?")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def nnhealth_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nnhealth", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_after_kill_9_mid_run_everything_written_is_readable(tmp_path):
    logdir = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-c", TRAINING, str(logdir)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        # mid-run: the dead layer was reported and the event file holds a few hundred kB
        while not (logdir / "findings.jsonl").is_file() or (logdir / "findings.jsonl").stat().st_size == 0 or sum(
                p.stat().st_size for p in logdir.glob("events.out.tfevents.*")) < 300_000:
            assert child.poll() is None, child.stderr.read()
            assert time.monotonic() < deadline, "the training never got going"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        out, err = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == -signal.SIGKILL
    steps_done = int(out.split()[-1]) + 1

    # findings.jsonl is intact: every line is a whole finding, and every finding the console showed is there
    lines = (logdir / "findings.jsonl").read_text().splitlines()
    recorded = [json.loads(line) for line in lines]
    shown = [m.groups() for m in map(CONSOLE_LINE.match, err.splitlines()) if m]
    assert ("dead-relu", "3") in {(symptom, where) for symptom, _, where in shown}
    assert {(f["symptom"], str(f["step"]), f["where"]) for f in recorded} >= set(shown)
    assert read_findings(logdir / "findings.jsonl")[1] == []

    # nnhealth check reads it all, and finds the dead layer again in the recorded layer statistics
    done = nnhealth_cli("check", "--json", logdir)
    assert done.returncode == 1, done.stderr
    (report,) = json.loads(done.stdout)
    assert ("dead-relu", "3") in {(f["symptom"], f["where"]) for f in report["findings"]}
    assert all("truncated last record" in p for p in report["problems"]), report["problems"]
    # what it read is what TensorBoard's own reader reads from the same files
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    written = [e.step for e in acc.Scalars("loss/train")]
    assert 0 < len(written) <= steps_done and report["steps"] >= len(written) - 1
    # and so does the report's reader
    run = read_run(logdir)
    assert list(run.scalars["loss/train"][0]) == written
    assert ("dead-relu", "3") in {(f.symptom, f.where) for f in run.findings}


# -- a full disk, a deleted folder --------------------------------------------------------------------


class FullDisk:
    """A file on a disk that just filled up: every write fails with ENOSPC; the rest is the real file's."""

    def __init__(self, fh):
        self._fh = fh

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._fh, name)


def training(mon: Monitor, steps: int, on_step=None):
    """A net whose ReLU layer dies at step 40 (bias pushed down) and whose loss turns NaN at step 70."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon.watch(model, opt)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    for step in range(steps):
        if on_step is not None:
            on_step(step)
        if step == 40:
            with torch.no_grad():
                model[0].bias.fill_(-50.0)
        loss = F.cross_entropy(model(x), y) * (float("nan") if step >= 70 else 1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.step(step, loss=loss)
    mon.close()
    return model


def lines_after(caplog, text: str) -> tuple[list[str], list[str]]:
    """Messages of the nnhealth logger matching ``text``, and the finding lines logged after the first one."""
    messages = [r.getMessage() for r in caplog.records if r.name == "nnhealth"]
    hits = [m for m in messages if text in m]
    if not hits:
        return [], []
    after = messages[messages.index(hits[0]) + 1:]
    return hits, [m for m in after if CONSOLE_LINE.match(m)]


def test_a_full_disk_stops_the_files_with_one_message_and_the_console_goes_on(tmp_path, caplog):
    mon = Monitor(logdir=tmp_path, every=5)

    def fill_disk(step):
        if step == 65:  # after dead-relu was found, before the loss turns NaN
            mon.flush()  # steps 0-64 are on disk: what the writer thread still held would be lost too
            for sink in mon._sinks:
                if isinstance(sink, FindingsFile):
                    sink._fh = FullDisk(sink._fh)
                if isinstance(sink, TensorBoardSink):
                    sink._events._fh = FullDisk(sink._events._fh)

    with caplog.at_level(logging.INFO, logger="nnhealth"):
        training(mon, 100, on_step=fill_disk)
    stopped, later = lines_after(caplog, "writing files stopped")
    assert stopped == [f"nnhealth: writing files stopped ({tmp_path}: No space left on device); console warnings "
                       "continue"]
    assert "loss-nan" in {CONSOLE_LINE.match(m).group(1) for m in later}
    assert not [r for r in caplog.records if r.exc_info]  # a full disk is no bug: no traceback
    # what was written before the disk filled is readable: the findings, and the steps to find them again
    before = [f.symptom for f in mon.findings if f.step < 65]
    assert "dead-relu" in before
    assert [f.symptom for f in read_findings(tmp_path / "findings.jsonl")[0]] == before
    done = nnhealth_cli("check", "--json", tmp_path)
    (report,) = json.loads(done.stdout)
    assert report["problems"] == [] and report["steps"] == 65
    assert "dead-relu" in {f["symptom"] for f in report["findings"]}


def small_disk(path, size: str):
    """Mount a tmpfs of ``size`` at ``path``; skips the test where that is not allowed."""
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("mounting a small tmpfs is not allowed here (needs root and CAP_SYS_ADMIN)")


@pytest.mark.skipif(not sys.platform.startswith("linux") or not shutil.which("mount"), reason="needs Linux mount")
def test_a_really_full_disk(tmp_path, caplog):
    disk = tmp_path / "small"
    small_disk(disk, "256k")
    try:
        mon = Monitor(logdir=disk / "run", every=1)
        with caplog.at_level(logging.INFO, logger="nnhealth"):
            training(mon, 100)
        stopped, later = lines_after(caplog, "writing files stopped")
        gc.collect()
        unmounted = subprocess.run(["umount", str(disk)], capture_output=True, text=True)
    finally:
        if os.path.ismount(disk):
            subprocess.run(["umount", "-l", str(disk)], check=False)
    assert unmounted.returncode == 0, f"a file on the full disk is still open after close(): {unmounted.stderr}"
    assert stopped == [f"nnhealth: writing files stopped ({disk / 'run'}: No space left on device); console "
                       "warnings continue"]
    assert "loss-nan" in {CONSOLE_LINE.match(m).group(1) for m in later}


def test_a_deleted_log_folder_stops_the_files_with_one_message_and_the_console_goes_on(tmp_path, caplog):
    logdir = tmp_path / "run"
    mon = Monitor(logdir=logdir, every=5)

    def delete_folder(step):
        if step == 20:
            shutil.rmtree(logdir)

    with caplog.at_level(logging.INFO, logger="nnhealth"):
        training(mon, 100, on_step=delete_folder)
    stopped, later = lines_after(caplog, "writing files stopped")
    assert stopped == [f"nnhealth: writing files stopped ({logdir}: deleted while the run was writing to it); "
                       "console warnings continue"]
    assert "loss-nan" in {CONSOLE_LINE.match(m).group(1) for m in later}
    assert not logdir.exists()  # nothing is written anywhere else behind the user's back


def test_a_deleted_folder_is_noticed_at_close_even_without_findings(tmp_path, caplog):
    logdir = tmp_path / "run"
    mon = Monitor(logdir=logdir, every=1, console=False)
    mon.step(0, loss=1.0)
    shutil.rmtree(logdir)
    mon.step(1, loss=1.0)
    with caplog.at_level(logging.INFO, logger="nnhealth"):
        mon.close()
    assert [r.getMessage() for r in caplog.records if "writing files stopped" in r.getMessage()] == [
        f"nnhealth: writing files stopped ({logdir}: deleted while the run was writing to it); console warnings "
        "continue"]


# -- bounded -------------------------------------------------------------------------------------------


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc/self/fd")
def test_memory_threads_and_open_files_stay_bounded_over_a_long_run(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    mon = Monitor(logdir=tmp_path, every=1, console=False, history_capacity=50).watch(model, opt)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))

    def steps(first, n):
        for step in range(first, first + n):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.step(step, loss=loss, val_loss=loss.item() * 1.1, train_acc=0.5, val_acc=0.5)

    def measure():
        mon.flush()
        gc.collect()
        return tracemalloc.get_traced_memory()[0], open_files(), threading.active_count()

    tracemalloc.start()               # from the start: what the ring buffers drop later is traced too
    try:
        steps(0, 100)                 # the history fills up to its capacity (twice)
        before = measure()
        steps(100, 200)
        after = measure()
    finally:
        tracemalloc.stop()
    mon.close()
    grown = after[0] - before[0]
    assert grown < 128 * 1024, f"Python memory grew by {grown / 1024:.0f} kB over 200 more steps"
    assert after[1:] == before[1:]    # no file or thread opened per step


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc/self/fd")
def test_many_monitors_one_after_the_other_leave_no_file_or_thread_open(tmp_path):
    """A hyperparameter search makes a Monitor per trial: each close() gives its files and thread back."""
    Monitor(logdir=tmp_path / "warm-up", console=False).close()
    files, threads = open_files(), threading.active_count()
    for trial in range(20):
        mon = Monitor(logdir=tmp_path / f"trial{trial}", every=1, console=False)
        for step in range(5):
            mon.step(step, loss=1.0 / (step + 1))
        mon.close()
    assert (open_files(), threading.active_count()) == (files, threads)
