"""Damaged and odd log folders: every problem named with its file, everything readable still checked."""
from __future__ import annotations

import json

import pytest
from torch.utils.tensorboard import SummaryWriter

from logs_writers import event_file, flip_byte, record_offsets, train, truncate_mid_record, write_torch
from nnhealth.cli import main


def run_check(capsys, *args) -> tuple[int, str, str]:
    status = main(["check", *map(str, args)])
    out = capsys.readouterr()
    return status, out.out, out.err


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """A log folder as a crash and a bad disk leave it, next to runs that are fine."""
    root = tmp_path_factory.mktemp("damaged")
    write_torch(root / "healthy", train("healthy"))
    # killed mid-write at step ~250, long after its loss exploded at step ~102
    write_torch(root / "killed", train("explode"))
    killed = event_file(root / "killed")
    truncate_mid_record(killed, int(len(record_offsets(killed)) * 0.8))
    # one record in the middle of the overfit run's file is corrupt
    write_torch(root / "bitrot", train("overfit"))
    bitrot = event_file(root / "bitrot")
    corrupt_at = record_offsets(bitrot)[200]
    flip_byte(bitrot, corrupt_at + 20)
    # a writer that never wrote anything, and a file that is not an event file at all
    (root / "never_wrote").mkdir()
    (root / "never_wrote" / "events.out.tfevents.1700000000.host.1.0").write_bytes(b"")
    (root / "not_events").mkdir()
    (root / "not_events" / "events.out.tfevents.1700000000.host.2.0").write_text("these are not records\n" * 20)
    # a folder without event files is not a run (as in TensorBoard)
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / "model.pt").write_bytes(b"\0" * 100)
    # a run whose tags nnhealth does not know
    with SummaryWriter(str(root / "unknown_tags")) as w:
        for step in range(20):
            w.add_scalar("lr", 0.1, step)
            w.add_scalar("objective", 2.0 / (step + 1), step)
    return root, killed, bitrot, corrupt_at


def test_damaged_files_are_named_and_the_readable_runs_are_still_checked(damaged, capsys):
    root, killed, bitrot, corrupt_at = damaged
    status = main(["check", "--json", str(root)])
    reports = {r["run"].rsplit("/", 1)[-1]: r for r in json.loads(capsys.readouterr().out)}
    assert status == 1
    assert sorted(reports) == ["bitrot", "healthy", "killed", "never_wrote", "not_events", "unknown_tags"]
    assert [f["symptom"] for f in reports["killed"]["findings"]] == ["loss-exploding"]
    (cut,) = reports["killed"]["problems"]
    assert cut.startswith(f"{killed}: truncated last record at byte ") and "killed mid-write" in cut
    assert [f["symptom"] for f in reports["bitrot"]["findings"]] == ["overfitting"]
    (rot,) = reports["bitrot"]["problems"]
    assert rot.startswith(f"{bitrot}: corrupt record at byte {corrupt_at}") and "skipped" in rot
    assert reports["healthy"]["findings"] == [] and reports["healthy"]["problems"] == []
    assert reports["never_wrote"]["problems"] == [
        f"{root / 'never_wrote'}: no summaries in its event files (events.out.tfevents.1700000000.host.1.0)"]
    (garbage,) = reports["not_events"]["problems"]
    assert "not a TensorBoard event file" in garbage and "events.out.tfevents.1700000000.host.2.0" in garbage
    (unknown,) = reports["unknown_tags"]["problems"]
    assert unknown == (f"{root / 'unknown_tags'}: no known tags: none of its tags is a loss or accuracy curve "
                       "nnhealth knows (found: lr, objective); map one with --tag loss=TAG")


def test_the_table_shows_problems_under_their_run(damaged, capsys):
    root, killed, _, _ = damaged
    status, out, _ = run_check(capsys, root / "killed")
    assert status == 1
    assert "critical  loss-exploding" in out
    assert f"problem: {killed}: truncated last record" in " ".join(out.split())
    assert out.splitlines()[-1].endswith("1 problem reading the logs")


def test_a_folder_with_nothing_checkable_is_exit_status_2(damaged, capsys, tmp_path):
    root, *_ = damaged
    status, _, err = run_check(capsys, root / "unknown_tags")
    assert status == 2 and "nothing nnhealth can check" not in err
    assert "no run holds a curve or recorded finding nnhealth can check" in err
    status, out, err = run_check(capsys, tmp_path)
    assert status == 2 and out == ""
    assert err == f"nnhealth check: error: no TensorBoard event files (nor findings.jsonl) under {tmp_path}\n"


def test_an_empty_logdir_next_to_a_good_one_is_mentioned(damaged, capsys, tmp_path):
    root, *_ = damaged
    status, _, err = run_check(capsys, root / "healthy", tmp_path)
    assert status == 0
    assert f"{tmp_path}: no TensorBoard event files (nor findings.jsonl) under it" in err


@pytest.mark.parametrize("args, message", [
    (["/no/such/dir"], "/no/such/dir: no such directory"),
    (["{file}"], "not a directory"),
    (["{dir}", "--set", "dead-rellu.max_dead_fraction=0.7"],
     "unknown rule id 'dead-rellu' (did you mean 'dead-relu'?)"),
    (["{dir}", "--set", "dead-relu.max_dead=0.7"], "rule dead-relu has no threshold 'max_dead'"),
    (["{dir}", "--set", "dead-relu.max_dead_fraction=seven"], "threshold value 'seven' is not a number"),
    (["{dir}", "--set", "dead-relu.max_dead_fraction=1.5"], "is a fraction and must lie in [0, 1]"),
    (["{dir}", "--set", "dead-relu"], "expected RULE.NAME=VALUE"),
    (["{dir}", "--tag", "loss"], "expected SIGNAL=TAG"),
    (["{dir}", "--tag", "lose=Loss/train"], "unknown signal 'lose'"),
    (["{dir}", "--num-classes", "1"], "--num-classes must be at least 2"),
])
def test_usage_errors_are_exit_status_2(damaged, capsys, args, message):
    root, *_ = damaged
    args = [a.format(file=event_file(root / "healthy"), dir=root / "healthy") for a in args]
    status, out, err = run_check(capsys, *args)
    assert status == 2 and out == ""
    assert err.startswith("nnhealth check: error: ") and message in err


def test_argparse_refuses_unknown_choices(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["check", str(tmp_path), "--fail-on", "fatal"])
    assert e.value.code == 2


def test_a_resumed_run_drops_the_abandoned_steps_as_tensorboard_does(tmp_path, capsys):
    """Resumed from a checkpoint at step 150 after a first attempt reached 200: steps 150-199 of the first
    attempt are dropped, and the explosion that happened only in the first attempt is gone with them."""
    healthy, explode = train("healthy"), train("explode")
    with SummaryWriter(str(tmp_path / "run"), filename_suffix=".0") as w:
        for r in explode[:200]:
            w.add_scalar("Loss/train", r["loss"] if r["step"] >= 150 else healthy[r["step"]]["loss"], r["step"])
    with SummaryWriter(str(tmp_path / "run"), filename_suffix=".1") as w:
        for r in healthy[150:]:
            w.add_scalar("Loss/train", r["loss"], r["step"])
    status, out, _ = run_check(capsys, tmp_path / "run", "--json")
    (report,) = json.loads(out)
    assert status == 0 and report["findings"] == [] and report["steps"] == 300
    assert report["notes"] == ["Loss/train went back from step 199 to 150 (a resumed run): the 50 later points "
                               "of the earlier attempt are dropped, as TensorBoard does"]
