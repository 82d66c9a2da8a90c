"""What the checks need from a model, written once per framework.

The checks themselves (choosing samples, judging numbers, wording advice) are
framework-agnostic: they talk to a :class:`Subject`, which holds the model and
its data and answers in plain floats and numpy arrays. Samples are named by
their index into the data the subject holds. A subject never changes the
user's model: everything that trains or computes gradients works on a fresh
copy of it.
"""
from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Evaluation:
    """Per-sample results of a model on some samples."""

    losses: np.ndarray                  # loss of each sample, as the loss function computes it for one sample
    correct: np.ndarray | None          # whether each sample is classified right; None for regression


@dataclass(frozen=True)
class Fit:
    """A fresh copy of the model after some training, and how its training went."""

    losses: list[float]                 # training loss of every step run
    steps: int
    model: object                       # the trained copy (framework object), for :meth:`Subject.evaluate`


class Subject(ABC):
    """A model, its data and its loss, as the sanity checks see them."""

    #: number of samples held
    n_samples: int
    #: number of classes (from the model's output) for a classifier, None for a regression model
    num_classes: int | None
    #: whether a regularisation term was given, so the loss can be computed with and without it
    has_regularization: bool

    @abstractmethod
    def loss(self, idx: np.ndarray, regularized: bool = False) -> float:
        """The loss of the freshly initialised model on these samples, taken as one batch
        exactly as training computes it (so a summed instead of averaged loss shows)."""

    @abstractmethod
    def gradient_norms(self, idx: np.ndarray) -> dict[str, float | None]:
        """The norm of the loss gradient on each trainable parameter, from one batch;
        None for a parameter the loss does not depend on."""

    @abstractmethod
    def train(self, idx: np.ndarray, steps: int, *, zero_inputs: bool = False, until_fit: bool = False,
              seed: int = 0) -> Fit:
        """Train a fresh copy on these samples with regularisation off (no penalty, no weight
        decay, no dropout). ``zero_inputs`` feeds zeros of the inputs' shape instead of the
        inputs; ``until_fit`` stops once every sample is fitted."""

    @abstractmethod
    def evaluate(self, fit: Fit, idx: np.ndarray, zero_inputs: bool = False,
                 training_mode: bool = False) -> Evaluation:
        """Per-sample losses (and correctness) of a trained copy: in inference mode, or with
        ``training_mode`` as training computed them (``idx`` as one batch, batch statistics)."""


def as_subject(model, X=None, y=None, **options) -> Subject:
    """The :class:`Subject` for ``model``: itself if it is one, else a framework's implementation.

    PyTorch modules get :class:`nnhealth.sanity.torch.TorchSubject` (``options`` are its
    keyword arguments). Frameworks are recognised without importing them.
    """
    if isinstance(model, Subject):
        if X is not None or y is not None or options:
            raise TypeError("model is already a Subject holding its data; pass no X, y or options")
        return model
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        from .torch import TorchSubject

        if X is None or y is None:
            raise TypeError("the sanity checks need data: pass the inputs X and targets y")
        return TorchSubject(model, X, y, **options)
    raise TypeError(f"no sanity-check support for {type(model).__name__}: pass a torch.nn.Module, or "
                    "implement nnhealth.sanity.Subject for your framework")
