"""A model trained on the real inputs must beat one trained on zeros, on samples it never saw.

The zero-input model can only learn the label frequencies, so it is the
baseline of a model that ignores its input. Comparing the two on held-out
samples catches what the training loss alone hides: inputs and labels that
no longer belong together (shuffled or misaligned labels) and a model whose
output does not depend on its input.
"""
from __future__ import annotations

import math

import numpy as np

from ._sampling import draw
from .result import CheckResult
from .subject import as_subject

CHECK = "input-dependence"

#: fewer held-out samples than this make the comparison a coin toss
MIN_HELD_OUT = 20


def check_input_dependence(model, X=None, y=None, *, steps: int = 200, held_out: float = 0.25,
                           max_samples: int = 1024, min_z: float = 2.0, seed: int = 0, **options) -> CheckResult:
    """Train two fresh copies for ``steps`` steps, one on the inputs and one on zeros of their shape,
    and compare their per-sample losses on held-out samples.

    Passes when real inputs give a lower held-out loss, by more than ``min_z``
    standard errors of the paired per-sample differences. Uses up to
    ``max_samples`` samples, ``held_out`` of them held out.

    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> X = torch.randn(400, 8)
    >>> y = (X[:, 0] > 0).long() + 2 * (X[:, 1] > 0).long()
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    >>> check_input_dependence(model, X, y).status
    'pass'
    >>> check_input_dependence(model, X, y[torch.randperm(400)]).status   # labels shuffled
    'fail'
    """
    if not 0 < held_out < 1:
        raise ValueError(f"held_out must be a fraction in (0, 1), got {held_out!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps!r}")
    subject = as_subject(model, X, y, **options)
    idx = draw(subject.n_samples, max_samples, seed)
    n_val = max(MIN_HELD_OUT, int(round(held_out * len(idx))))
    if len(idx) - n_val < MIN_HELD_OUT:
        return CheckResult(CHECK, "skip", f"{subject.n_samples} samples are too few to compare on held-out data",
                           {"samples": subject.n_samples},
                           f"give at least {2 * MIN_HELD_OUT} samples (a few hundred make a clear verdict)")
    val_idx, train_idx = idx[:n_val], idx[n_val:]
    real = subject.evaluate(subject.train(train_idx, steps, seed=seed), val_idx)
    zero = subject.evaluate(subject.train(train_idx, steps, zero_inputs=True, seed=seed), val_idx, zero_inputs=True)
    gain = zero.losses - real.losses            # > 0 where the real inputs helped
    mean = float(np.mean(gain))
    spread = float(np.std(gain, ddof=1)) / math.sqrt(len(gain))
    z = mean / spread if spread > 0 else (math.copysign(math.inf, mean) if mean else 0.0)
    measured = {"train_samples": len(train_idx), "held_out_samples": n_val, "steps": steps,
                "held_out_loss": float(np.mean(real.losses)), "zero_input_loss": float(np.mean(zero.losses)),
                "z": z}
    if real.correct is not None:
        measured["held_out_accuracy"] = float(np.mean(real.correct))
        measured["zero_input_accuracy"] = float(np.mean(zero.correct))
    versus = (f"held-out loss {measured['held_out_loss']:.3g} with the inputs vs {measured['zero_input_loss']:.3g} "
              "with zeros")
    if "held_out_accuracy" in measured:
        versus += (f" (accuracy {measured['held_out_accuracy']:.0%} vs {measured['zero_input_accuracy']:.0%})")
    if not math.isfinite(mean):
        return CheckResult(CHECK, "fail", f"a held-out loss is not finite: {versus}", measured,
                           "look for NaN/Inf in the inputs and lower the learning rate")
    if mean > 0 and z >= min_z:
        return CheckResult(CHECK, "pass", f"{versus}; the model uses its input", measured)
    return CheckResult(CHECK, "fail", f"{versus}: the inputs do not help on samples the model did not train on "
                                      f"(z = {z:.2g}, need >= {min_z:g})", measured,
                       "check that inputs and labels stay paired through loading and shuffling (shuffled or "
                       "misaligned labels), that forward really uses its input (nothing detached, overwritten or "
                       "ignored on the input path) and that preprocessing keeps the features (not all constant)")
