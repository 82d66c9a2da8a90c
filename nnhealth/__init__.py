"""nnhealth: a doctor for training runs.

Attach a :class:`Monitor` to a training loop and it says, in plain words and
early, what is going wrong (dead ReLUs, saturated sigmoids, a bad
initialisation, a learning rate too high or too low, overfitting...) and
what to try.

>>> from nnhealth import Monitor
>>> mon = Monitor(every=1, console=False)
>>> for step, loss in enumerate([2.3, 2.2, float("nan")]):
...     _ = mon.step(step, loss=loss)
>>> [f.symptom for f in mon.findings], mon.should_stop
(['loss-nan'], True)
>>> mon.close()
"""
from .finding import Finding, TrainingHealthWarning
from .history import History
from .logs import load
from .monitor import Monitor
from .rules import RULES, SYMPTOMS

__version__ = "0.1.0"

__all__ = ["Finding", "History", "Monitor", "RULES", "SYMPTOMS", "TrainingHealthWarning", "__version__", "load"]
