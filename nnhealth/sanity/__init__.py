"""The lecture's babysitting checklist as functions: run them before a long training.

1. :func:`check_initial_loss` - the untrained loss is about ln(C), and adding
   regularisation raises it;
2. :func:`check_gradient_flow` - every trainable parameter receives a gradient;
3. :func:`overfit_small_subset` - with regularisation off, ~20 samples are
   memorised (~100% training accuracy);
4. :func:`check_input_dependence` - real inputs beat zeroed inputs on held-out
   samples.

:func:`run_all` runs them in that order. Each returns a :class:`CheckResult`
with ``status`` (pass / fail / skip), the ``measured`` numbers and ``advice``.
The checks are written once against :class:`Subject`; PyTorch modules are
supported out of the box (:mod:`nnhealth.sanity.torch`), and this package
imports no framework itself.

>>> from nnhealth import sanity
>>> sanity.CheckResult("initial-loss", "pass", "loss 2.31, ln(10) = 2.3 expected").line()
'PASS initial-loss: loss 2.31, ln(10) = 2.3 expected'
"""
from .checklist import run_all
from .gradient_flow import check_gradient_flow
from .initial_loss import check_initial_loss
from .input_dependence import check_input_dependence
from .overfit import overfit_small_subset
from .result import Checklist, CheckResult
from .subject import Evaluation, Fit, Subject, as_subject

__all__ = [
    "CheckResult", "Checklist", "Evaluation", "Fit", "Subject", "as_subject", "check_gradient_flow",
    "check_initial_loss", "check_input_dependence", "overfit_small_subset", "run_all",
]
