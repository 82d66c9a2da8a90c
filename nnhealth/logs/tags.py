"""Which TensorBoard tag holds which signal the rules read: one documented table, overridable.

The rules read four curves: ``loss``, ``val_loss``, ``train_acc`` and
``val_acc`` (plus ``epoch``, only to say which epoch a step was in). Every
tool names them differently; :data:`TABLE` lists the names in the order they
are tried. Matching ignores case. Tags read from a run's ``train/``,
``validation/`` (``val/``, ``eval/``) sub-folder are prefixed with that
folder's name, which is how Keras' ``train/epoch_loss`` and
``validation/epoch_loss`` come apart. ``nnhealth check --tag loss=my/loss``
replaces the table for one signal.

>>> m = resolve(["Loss/train", "Loss/val", "Accuracy/train", "Accuracy/val"])
>>> m.signals["val_loss"], m.epoch_axis
('Loss/val', False)
>>> resolve(["train/epoch_loss", "validation/epoch_loss"]).signals
{'loss': 'train/epoch_loss', 'val_loss': 'validation/epoch_loss'}
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping as MappingType
from dataclasses import dataclass, field

#: the curves the loss- and generalisation-level rules read
SIGNALS = ("loss", "val_loss", "train_acc", "val_acc")
#: signals ``--tag`` may map (``epoch`` only labels steps)
MAPPABLE = SIGNALS + ("epoch",)


@dataclass(frozen=True)
class Tag:
    name: str
    writer: str
    #: one point per epoch (a mean over the epoch), not one per training step
    per_epoch: bool = False
    #: its step numbers count epochs (Keras' ``epoch_*``), not training steps
    epoch_axis: bool = False


def _keras_epoch(folder: str, metrics: Iterable[str]) -> list[Tag]:
    prefix = f"{folder}/" if folder else ""
    where = f"Keras TensorBoard callback ({folder}/ folder)" if folder else "Keras (a train/ folder given directly)"
    return [Tag(f"{prefix}epoch_{m}", where, per_epoch=True, epoch_axis=True) for m in metrics]


KERAS_ACCURACY = ("accuracy", "acc", "sparse_categorical_accuracy", "categorical_accuracy", "binary_accuracy")
PYTORCH = "PyTorch SummaryWriter (torch.utils.tensorboard docs)"
LIGHTNING = "Lightning self.log"
HF = "Hugging Face Trainer"
FOLDER = "a train/ or validation/ sub-folder with plain names"

TABLE: dict[str, tuple[Tag, ...]] = {
    "loss": (
        Tag("loss/train", "nnhealth"),
        Tag("Loss/train", PYTORCH),
        Tag("training loss", "PyTorch TensorBoard tutorial"),
        Tag("train_loss_step", f"{LIGHTNING} (on_step and on_epoch)"),
        Tag("train_loss", LIGHTNING),
        Tag("train/loss", f"{HF}; {LIGHTNING}('train/loss'); {FOLDER}"),
        Tag("train/batch_loss", "Keras TensorBoard(update_freq='batch')"),
        Tag("batch_loss", "Keras (a train/ folder given directly)"),
        Tag("loss", "Keras-style and generic names"),
        Tag("train_loss_epoch", f"{LIGHTNING} (on_epoch)", per_epoch=True),
        *_keras_epoch("train", ["loss"]),
        *_keras_epoch("", ["loss"]),
    ),
    "val_loss": (
        Tag("loss/val", "nnhealth"),
        Tag("Loss/val", PYTORCH),
        Tag("Loss/validation", PYTORCH),
        Tag("Loss/valid", PYTORCH),
        Tag("Loss/test", f"{PYTORCH}: the docs' example logs its held-out split as 'test'"),
        Tag("val_loss", f"{LIGHTNING}; Keras-style"),
        Tag("val_loss_epoch", f"{LIGHTNING} (on_step and on_epoch)"),
        Tag("val/loss", f"{LIGHTNING}('val/loss'); a val/ folder"),
        Tag("valid_loss", "generic"),
        Tag("validation_loss", "generic"),
        Tag("validation/loss", FOLDER),
        Tag("eval/loss", f"{HF}; an eval/ folder"),
        Tag("eval_loss", f"{HF} (older versions)"),
        Tag("validation/evaluation_loss_vs_iterations", "Keras TensorBoard callback (TF >= 2.2)"),
        *_keras_epoch("validation", ["loss"]),
    ),
    "train_acc": (
        Tag("accuracy/train", "nnhealth"),
        Tag("Accuracy/train", PYTORCH),
        Tag("train_acc_step", f"{LIGHTNING} (on_step and on_epoch)"),
        Tag("train_acc", LIGHTNING),
        Tag("train_accuracy", "generic"),
        Tag("train/acc", f"{LIGHTNING}('train/acc'); {FOLDER}"),
        Tag("train/accuracy", f"{LIGHTNING}('train/accuracy'); {FOLDER}"),
        Tag("train/batch_accuracy", "Keras TensorBoard(update_freq='batch')"),
        Tag("accuracy", "Keras-style and generic names"),
        Tag("acc", "Keras-style and generic names"),
        Tag("train_acc_epoch", f"{LIGHTNING} (on_epoch)", per_epoch=True),
        *_keras_epoch("train", KERAS_ACCURACY),
        *_keras_epoch("", KERAS_ACCURACY),
    ),
    "val_acc": (
        Tag("accuracy/val", "nnhealth"),
        Tag("Accuracy/val", PYTORCH),
        Tag("Accuracy/validation", PYTORCH),
        Tag("Accuracy/valid", PYTORCH),
        Tag("Accuracy/test", f"{PYTORCH}: the docs' example logs its held-out split as 'test'"),
        Tag("val_acc", f"{LIGHTNING}; Keras-style"),
        Tag("val_accuracy", "Keras-style"),
        Tag("val_acc_epoch", f"{LIGHTNING} (on_step and on_epoch)"),
        Tag("val/acc", f"{LIGHTNING}('val/acc'); a val/ folder"),
        Tag("val/accuracy", f"{LIGHTNING}('val/accuracy'); a val/ folder"),
        Tag("valid_acc", "generic"),
        Tag("validation_accuracy", "generic"),
        Tag("validation/accuracy", FOLDER),
        Tag("eval/accuracy", f"{HF}; an eval/ folder"),
        Tag("eval_accuracy", f"{HF} (older versions)"),
        Tag("validation/evaluation_accuracy_vs_iterations", "Keras TensorBoard callback (TF >= 2.2)"),
        *_keras_epoch("validation", KERAS_ACCURACY),
    ),
    "epoch": (
        Tag("epoch", LIGHTNING),
        Tag("train/epoch", HF),
    ),
}

_BY_NAME: dict[str, Tag] = {}
for _tags in TABLE.values():
    for _t in _tags:
        _BY_NAME.setdefault(_t.name.lower(), _t)


def known(tag: str) -> Tag | None:
    """The table's entry for a tag name (any signal), or None."""
    return _BY_NAME.get(tag.lower())


