"""The numbers a trainer logs, under the names the rules read.

Trainers log under their own names: Keras ``accuracy`` / ``val_sparse_categorical_accuracy``,
Hugging Face ``eval_loss`` / ``eval_accuracy``, Lightning whatever the module passes to
``self.log`` (``val/acc``, ``train_loss_step``...). The rules read ``loss``, ``train_acc``,
``val_loss`` and ``val_acc``; every other number is kept as a series under its own name.

>>> sorted(rename({"loss": 0.5, "sparse_categorical_accuracy": 0.9, "val/loss": 0.7, "eval_f1": 0.1}).items())
[('loss', 0.5), ('train_acc', 0.9), ('val_f1', 0.1), ('val_loss', 0.7)]
"""
from __future__ import annotations

import numbers
import re

import numpy as np

#: what validation metrics start with, per trainer
VAL_PREFIXES = ("val_", "eval_", "valid_", "validation_")
#: bookkeeping numbers trainers put among their metrics (not training signals)
SKIP = frozenset({"epoch", "step", "global_step", "learning_rate", "lr", "total_flos", "train_runtime",
                  "train_samples_per_second", "train_steps_per_second", "eval_runtime",
                  "eval_samples_per_second", "eval_steps_per_second"})


def scalar(value):
    """``value`` when it is one number (Python, numpy, or a one-element tensor/array), else None.

    Framework scalars are passed through untouched, so a tensor on an accelerator is copied
    to the host with the rest of the step instead of on its own; NaN and Inf pass too.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (numbers.Number, np.generic)):
        return value
    numel = getattr(value, "numel", None)
    size = numel() if callable(numel) else getattr(value, "size", None)
    dtype = str(getattr(value, "dtype", ""))
    if size == 1 and any(t in dtype for t in ("float", "half", "double")):
        return value
    return None


def _key(name: str) -> str:
    key = re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")
    return re.sub(r"_(epoch|step)$", "", key)  # Lightning's on_step/on_epoch copies of one metric


def split(logs: dict) -> tuple[dict, dict]:
    """``(training, validation)`` entries of ``logs``, by name (``val_``, ``eval_``, ``val/``...)."""
    train, val = {}, {}
    for name, value in logs.items():
        is_val = isinstance(name, str) and _key(name).startswith(VAL_PREFIXES)
        (val if is_val else train)[name] = value
    return train, val


def rename(logs: dict, *, is_validation: bool = False) -> dict:
    """The numbers of ``logs``, renamed for the rules (see the module docstring).

    ``is_validation``: every metric in ``logs`` comes from a validation pass (``val_`` is added
    where it is missing).
    """
    out: dict = {}
    for name, value in logs.items():
        value = scalar(value)
        if value is None or not isinstance(name, str):
            continue
        key = _key(name)
        if key in SKIP:
            continue
        for prefix in VAL_PREFIXES:
            if key.startswith(prefix):
                key = "val_" + key[len(prefix):]
                break
        else:
            key = key.removeprefix("train_")
            if is_validation:
                key = "val_" + key
        out.setdefault(key, value)
    for group, target in (("", "train_acc"), ("val_", "val_acc")):
        if target in out:
            continue
        accuracy = [k for k in out if k.startswith(group) and (group or not k.startswith("val_"))
                    and re.search(r"(^|_)(acc|accuracy)$", k)]
        if len(accuracy) == 1:  # one accuracy: the rules' accuracy, whatever the trainer calls it
            out[target] = out.pop(accuracy[0])
    return out
