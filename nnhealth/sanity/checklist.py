"""The lecture's checklist in one call, in its order."""
from __future__ import annotations

from .gradient_flow import check_gradient_flow
from .initial_loss import check_initial_loss
from .input_dependence import check_input_dependence
from .overfit import overfit_small_subset
from .result import Checklist
from .subject import as_subject


def run_all(model, X=None, y=None, *, num_classes: int | None = None, seed: int = 0, **options) -> Checklist:
    """Run every check on a freshly initialised model, before the real training starts.

    The order is the lecture's: the loss at initialisation (about ln C,
    raised by regularisation), a gradient for every parameter, memorising a
    small subset with regularisation off, and beating a zero-input baseline
    on held-out samples. ``options`` build the subject: for PyTorch
    ``loss_fn``, ``regularization`` (an L2 weight, or ``fn(model) -> penalty``),
    ``optimizer``, ``batch_size``, ``device``. Each check has its own function
    for its own settings.

    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> X = torch.randn(400, 8)
    >>> y = (X[:, 0] > 0).long() + 2 * (X[:, 1] > 0).long()
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    >>> report = run_all(model, X, y, regularization=1e-3)
    >>> report.passed, [r.status for r in report]
    (True, ['pass', 'pass', 'pass', 'pass'])
    """
    subject = as_subject(model, X, y, **options)
    return Checklist((
        check_initial_loss(subject, num_classes=num_classes, seed=seed),
        check_gradient_flow(subject, seed=seed),
        overfit_small_subset(subject, seed=seed),
        check_input_dependence(subject, seed=seed),
    ))
