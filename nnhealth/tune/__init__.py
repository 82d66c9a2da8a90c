"""Hyperparameter search that knows when a trial is sick (Optuna; ``pip install 'nnhealth[tune]'``).

- :class:`HealthPruningCallback` ends a trial at its monitor's first critical
  finding (NaN loss, loss above 3x its start) or chosen warning, and records
  why on the trial;
- :func:`review` says whether the best value of each parameter lies at the
  edge of its searched range and which range to search next;
- :func:`trials_table` prints the trials, with why each pruned one ended;
- :func:`plot_search` draws the objective against each parameter (log axes
  for log-scale parameters);
- :func:`write_hparams` writes the sweep for TensorBoard's HParams tab.

Studies that live in a shared storage (SQLite, or Optuna's journal file)
can be worked on by many processes or machines at once; all of the above
read the study back from its storage.
"""
try:
    import optuna  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only without the extra installed
    raise ImportError("nnhealth.tune needs Optuna: pip install 'nnhealth[tune]'") from e

from .hparams import write_hparams
from .plot import plot_search
from .pruning import FINDINGS, PRUNED_AT, PRUNED_BY, REASON, STEPS, HealthPruningCallback
from .review import ParamReview, Review, review
from .table import trials_table

__all__ = [
    "FINDINGS", "PRUNED_AT", "PRUNED_BY", "REASON", "STEPS", "HealthPruningCallback", "ParamReview", "Review",
    "plot_search", "review", "trials_table", "write_hparams",
]
