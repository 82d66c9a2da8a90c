"""The symptom catalog: one pure check per symptom, each with its thresholds and its page.

Importing this package registers every rule in :data:`RULES`, keyed by its
stable symptom id.
"""
from . import (  # noqa: F401  (each module registers its rule)
    dead_relu,
    exploding_activations,
    exploding_gradients,
    init_plateau,
    initial_loss_unexpected,
    input_not_normalized,
    loss_exploding,
    loss_nan,
    loss_not_decreasing,
    non_finite_values,
    overfitting,
    saturated_activations,
    underfitting,
    update_ratio_high,
    update_ratio_low,
    vanishing_activations,
    vanishing_gradients,
    weights_symmetric,
)
from .base import RULES, Context, Detection, Rule

#: catalog order, as in DESIGN.md
SYMPTOMS = (
    "loss-nan", "loss-exploding", "loss-not-decreasing", "init-plateau", "initial-loss-unexpected",
    "overfitting", "underfitting", "dead-relu", "saturated-activations", "vanishing-activations",
    "exploding-activations", "vanishing-gradients", "exploding-gradients", "update-ratio-high",
    "update-ratio-low", "input-not-normalized", "weights-symmetric", "non-finite-values",
)
assert set(SYMPTOMS) == set(RULES), set(SYMPTOMS) ^ set(RULES)

__all__ = ["RULES", "SYMPTOMS", "Context", "Detection", "Rule"]
