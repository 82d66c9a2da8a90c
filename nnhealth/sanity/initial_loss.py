"""Checklist step 3: the loss at initialisation is about ln(C), and regularisation raises it."""
from __future__ import annotations

import math

from ._sampling import draw
from .result import CheckResult
from .subject import as_subject

CHECK = "initial-loss"


def check_initial_loss(model, X=None, y=None, *, num_classes: int | None = None, tolerance: float = 0.5,
                       batch_size: int = 64, seed: int = 0, **options) -> CheckResult:
    """Compare the loss of the untrained model on one batch with ln(C) for C classes.

    With small random weights a softmax classifier predicts every class about
    equally, so its cross-entropy starts at -ln(1/C) = ln(C). The check passes
    when the measured loss lies within a factor ``1 + tolerance`` of ln(C) and,
    when a regularisation term is given (``regularization=`` in ``options``),
    when adding it raises the loss. ``num_classes`` defaults to the width of the
    model's output. ``options`` build the subject (see :func:`as_subject`).

    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    >>> X, y = torch.randn(64, 8), torch.randint(0, 4, (64,))
    >>> check_initial_loss(model, X, y, regularization=1e-2).status
    'pass'
    """
    if tolerance <= 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance!r}")
    subject = as_subject(model, X, y, **options)
    classes = num_classes or subject.num_classes
    if not classes or classes < 2:
        return CheckResult(CHECK, "skip", "the model is not a classifier, so there is no expected starting loss",
                           advice="pass num_classes=C if the model is a classifier whose output width is not C")
    idx = draw(subject.n_samples, batch_size, seed)
    loss = subject.loss(idx)
    expected = math.log(classes)
    ratio = loss / expected
    measured = {"loss": loss, "expected": expected, "ratio": ratio, "num_classes": classes, "batch": len(idx)}
    problems, advice = [], []
    start = f"loss {loss:.4g} at initialisation"
    if not math.isfinite(loss):
        problems.append(f"{start} is not finite")
        advice.append("look for NaN/Inf in the inputs and for a log or division by zero in the loss")
    elif ratio > 1 + tolerance:
        problems.append(f"{start} is {ratio:.1f}x ln({classes}) = {expected:.3g}")
        if len(idx) > 1 and abs(ratio - len(idx)) < 0.25 * len(idx):
            advice.append(f"the ratio is close to the batch size {len(idx)}: the loss is summed over the batch "
                          "instead of averaged (use reduction='mean')")
        else:
            advice.append("the first predictions are overconfident: make the last layer start small (e.g. its "
                          "weights x0.01), check the weight initialisation scale and that the loss is not scaled up")
    elif ratio < 1 / (1 + tolerance):
        problems.append(f"{start} is only {ratio:.2f}x ln({classes}) = {expected:.3g}")
        advice.append("an untrained model should not do better than chance: look for labels leaking into the "
                      "inputs, a loss divided twice by the batch size, or a wrong number of classes")
    if subject.has_regularization and math.isfinite(loss):
        with_reg = subject.loss(idx, regularized=True)
        measured["loss_with_regularization"] = with_reg
        if not with_reg > loss + 1e-12 + 1e-9 * abs(loss):
            problems.append(f"adding regularisation did not raise the loss ({loss:.4g} -> {with_reg:.4g})")
            advice.append("the regularisation term is zero, negative or applied to no parameter: check its sign "
                          "and which parameters it covers")
    if problems:
        return CheckResult(CHECK, "fail", "; ".join(problems), measured, "; ".join(advice))
    reg = (f"; regularisation raises it to {measured['loss_with_regularization']:.4g}"
           if "loss_with_regularization" in measured else "; no regularisation term given to check")
    return CheckResult(CHECK, "pass", f"{start}, ln({classes}) = {expected:.3g} expected "
                                      f"(ratio {ratio:.2f}){reg}", measured)
