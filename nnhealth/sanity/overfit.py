"""Checklist step 4: with regularisation off, the model must be able to memorise a tiny subset."""
from __future__ import annotations

import math

import numpy as np

from ._sampling import draw
from .result import CheckResult
from .subject import as_subject

CHECK = "overfit-small-subset"

ADVICE = ("a model that cannot memorise a handful of samples has a bug, not a capacity problem: check that the loss "
          "gets raw logits (not probabilities) and the right targets, that the optimizer holds this model's "
          "parameters and steps after backward, and that gradients are zeroed each step; then try more steps or "
          "a larger learning rate. check_gradient_flow shows whether every layer receives a gradient")


def overfit_small_subset(model, X=None, y=None, *, n_samples: int = 20, steps: int = 300,
                         min_accuracy: float = 0.99, max_loss_ratio: float = 0.01, seed: int = 0,
                         **options) -> CheckResult:
    """Train a fresh copy on ``n_samples`` samples with regularisation off, for up to ``steps`` steps.

    A classifier passes when its training accuracy on those samples reaches
    ``min_accuracy`` (~100%); a regression model passes when its loss falls to
    ``max_loss_ratio`` of where it started. Training stops as soon as every
    sample is fitted. The user's model is not changed.

    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 5))
    >>> X, y = torch.randn(20, 8), torch.randint(0, 5, (20,))
    >>> overfit_small_subset(model, X, y).measured["train_accuracy"]
    1.0
    """
    if not 0 < min_accuracy <= 1:
        raise ValueError(f"min_accuracy must be in (0, 1], got {min_accuracy!r}")
    if n_samples < 1 or steps < 1:
        raise ValueError(f"n_samples and steps must be >= 1, got {n_samples!r} and {steps!r}")
    subject = as_subject(model, X, y, **options)
    idx = draw(subject.n_samples, n_samples, seed)
    fit = subject.train(idx, steps, until_fit=True, seed=seed)
    ev = subject.evaluate(fit, idx, training_mode=True)
    # the training loss as the user's loss function computes it, first and last step
    start, final = (fit.losses[0], fit.losses[-1]) if fit.losses else (float("nan"), float("nan"))
    if not math.isfinite(float(np.mean(ev.losses))):
        final = float("nan")
    measured = {"samples": len(idx), "steps": fit.steps, "start_loss": start, "final_loss": final}
    what = f"{len(idx)} samples, {fit.steps} steps, regularisation off"
    if not math.isfinite(final):
        return CheckResult(CHECK, "fail", f"the loss became {final} while fitting {len(idx)} samples", measured,
                           "lower the learning rate, and look for log(0) or division by zero in the loss")
    if ev.correct is not None:
        accuracy = float(np.mean(ev.correct))
        measured["train_accuracy"] = accuracy
        if accuracy >= min_accuracy:
            return CheckResult(CHECK, "pass", f"training accuracy {accuracy:.0%} on {what} "
                                              f"(loss {start:.3g} -> {final:.3g})", measured)
        return CheckResult(CHECK, "fail", f"training accuracy only {accuracy:.0%} on {what} "
                                          f"(loss {start:.3g} -> {final:.3g}); expected ~100%", measured, ADVICE)
    ratio = final / start if start > 0 else float("inf")
    measured["loss_ratio"] = ratio
    if ratio <= max_loss_ratio:
        return CheckResult(CHECK, "pass", f"loss fell to {ratio:.2g} of its start on {what}", measured)
    return CheckResult(CHECK, "fail", f"loss only fell to {ratio:.2g} of its start on {what}; expected "
                                      f"<= {max_loss_ratio:g}", measured, ADVICE)
