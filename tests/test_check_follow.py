"""nnhealth check --follow: findings printed while another process is still writing the run."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from logs_writers import per_epoch, train, write_keras, write_torch
from nnhealth.cli import main
from nnhealth.logs.session import Session

#: a training loop's logging, replayed at ~50 steps a second by another process
WRITER = """
import json, sys, time
from torch.utils.tensorboard import SummaryWriter
rows = json.load(open(sys.argv[2]))
with SummaryWriter(sys.argv[1], flush_secs=1) as w:
    print("writing", flush=True)
    for r in rows:
        w.add_scalar("Loss/train", r["loss"], r["step"])
        w.add_scalar("Accuracy/train", r["acc"], r["step"])
        if "val_loss" in r:
            w.add_scalar("Loss/val", r["val_loss"], r["step"])
            w.add_scalar("Accuracy/val", r["val_acc"], r["step"])
        if r["step"] % 10 == 9:
            w.flush()
        time.sleep(0.02)
"""


class Lines:
    """Collects a process's output lines with the time each one arrived."""

    def __init__(self, stream):
        self.lines: list[tuple[float, str]] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream):
        for line in stream:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def join(self):
        self._thread.join(timeout=30)


def test_follow_prints_findings_while_another_process_writes(tmp_path):
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps(train("explode")))
    logdir = tmp_path / "runs"
    logdir.mkdir()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    check = subprocess.Popen([sys.executable, "-m", "nnhealth", "check", str(logdir), "--follow", "--json",
                              "--interval", "0.2", "--timeout", "120"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out = Lines(check.stdout)
    try:
        writer = subprocess.run([sys.executable, "-c", WRITER, str(logdir / "exp1"), str(rows)],
                                capture_output=True, text=True, timeout=120)
        writer_done = time.monotonic()
        assert writer.returncode == 0, writer.stderr
        time.sleep(0.5)
        check.send_signal(signal.SIGINT)  # Ctrl-C: a last read, the summary, the exit status
        status = check.wait(timeout=60)
    finally:
        if check.poll() is None:
            check.kill()
    out.join()
    assert status == 1, check.stderr.read()
    events = [(t, json.loads(line)) for t, line in out.lines]
    findings = [(t, e) for t, e in events if e["event"] == "finding"]
    assert [e["finding"]["symptom"] for _, e in findings] == ["loss-exploding"]
    t_found, found = findings[0]
    assert found["run"] == str(logdir / "exp1")
    assert t_found < writer_done  # printed while the writer was still writing (~4 s after the explosion)
    summary = events[-1][1]
    assert summary["event"] == "summary"
    (run,) = summary["runs"]
    assert run["problems"] == [] and run["steps"] == 103 and "judging stopped at step 102" in run["notes"][0]


def test_follow_prints_one_line_per_finding_then_the_table(tmp_path, capsys):
    write_torch(tmp_path / "exp1", train("overfit"))
    status = main(["check", str(tmp_path), "--follow", "--timeout", "0"])
    lines = capsys.readouterr().out.splitlines()
    assert status == 1
    assert lines[0].startswith(f"{tmp_path / 'exp1'}: nnhealth warning overfitting at step ")
    assert "train accuracy 1.00 vs validation" in lines[0] and "-> Increase regularisation" in lines[0]
    assert lines[1] == "" and lines[2] == str(tmp_path / "exp1")
    assert lines[-1].startswith("nnhealth check: 1 run checked; 1 finding")


def test_follow_waits_for_a_run_that_has_not_started(tmp_path, capsys):
    started = time.monotonic()
    status = main(["check", str(tmp_path), "--follow", "--interval", "0.1", "--timeout", "0.5"])
    err = capsys.readouterr().err
    assert status == 2 and time.monotonic() - started >= 0.5
    assert "no TensorBoard event files" in err


def test_findings_file_is_followed_too(tmp_path, capsys):
    from nnhealth import Monitor

    mon = Monitor(logdir=tmp_path / "run", tensorboard=False, console=False)
    for step, loss in enumerate([2.3, 2.2, float("nan")]):
        mon.step(step, loss=loss)
    mon.close()
    assert main(["check", str(tmp_path), "--follow", "--timeout", "0"]) == 1
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"{tmp_path / 'run'}: nnhealth critical loss-nan at step 2") and "(recorded)" in first
    assert Path(tmp_path / "run" / "findings.jsonl").exists()


def test_a_validation_folder_that_appears_later_joins_its_run(tmp_path):
    """Keras writes train/ first; validation/ appears at the end of the first epoch."""
    write_keras(tmp_path / "written", per_epoch(train("overfit", val_every=10)))
    logdir = tmp_path / "logs" / "fit"
    logdir.mkdir(parents=True)
    shutil.copytree(tmp_path / "written" / "train", logdir / "train")
    session = Session([tmp_path / "logs"])
    (report,) = session.poll()
    assert report["run"] == str(tmp_path / "logs" / "fit") and set(report["signals"]) == {"loss", "train_acc"}
    assert report["findings"] == []
    shutil.copytree(tmp_path / "written" / "validation", logdir / "validation")
    (report,) = session.poll(final=True)
    assert report["signals"]["val_acc"] == "validation/epoch_accuracy"
    assert [f["symptom"] for f in report["findings"]] == ["overfitting"]
