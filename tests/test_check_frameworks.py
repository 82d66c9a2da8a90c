"""nnhealth check on logs written by other tools' own writers: exactly the expected findings, right exit status.

Three real PyTorch trainings (healthy; a learning rate raised 60x at step 100,
which spikes the loss far above 3x its start before it settles near chance;
60 training samples for a wide net, which overfits) are logged the way
PyTorch, Lightning, Hugging Face and Keras log them.
"""
from __future__ import annotations

import json
import math

import pytest

from logs_writers import HUGGING_FACE, LIGHTNING, per_epoch, train, write_keras, write_torch
from nnhealth.cli import main


def check(capsys, *args) -> tuple[int, str]:
    status = main(["check", *map(str, args)])
    out = capsys.readouterr()
    return status, out.out + out.err


def check_json(capsys, *args) -> tuple[int, list[dict]]:
    status = main(["check", "--json", *map(str, args)])
    return status, json.loads(capsys.readouterr().out)


def symptoms(report: dict) -> list[tuple[str, str]]:
    return [(f["symptom"], f["severity"]) for f in report["findings"]]


@pytest.fixture(scope="module")
def torch_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for kind in ("healthy", "explode", "overfit"):
        write_torch(root / kind, train(kind))
    return root


@pytest.fixture(scope="module")
def keras_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs_fit")
    for kind in ("healthy", "explode", "overfit"):
        write_keras(root / kind, per_epoch(train(kind, val_every=10)))
    return root


def test_pytorch_summarywriter_runs(torch_runs, capsys):
    status, reports = check_json(capsys, torch_runs)
    assert status == 1
    by_run = {r["run"].rsplit("/", 1)[-1]: r for r in reports}
    assert symptoms(by_run["healthy"]) == []
    assert symptoms(by_run["explode"]) == [("loss-exploding", "critical")]
    assert symptoms(by_run["overfit"]) == [("overfitting", "warning")]
    explosion = by_run["explode"]["findings"][0]
    assert 100 < explosion["step"] <= 110 and explosion["evidence"]["ratio"] > 3
    assert by_run["explode"]["signals"] == {"loss": "Loss/train", "val_loss": "Loss/val",
                                            "train_acc": "Accuracy/train", "val_acc": "Accuracy/val"}
    assert all(r["preset"] == "step" and r["axis"] == "step" and r["problems"] == [] for r in reports)
    assert by_run["healthy"]["steps"] == 300


def test_keras_shaped_runs_with_train_and_validation_folders(keras_runs, capsys):
    status, reports = check_json(capsys, keras_runs)
    assert status == 1
    by_run = {r["run"].rsplit("/", 1)[-1]: r for r in reports}
    assert len(reports) == 3  # train/ and validation/ are halves of one run
    assert symptoms(by_run["healthy"]) == []
    assert symptoms(by_run["explode"]) == [("loss-exploding", "critical")]
    assert symptoms(by_run["overfit"]) == [("overfitting", "warning")]
    assert by_run["explode"]["findings"][0]["step"] == 10  # the epoch the learning rate was raised
    for r in reports:
        assert r["axis"] == "epoch" and r["preset"] == "epoch"
        assert r["signals"] == {"loss": "train/epoch_loss", "val_loss": "validation/epoch_loss",
                                "train_acc": "train/epoch_accuracy", "val_acc": "validation/epoch_accuracy"}


def test_an_explosion_that_settles_back_near_chance_is_still_an_explosion(keras_runs, capsys):
    epochs = per_epoch(train("explode", val_every=10))
    assert max(e["loss"] for e in epochs) > 3 * epochs[0]["loss"]
    assert abs(epochs[-1]["loss"] - math.log(10)) < 0.3  # where it ended: chance level
    status, text = check(capsys, keras_runs / "explode")
    assert status == 1
    assert "critical  loss-exploding" in text and "epoch 10" in text
    assert "judging stopped at epoch 10 after a critical finding" in text


