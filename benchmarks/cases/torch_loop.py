"""One ordinary PyTorch training loop, watched the documented way, for every PyTorch case.

``mon.watch(model, optimizer)`` once, ``mon.step(step, loss=loss, ...)``
with the loss tensor every step, validation every ``val_every`` steps, and
``if mon.should_stop: break`` as the README tells users to write it. The loop
keeps its own plain record (losses, validation points) for the cases'
independent checks, so a check never reads anything nnhealth computed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from .data import Split


@dataclass
class Fit:
    """What the loop saw, measured with plain PyTorch."""

    model: torch.nn.Module
    losses: list[float] = field(default_factory=list)
    #: (step, validation loss, validation accuracy)
    val: list[tuple[int, float, float]] = field(default_factory=list)
    #: total gradient norm of every step, before any clipping
    grad_norms: list[float] = field(default_factory=list)
    #: steps run (fewer than planned when the monitor asked to stop or the loss was not finite)
    ran: int = 0

    @property
    def final_val_acc(self) -> float:
        return self.val[-1][2] if self.val else float("nan")


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn=F.cross_entropy):
    """(loss, accuracy) in eval mode, which the monitor does not record."""
    was = model.training
    model.eval()
    logits = model(x)
    model.train(was)
    return float(loss_fn(logits, y)), float((logits.argmax(1) == y).float().mean())


def fit(mon, model: torch.nn.Module, opt: torch.optim.Optimizer, data: Split, *, steps: int, seed: int,
        batch: int = 64, loss_fn: Callable = F.cross_entropy, schedule=None, clip: float | None = None,
        corrupt: Callable | None = None, on_step: Callable | None = None, val_every: int = 10) -> Fit:
    """Train ``model`` for ``steps`` mini-batch steps, watched by ``mon`` (None: unwatched).

    ``schedule``: a learning-rate scheduler stepped after each optimizer step;
    ``clip``: max gradient norm (``clip_grad_norm_``); ``corrupt(step, xb)``:
    returns the batch as the data pipeline delivers it (a fault's hook);
    ``on_step(step)``: called right after each optimizer step (a check's probe).
    """
    if mon is not None:
        mon.watch(model, opt)
    g = torch.Generator().manual_seed(2000 + seed)
    out = Fit(model)
    model.train()
    for step in range(steps):
        idx = torch.randint(0, len(data.x), (batch,), generator=g)
        xb, yb = data.x[idx], data.y[idx]
        if corrupt is not None:
            xb = corrupt(step, xb)
        logits = model(xb)
        loss = loss_fn(logits, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        out.grad_norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        if on_step is not None:
            on_step(step)
        if schedule is not None:
            schedule.step()
        acc = (logits.detach().argmax(1) == yb).float().mean()
        val = {}
        if step % val_every == 0 or step == steps - 1:
            val["val_loss"], val["val_acc"] = evaluate(model, data.x_val, data.y_val, loss_fn)
            out.val.append((step, val["val_loss"], val["val_acc"]))
        if mon is not None:
            mon.step(step, loss=loss, train_acc=acc, **val)
        out.losses.append(loss.item())
        out.ran = step + 1
        if not math.isfinite(out.losses[-1]) or (mon is not None and mon.should_stop):
            break
    return out


def warmup(opt: torch.optim.Optimizer, steps: int):
    """Linear warmup over ``steps``, then constant: the usual Transformer recipe."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / steps))
