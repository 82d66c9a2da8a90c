"""Nothing is lost when a run is stopped: SIGTERM and normal interpreter exit flush the files."""
import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest

SCRIPT = textwrap.dedent("""
    import sys, time
    from nnhealth import Monitor
    mon = Monitor(logdir=sys.argv[1], every=1, console=False)
    for step in range(50):
        mon.step(step, loss=2.0 + (100.0 if step >= 10 else 0.0))
    print("ready", flush=True)
    if sys.argv[2] == "wait":
        time.sleep(60)
""")


def scalars(logdir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return [e.value for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []


@pytest.mark.parametrize("how", ["sigterm", "exit"])
def test_files_are_complete_after_sigterm_or_exit_without_close(tmp_path, how):
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path), "wait" if how == "sigterm" else "exit"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        if how == "sigterm":
            time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        proc.kill()
    assert code == (-signal.SIGTERM if how == "sigterm" else 0)
    symptoms = [json.loads(l)["symptom"] for l in (tmp_path / "findings.jsonl").read_text().splitlines()]
    assert symptoms[0] == "loss-exploding"
    assert len(scalars(tmp_path, "loss/train")) == 50


def test_a_user_sigterm_handler_is_left_alone():
    code = textwrap.dedent("""
        import signal
        def mine(signum, frame):
            pass
        signal.signal(signal.SIGTERM, mine)
        from nnhealth import Monitor
        Monitor(console=False)
        assert signal.getsignal(signal.SIGTERM) is mine
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