def test_the_table_names_each_run_what_was_read_and_the_advice(torch_runs, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # the table fits the terminal: a wide one here
    status, text = check(capsys, torch_runs / "overfit")
    assert status == 1
    lines = text.splitlines()
    assert lines[0] == str(torch_runs / "overfit")
    assert lines[1].startswith("  read loss=Loss/train, val_loss=Loss/val, train_acc=Accuracy/train, "
                               "val_acc=Accuracy/val; 300 steps replayed, per-step thresholds")
    assert lines[2].split() == ["severity", "symptom", "where", "first", "step", "evidence", "advice"]
    assert lines[3].split()[:3] == ["warning", "overfitting", "-"]
    assert "Increase regularisation" in text
    assert lines[-1] == ("nnhealth check: 1 run checked; 1 finding (1 warning); 1 run with findings at or "
                         "above warning")


def test_a_healthy_run_exits_zero(torch_runs, keras_runs, capsys):
    assert check(capsys, torch_runs / "healthy", keras_runs / "healthy")[0] == 0


def test_fail_on_sets_the_severity_that_fails(torch_runs, capsys):
    assert check(capsys, torch_runs / "overfit", "--fail-on", "critical")[0] == 0
    assert check(capsys, torch_runs / "explode", "--fail-on", "critical")[0] == 1
    assert check(capsys, torch_runs / "overfit", "--fail-on", "info")[0] == 1


def test_lightning_names_with_the_epoch_tag(tmp_path, capsys):
    write_torch(tmp_path / "lightning_logs" / "version_0", train("overfit"), names=LIGHTNING, epoch_tag="epoch")
    status, (report,) = check_json(capsys, tmp_path / "lightning_logs")
    assert status == 1
    assert report["signals"] == {"loss": "train_loss", "val_loss": "val_loss", "train_acc": "train_acc",
                                 "val_acc": "val_acc", "epoch": "epoch"}
    (finding,) = report["findings"]
    assert finding["symptom"] == "overfitting" and finding["epoch"] == finding["step"] // 50
    assert check(capsys, tmp_path / "lightning_logs")[1].count(f"{finding['step']} (epoch {finding['epoch']})") == 1


def test_hugging_face_names_overfit_from_the_validation_loss_alone(tmp_path, capsys):
    """The Trainer logs no training accuracy: overfitting shows as eval/loss rising while train/loss falls."""
    write_torch(tmp_path / "hf", train("overfit"), names=HUGGING_FACE)
    status, (report,) = check_json(capsys, tmp_path / "hf")
    assert status == 1
    assert report["signals"] == {"loss": "train/loss", "val_loss": "eval/loss", "val_acc": "eval/accuracy"}
    (finding,) = report["findings"]
    assert finding["symptom"] == "overfitting" and "best_val_loss" in finding["evidence"]


def test_initial_loss_needs_num_classes(tmp_path, capsys):
    """A loss summed over the batch instead of averaged starts far above ln(C)."""
    rows = [dict(r, loss=r["loss"] * 64) for r in train("healthy")]
    write_torch(tmp_path / "summed", rows)
    assert check_json(capsys, tmp_path / "summed")[1][0]["findings"] == []
    status, (report,) = check_json(capsys, tmp_path / "summed", "--num-classes", "10")
    assert status == 1
    assert symptoms(report) == [("initial-loss-unexpected", "warning")]
    assert report["findings"][0]["evidence"]["num_classes"] == 10


def test_percent_accuracies_are_read_as_fractions(tmp_path, capsys):
    rows = [{k: (v * 100 if k in ("acc", "val_acc") else v) for k, v in r.items()} for r in train("healthy")]
    write_torch(tmp_path / "percent", rows)
    status, (report,) = check_json(capsys, tmp_path / "percent")
    assert status == 0 and report["findings"] == []
    assert "Accuracy/train looks like a percentage: divided by 100" in report["notes"]


def test_a_short_per_epoch_pytorch_log_gets_the_per_epoch_preset(tmp_path, capsys):
    """A loop that logs once per epoch with step=epoch: 30 points, judged with the per-epoch thresholds."""
    epochs = per_epoch(train("explode", val_every=10))
    rows = [{"step": i, "loss": e["loss"], "acc": e["accuracy"], "val_loss": e["val_loss"],
             "val_acc": e["val_accuracy"]} for i, e in enumerate(epochs)]
    write_torch(tmp_path / "per_epoch", rows)
    status, (report,) = check_json(capsys, tmp_path / "per_epoch")
    assert status == 1 and report["preset"] == "epoch"
    assert symptoms(report) == [("loss-exploding", "critical")]
    assert "only 30 points" in report["notes"][0]
    status, (forced,) = check_json(capsys, tmp_path / "per_epoch", "--preset", "step")
    assert forced["preset"] == "step"


def test_set_changes_a_threshold_after_the_fact(torch_runs, capsys):
    status, (report,) = check_json(capsys, torch_runs / "overfit", "--set", "overfitting.max_gap=0.5")
    assert status == 1 and "best_val_loss" in report["findings"][0]["evidence"]  # the other branch still fires
    status, (report,) = check_json(capsys, torch_runs / "overfit", "--set", "overfitting.max_gap=0.5",
                                   "--set", "overfitting.val_loss_rise_fraction=1")
    assert status == 0 and report["findings"] == []


def test_tag_override_reads_a_curve_the_table_does_not_know(tmp_path, capsys):
    write_torch(tmp_path / "custom", train("explode"), names={"loss": "objective/xent", "acc": "metric/top1"})
    status, (report,) = check_json(capsys, tmp_path / "custom")
    assert status == 2 and report["steps"] == 0
    assert "no known tags" in report["problems"][0] and "objective/xent" in report["problems"][0]
    status, (report,) = check_json(capsys, tmp_path / "custom", "--tag", "loss=objective/xent")
    assert status == 1 and symptoms(report) == [("loss-exploding", "critical")]
