"""Every trainable parameter must receive a gradient from the loss, or it never learns."""
from __future__ import annotations

import math

from ._sampling import draw
from .result import CheckResult
from .subject import as_subject

CHECK = "gradient-flow"


def _names(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_gradient_flow(model, X=None, y=None, *, batch_size: int = 64, seed: int = 0, **options) -> CheckResult:
    """One backward pass of the data loss (no regularisation term, which would hide a cut):
    every trainable parameter must get a finite, non-zero gradient.

    A parameter the loss does not depend on is cut out of the graph - a
    ``.detach()``, ``.data``, ``torch.no_grad()`` or numpy round trip in the
    forward pass - or is defined and never used. Its layer then keeps its
    initial weights forever, while the rest of the network learns around it.

    >>> import torch
    >>> class Cut(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.body, self.head = torch.nn.Linear(8, 16), torch.nn.Linear(16, 3)
    ...     def forward(self, x):
    ...         return self.head(torch.relu(self.body(x)).detach())
    >>> result = check_gradient_flow(Cut(), torch.randn(32, 8), torch.randint(0, 3, (32,)))
    >>> result.status, result.measured["disconnected"]
    ('fail', ['body.weight', 'body.bias'])
    """
    subject = as_subject(model, X, y, **options)
    idx = draw(subject.n_samples, batch_size, seed)
    norms = subject.gradient_norms(idx)
    if not norms:
        return CheckResult(CHECK, "fail", "the model has no trainable parameter",
                           advice="check requires_grad on the parameters (a frozen copy, or torch.no_grad at build)")
    disconnected = [n for n, v in norms.items() if v is None]
    nonfinite = [n for n, v in norms.items() if v is not None and not math.isfinite(v)]
    zero = [n for n, v in norms.items() if v == 0.0]
    live = [v for v in norms.values() if v is not None and math.isfinite(v) and v > 0]
    measured = {"parameters": len(norms), "disconnected": disconnected, "zero": zero, "nonfinite": nonfinite}
    if live:
        measured["min_norm"], measured["max_norm"] = min(live), max(live)
    problems, advice = [], []
    if disconnected:
        problems.append(f"{len(disconnected)} of {len(norms)} trainable parameters get no gradient from the loss: "
                        f"{_names(disconnected)}")
        advice.append("something in forward cuts them out of the graph (.detach(), .data, torch.no_grad(), "
                      ".item() or a numpy round trip), or they are never used (remove them or set "
                      "requires_grad=False)")
    if nonfinite:
        problems.append(f"non-finite gradient on {_names(nonfinite)}")
        advice.append("look for log(0), division by zero or sqrt of 0 in forward or the loss, and NaN/Inf in the data")
    if zero:
        problems.append(f"gradient exactly zero on {_names(zero)}")
        advice.append("every unit feeding them is off (dead ReLUs: check init and biases) or they are multiplied "
                      "by zero")
    if problems:
        return CheckResult(CHECK, "fail", "; ".join(problems), measured, "; ".join(advice))
    return CheckResult(CHECK, "pass", f"all {len(norms)} trainable parameters receive a gradient "
                                      f"(norms {measured['min_norm']:.2g} to {measured['max_norm']:.2g})", measured)