@dataclass(frozen=True)
class Mapping:
    """The tags chosen for one run."""

    #: signal -> tag, as spelled in the run
    signals: dict = field(default_factory=dict)
    #: the chosen tags' steps count epochs (Keras epoch_* tags)
    epoch_axis: bool = False
    #: the loss tag holds one point per epoch
    per_epoch: bool = False
    #: why present tags were passed over (e.g. a validation curve on another axis)
    notes: tuple = ()
    #: --tag overrides naming a tag this run lacks
    missing: tuple = ()


def parse_override(text: str) -> tuple[str, str]:
    """``"loss=my/loss_tag"`` -> ``("loss", "my/loss_tag")``; a usage error otherwise."""
    signal, sep, tag = str(text).partition("=")
    signal, tag = signal.strip(), tag.strip()
    if not sep or not signal or not tag:
        raise ValueError(f"--tag {text!r}: expected SIGNAL=TAG, e.g. loss=train/my_loss")
    if signal not in MAPPABLE:
        raise ValueError(f"--tag {text!r}: unknown signal {signal!r}; signals: {', '.join(MAPPABLE)}")
    return signal, tag


def resolve(present: Iterable[str], overrides: MappingType[str, str] | None = None) -> Mapping:
    """Choose a tag per signal among the ``present`` ones.

    All chosen curves must share one step axis, or validation points would be
    paired with the wrong training steps: the axis (training steps, or epochs
    for Keras' ``epoch_*`` tags) that covers the most signals wins, training
    steps on a tie. An override fixes its signal and the axis.
    """
    by_lower: dict[str, str] = {}
    for tag in sorted(present):
        by_lower.setdefault(tag.lower(), tag)
    overrides = dict(overrides or {})
    signals, missing = {}, []
    for signal, tag in overrides.items():
        actual = by_lower.get(tag.lower())
        if actual is None:
            missing.append(f"--tag {signal}={tag}: this run has no tag {tag!r}")
        else:
            signals[signal] = actual

    def candidates(signal: str, epoch_axis: bool) -> list[tuple[Tag, str]]:
        return [(t, by_lower[t.name.lower()]) for t in TABLE[signal]
                if t.name.lower() in by_lower and (t.epoch_axis == epoch_axis or signal == "epoch")]

    fixed = [known(tag) for signal, tag in signals.items() if signal in SIGNALS]
    if fixed:
        axis = bool(fixed[0] and fixed[0].epoch_axis)
    else:
        cover = {ax: sum(bool(candidates(s, ax)) for s in SIGNALS) for ax in (False, True)}
        axis = cover[True] > cover[False]
    notes = []
    for signal in MAPPABLE:
        if signal in signals or signal in overrides:
            continue
        found = candidates(signal, axis)
        if found:
            signals[signal] = found[0][1]
        elif signal != "epoch":
            other = candidates(signal, not axis)
            if other:
                unit = "epochs" if not axis else "training steps"
                notes.append(f"{other[0][1]} is not used as {signal}: its steps count {unit}, unlike the "
                             "other curves'")
    loss = known(signals["loss"]) if "loss" in signals else None
    return Mapping(signals={s: signals[s] for s in MAPPABLE if s in signals}, epoch_axis=axis,
                   per_epoch=bool(loss and loss.per_epoch), notes=tuple(notes), missing=tuple(missing))


def markdown() -> str:
    """The table as markdown (docs/check.md holds this text; a test keeps them equal)."""
    lines = ["| signal | tags, in the order tried | written by |", "| --- | --- | --- |"]
    for signal, tags in TABLE.items():
        groups: list[tuple[tuple, list[str]]] = []
        for t in tags:
            key = (t.writer, t.per_epoch)
            if groups and groups[-1][0] == key:
                groups[-1][1].append(f"`{t.name}`")
            else:
                groups.append((key, [f"`{t.name}`"]))
        for (writer, per_epoch), names in groups:
            lines.append(f"| `{signal}` | {', '.join(names)}{' (one point per epoch)' if per_epoch else ''} "
                         f"| {writer} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
