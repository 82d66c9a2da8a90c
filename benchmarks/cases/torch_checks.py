"""Independent checks for the PyTorch cases: a few lines of plain PyTorch each.

They look at the model as the run built it (a forward hook on the layers in
question, or the parameters before and after) or at what the training loop
itself recorded (:class:`.torch_loop.Fit`), never at nnhealth's numbers.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from .case import Proof
from .torch_loop import Fit


def learned(fit: Fit, min_val_acc: float) -> Proof:
    """A healthy run learned: its loss fell by half and it generalises."""
    start = sum(fit.losses[:5]) / 5
    end = sum(fit.losses[-10:]) / 10
    ok = fit.ran == len(fit.losses) and end < 0.5 * start and fit.final_val_acc >= min_val_acc
    return Proof(ok, f"loss {start:.2f} -> {end:.2f}, val acc {fit.final_val_acc:.2f}")


@torch.no_grad()
def outputs(model: nn.Module, x: torch.Tensor, kinds: tuple[type, ...]) -> list[torch.Tensor]:
    """The outputs of every module of the given types for input ``x``, in the order they ran.

    Measured on a copy in training mode (BatchNorm on batch statistics, as the
    run sees it), so the model itself, its running statistics included, is untouched.
    """
    probe = copy.deepcopy(model).train()
    seen: list[torch.Tensor] = []
    for m in probe.modules():
        if isinstance(m, kinds):
            m.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    probe(x)
    return seen


def loss_blew_up(fit: Fit) -> Proof:
    """The loss went above 3x its start, or stopped being finite."""
    first = fit.losses[0]
    finite = [v for v in fit.losses if math.isfinite(v)]
    worst = max(finite) if finite else float("nan")
    nonfinite = len(finite) < len(fit.losses)
    ok = nonfinite or worst > 3 * first
    text = f"loss {first:.2f} at step 0, " + (f"not finite at step {len(finite)}" if nonfinite
                                              else f"up to {worst:.3g}")
    return Proof(ok, text)


class UpdateRatios:
    """||W_after - W_before|| / ||W_before|| of every weight matrix, per step (pass as ``on_step``)."""

    def __init__(self, model: nn.Module, steps: int):
        self.weights = [p for p in model.parameters() if p.ndim >= 2]
        self.steps = steps
        self.before = [w.detach().clone() for w in self.weights]
        self.ratios: list[float] = []  # the largest over the weight matrices, per step

    def __call__(self, step: int) -> None:
        if step >= self.steps:
            return
        now = [w.detach().clone() for w in self.weights]
        self.ratios.append(max(((a - b).norm() / b.norm()).item() for a, b in zip(now, self.before)))
        self.before = now

    @property
    def median(self) -> float:
        ordered = sorted(self.ratios)
        return ordered[len(ordered) // 2] if ordered else float("nan")
