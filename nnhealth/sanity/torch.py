"""The sanity checks' :class:`~nnhealth.sanity.Subject` for PyTorch modules.

Every computation runs on a deep copy of the user's module, so the checks
leave its weights, buffers (batch-norm statistics) and gradients untouched.
"""
from __future__ import annotations

import copy
import inspect
import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .subject import Evaluation, Fit, Subject


def _task(output: torch.Tensor, y: torch.Tensor) -> str:
    """multiclass (integer labels, one logit per class on dim 1), binary (one logit, 0/1 targets), regression."""
    if not y.is_floating_point() and not y.is_complex() and output.ndim >= 2 and output.shape[1] >= 2:
        return "multiclass"
    per_sample = output[0].numel() if output.ndim else 1
    if per_sample == 1 and y.numel() and bool(((y == 0) | (y == 1)).all()):
        return "binary"
    return "regression"


def _default_loss(task: str) -> Callable:
    if task == "multiclass":
        return F.cross_entropy
    if task == "binary":
        return lambda out, y: F.binary_cross_entropy_with_logits(out, y.to(out.dtype).view_as(out))
    return lambda out, y: F.mse_loss(out, y.to(out.dtype).view_as(out))


class TorchSubject(Subject):
    """A PyTorch module with its data, loss and (optional) regularisation.

    ``loss_fn(output, y)`` defaults by task: cross-entropy for integer labels,
    binary cross-entropy on logits for one output and 0/1 targets, else mean
    squared error. ``regularization`` is an L2 weight (the penalty
    0.5 * weight * sum of squared weights, biases and norm parameters left
    out) or ``fn(model) -> penalty``. ``optimizer`` trains the copies:
    ``None`` is Adam(lr=1e-3), which memorises small sets reliably; or an
    optimizer instance (a fresh one of the same type and settings is made)
    or ``fn(params) -> optimizer``; its weight decay is set to zero, and
    dropout is switched off, since the checks train with regularisation off.
    """

    def __init__(self, model: torch.nn.Module, X, y, loss_fn: Callable | None = None, *,
                 regularization: float | Callable | None = None, optimizer=None, batch_size: int = 64,
                 device: str | torch.device | None = None):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        X, y = torch.as_tensor(X), torch.as_tensor(y)
        if len(X) != len(y) or len(X) == 0:
            raise ValueError(f"X and y must hold the same number (> 0) of samples, got {len(X)} and {len(y)}")
        if regularization is not None and not callable(regularization):
            regularization = float(regularization)
            if not regularization >= 0:
                raise ValueError(f"regularization weight must be >= 0, got {regularization!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.model = model
        first = next(model.parameters(), None)
        self.device = torch.device(device) if device is not None else (first.device if first is not None
                                                                      else torch.device("cpu"))
        self.X, self.y = X, y
        self.n_samples = len(X)
        self.batch_size = batch_size
        self.regularization = regularization
        self.has_regularization = regularization is not None and regularization != 0.0   # 0: none to check
        self.optimizer = optimizer
        probe = self._probe()
        self.task = _task(probe, y)
        self.num_classes = int(probe.shape[1]) if self.task == "multiclass" else 2 if self.task == "binary" else None
        self.loss_fn = loss_fn if loss_fn is not None else _default_loss(self.task)
        self._per_sample = loss_fn is None and self.task == "multiclass"

    # -- helpers -----------------------------------------------------------------
    def _probe(self) -> torch.Tensor:
        """The model's output on two samples, computed without changing the model."""
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return self.model(self.X[:2].to(self.device))
        finally:
            self.model.train(was)

    def _batch(self, idx: np.ndarray, zero_inputs: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        xb, yb = self.X[index].to(self.device), self.y[index].to(self.device)
        return (torch.zeros_like(xb) if zero_inputs else xb), yb

    def _copy(self) -> torch.nn.Module:
        return copy.deepcopy(self.model).to(self.device)

    def _penalty(self, model: torch.nn.Module) -> torch.Tensor:
        if callable(self.regularization):
            return torch.as_tensor(self.regularization(model))
        weights = [p for p in model.parameters() if p.ndim >= 2]
        return 0.5 * self.regularization * sum((p * p).sum() for p in weights)

    def _make_optimizer(self, params):
        opt = self.optimizer
        if opt is None:
            opt = torch.optim.Adam(params, lr=1e-3)
        elif isinstance(opt, torch.optim.Optimizer):   # a fresh one with the same settings
            accepted = inspect.signature(type(opt)).parameters
            opt = type(opt)(params, **{k: v for k, v in opt.defaults.items() if k in accepted})
        else:
            opt = opt(params)
        for group in opt.param_groups:
            if group.get("weight_decay"):
                group["weight_decay"] = 0.0
        return opt

    def _correct(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        if self.task == "multiclass":
            right = out.argmax(dim=1) == y
        elif self.task == "binary":
            right = (out.reshape(len(y), -1)[:, 0] > 0) == (y.reshape(len(y), -1)[:, 0] > 0.5)
        else:
            return None
        return right.reshape(len(y), -1).all(dim=1)

    def _sample_losses(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self._per_sample:
            return F.cross_entropy(out, y, reduction="none").reshape(len(y), -1).mean(dim=1)
        # the user's loss reduces over its batch: one sample at a time is that sample's loss
        return torch.stack([torch.as_tensor(self.loss_fn(out[i:i + 1], y[i:i + 1])).reshape(())
                            for i in range(len(y))])

    # -- Subject -----------------------------------------------------------------
    def loss(self, idx: np.ndarray, regularized: bool = False) -> float:
        model = self._copy().train()   # as the first training step sees it (batch statistics, dropout)
        xb, yb = self._batch(idx)
        with torch.no_grad():
            value = self.loss_fn(model(xb), yb)
            if regularized:
                value = value + self._penalty(model)
        return float(value)

    def gradient_norms(self, idx: np.ndarray) -> dict[str, float | None]:
        model = self._copy().train()
        params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        if not params:
            return {}
        xb, yb = self._batch(idx)
        loss = self.loss_fn(model(xb), yb)
        if not (isinstance(loss, torch.Tensor) and loss.requires_grad):
            return {name: None for name, _ in params}
        grads = torch.autograd.grad(loss, [p for _, p in params], allow_unused=True)
        return {name: (None if g is None else float(g.detach().double().norm()))
                for (name, _), g in zip(params, grads)}

    def train(self, idx: np.ndarray, steps: int, *, zero_inputs: bool = False, until_fit: bool = False,
              seed: int = 0) -> Fit:
        model = self._copy().train()
        for module in model.modules():
            if isinstance(module, torch.nn.modules.dropout._DropoutNd):
                module.p = 0.0
        opt = self._make_optimizer([p for p in model.parameters() if p.requires_grad])
        generator = torch.Generator().manual_seed(seed)
        idx = np.asarray(idx)
        full_batch = len(idx) <= self.batch_size
        losses: list[float] = []
        step = 0
        for step in range(1, steps + 1):
            if full_batch:
                batch = idx
            else:
                batch = idx[torch.randperm(len(idx), generator=generator)[:self.batch_size].numpy()]
            xb, yb = self._batch(batch, zero_inputs)
            opt.zero_grad(set_to_none=True)
            out = model(xb)
            loss = self.loss_fn(out, yb)
            losses.append(float(loss.detach()))
            if not loss.requires_grad or not math.isfinite(losses[-1]):
                break   # nothing to train, or diverged: more steps teach nothing
            loss.backward()
            opt.step()
            if until_fit and full_batch and self._fitted(out.detach(), yb, losses):
                break
        return Fit(losses, step, model)

    def _fitted(self, out: torch.Tensor, y: torch.Tensor, losses: list[float]) -> bool:
        correct = self._correct(out, y)
        if correct is not None:
            return bool(correct.all())
        return losses[-1] <= 1e-3 * losses[0]

    def evaluate(self, fit: Fit, idx: np.ndarray, zero_inputs: bool = False,
                 training_mode: bool = False) -> Evaluation:
        model = fit.model
        model.train(training_mode)
        chunks = [np.asarray(idx)] if training_mode else np.array_split(
            np.asarray(idx), max(1, math.ceil(len(idx) / self.batch_size)))
        losses, correct = [], []
        with torch.no_grad():
            for chunk in chunks:
                xb, yb = self._batch(chunk, zero_inputs)
                out = model(xb)
                losses.append(self._sample_losses(out, yb).double().cpu().numpy())
                right = self._correct(out, yb)
                if right is not None:
                    correct.append(right.cpu().numpy())
        return Evaluation(np.concatenate(losses), np.concatenate(correct) if correct else None)
