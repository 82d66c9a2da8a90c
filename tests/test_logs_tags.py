"""The tag table: every tool's names map to the rules' signals, on one step axis, and can be overridden."""
from __future__ import annotations

from pathlib import Path

import pytest

from nnhealth.logs import presets, tags
from nnhealth.logs.tags import parse_override, resolve

DOCS = Path(__file__).resolve().parents[1] / "docs" / "check.md"


@pytest.mark.parametrize("present, expected", [
    (["Loss/train", "Loss/val", "Accuracy/train", "Accuracy/val"],
     {"loss": "Loss/train", "val_loss": "Loss/val", "train_acc": "Accuracy/train", "val_acc": "Accuracy/val"}),
    (["Loss/train", "Loss/test", "Accuracy/train", "Accuracy/test"],
     {"loss": "Loss/train", "val_loss": "Loss/test", "train_acc": "Accuracy/train", "val_acc": "Accuracy/test"}),
    (["train_loss", "val_loss", "train_acc", "val_acc", "epoch"],
     {"loss": "train_loss", "val_loss": "val_loss", "train_acc": "train_acc", "val_acc": "val_acc",
      "epoch": "epoch"}),
    (["train/loss", "eval/loss", "eval/accuracy", "train/epoch", "train/learning_rate", "train/grad_norm"],
     {"loss": "train/loss", "val_loss": "eval/loss", "val_acc": "eval/accuracy", "epoch": "train/epoch"}),
    (["loss/train", "loss/val", "accuracy/train", "accuracy/val", "activation_std/layer0", "gap/loss"],
     {"loss": "loss/train", "val_loss": "loss/val", "train_acc": "accuracy/train", "val_acc": "accuracy/val"}),
    (["loss", "val_loss", "accuracy", "val_accuracy"],
     {"loss": "loss", "val_loss": "val_loss", "train_acc": "accuracy", "val_acc": "val_accuracy"}),
])
def test_each_tools_names_map_to_the_signals(present, expected):
    m = resolve(present)
    assert m.signals == expected
    assert not m.epoch_axis and not m.per_epoch


def test_keras_epoch_tags_from_train_and_validation_folders_are_on_the_epoch_axis():
    m = resolve(["train/epoch_loss", "train/epoch_sparse_categorical_accuracy", "train/epoch_learning_rate",
                 "validation/epoch_loss", "validation/epoch_sparse_categorical_accuracy",
                 "validation/evaluation_loss_vs_iterations"])
    assert m.signals == {"loss": "train/epoch_loss", "val_loss": "validation/epoch_loss",
                         "train_acc": "train/epoch_sparse_categorical_accuracy",
                         "val_acc": "validation/epoch_sparse_categorical_accuracy"}
    assert m.epoch_axis and m.per_epoch
    assert m.notes == ()


def test_keras_batch_curves_and_epoch_curves_are_never_mixed():
    """update_freq='batch' logs batch_* per step and epoch_* per epoch: the axis covering most signals wins."""
    m = resolve(["train/batch_loss", "train/batch_accuracy", "train/epoch_loss", "train/epoch_accuracy",
                 "validation/epoch_loss", "validation/epoch_accuracy"])
    assert m.epoch_axis and m.signals["loss"] == "train/epoch_loss"
    with_iterations = resolve(["train/batch_loss", "train/batch_accuracy", "train/epoch_loss",
                               "validation/epoch_loss", "validation/evaluation_loss_vs_iterations",
                               "validation/evaluation_accuracy_vs_iterations"])
    assert not with_iterations.epoch_axis
    assert with_iterations.signals == {
        "loss": "train/batch_loss", "val_loss": "validation/evaluation_loss_vs_iterations",
        "train_acc": "train/batch_accuracy", "val_acc": "validation/evaluation_accuracy_vs_iterations"}


def test_a_curve_on_the_other_axis_is_named_in_a_note():
    m = resolve(["Loss/train", "validation/epoch_loss"])
    assert m.signals == {"loss": "Loss/train"}
    assert m.notes == ("validation/epoch_loss is not used as val_loss: its steps count epochs, unlike the "
                       "other curves'",)


def test_lightning_prefers_the_per_step_curve_and_knows_the_per_epoch_one():
    assert resolve(["train_loss_step", "train_loss_epoch", "val_loss"]).signals["loss"] == "train_loss_step"
    epoch_only = resolve(["train_loss_epoch", "val_loss", "epoch"])
    assert epoch_only.signals["loss"] == "train_loss_epoch" and epoch_only.per_epoch
    assert not epoch_only.epoch_axis  # Lightning logs its epoch curves at the global step


def test_matching_ignores_case_and_keeps_the_runs_spelling():
    assert resolve(["LOSS/Train", "loss/VAL"]).signals == {"loss": "LOSS/Train", "val_loss": "loss/VAL"}


def test_an_override_replaces_the_table_for_its_signal():
    m = resolve(["Loss/train", "my/loss", "Loss/val"], {"loss": "my/loss"})
    assert m.signals == {"loss": "my/loss", "val_loss": "Loss/val"}
    keras = resolve(["train/epoch_loss", "validation/epoch_loss", "validation/my_acc"],
                    {"loss": "train/epoch_loss", "val_acc": "validation/my_acc"})
    assert keras.epoch_axis and keras.signals["val_loss"] == "validation/epoch_loss"


def test_an_override_naming_an_absent_tag_says_so_and_maps_nothing_for_it():
    m = resolve(["Loss/train", "Loss/val"], {"loss": "nope"})
    assert m.signals == {"val_loss": "Loss/val"}
    assert m.missing == ("--tag loss=nope: this run has no tag 'nope'",)


@pytest.mark.parametrize("text, error", [
    ("loss", "expected SIGNAL=TAG"), ("=x", "expected SIGNAL=TAG"), ("loss=", "expected SIGNAL=TAG"),
    ("los=x", "unknown signal 'los'"),
])
def test_bad_overrides_are_usage_errors(text, error):
    with pytest.raises(ValueError, match=error):
        parse_override(text)


def test_parse_override_splits_at_the_first_equals_sign():
    assert parse_override(" val_acc = metrics/acc=top1 ") == ("val_acc", "metrics/acc=top1")


def test_the_docs_hold_the_tables_the_code_uses():
    text = DOCS.read_text()
    assert tags.markdown() in text, "docs/check.md: regenerate with python -m nnhealth.logs.tags"
    assert presets.markdown() in text, "docs/check.md: regenerate with python -m nnhealth.logs.presets"


def test_every_preset_names_a_real_threshold():
    from nnhealth.config import resolve_thresholds

    resolve_thresholds(presets.PRESETS["epoch"])
    assert set(presets.SKIPPED["epoch"]) <= set(__import__("nnhealth").RULES)
