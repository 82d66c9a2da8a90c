"""non-finite-values: NaN or Inf inside activations, gradients, parameters or inputs."""
from __future__ import annotations

from dataclasses import dataclass

from .base import Detection, nonfinite, rule


@dataclass(frozen=True)
class Thresholds:
    """Any non-finite value is a finding; nothing to tune."""


_ROLES = ("input", "activation", "gradient", "parameter", "update")


@rule(
    "non-finite-values", severity="warning", needs={"activation", "gradient", "parameter", "input"},
    thresholds=Thresholds,
    summary="NaN or Inf values inside inputs, activations, gradients or parameters.",
    advice="Check the data for NaN/Inf first; then lower the learning rate, clip gradients, and guard "
           "log/sqrt/division in custom layers and losses with a small epsilon.",
    detects="Any NaN or infinite value in an observed tensor.",
    why="One NaN spreads: through the forward pass into the loss, through the backward pass into every "
        "gradient, and through the update into the weights, after which the run is lost. Finding where it "
        "first appears (the data, one layer's activations, one gradient) points at the cause.",
    how="The count of non-finite values of each observed tensor on the latest sampled step; fires for every "
        "tensor that has any. Critical for parameters (the weights are already ruined), a warning elsewhere.",
    example="nnhealth warning non-finite-values at step 10 [input]: 64 input values are NaN or Inf "
            "(role=input, nonfinite=64, fraction=0.0031)",
)
def check(ctx, th: Thresholds):
    out = []
    for role in _ROLES:
        out.extend(nonfinite(ctx.history, role, lambda name, count, fraction, role=role: Detection(
            name, f"{count} {role} values are NaN or Inf", {"role": role, "nonfinite": count, "fraction": fraction},
            severity="critical" if role == "parameter" else None)))
    return out
