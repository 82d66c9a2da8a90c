"""Synthetic data sets for the PyTorch cases, made from the seed alone (no downloads).

Every set is Gaussian clusters, several per class, so that a model has to
learn a non-linear boundary and a small training set can be memorised
without generalising. Features are standardised with the training split's
statistics, as a careful user would; a case that needs raw inputs undoes it
on purpose.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Split:
    """Training and validation tensors, exactly as the model is fed them."""

    x: torch.Tensor
    y: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    classes: int


def clusters(shape: tuple[int, ...], classes: int, seed: int, n_train: int = 2000, n_val: int = 500,
             per_class: int = 3, noise: float = 1.0) -> Split:
    """``per_class`` Gaussian clusters per class in ``shape``-shaped inputs, standardised per feature."""
    g = torch.Generator().manual_seed(1000 + seed)
    centres = torch.randn((classes * per_class,) + shape, generator=g)
    n = n_train + n_val
    cid = torch.randint(0, len(centres), (n,), generator=g)
    x = centres[cid] + noise * torch.randn((n,) + shape, generator=g)
    y = cid % classes
    x_train, x_val = x[:n_train], x[n_train:]
    mean, std = x_train.mean(0), x_train.std(0)
    return Split((x_train - mean) / std, y[:n_train], (x_val - mean) / std, y[n_train:], classes)


def vectors(seed: int, **kw) -> Split:
    """32 features, 10 classes: the MLP cases."""
    return clusters((32,), 10, seed, **kw)


def images(seed: int, **kw) -> Split:
    """3x12x12 images, 4 classes: the CNN cases."""
    return clusters((3, 12, 12), 4, seed, n_train=1500, **kw)


def sequences(seed: int, **kw) -> Split:
    """Sequences of 16 steps of 8 features, 4 classes: the recurrent and attention cases."""
    return clusters((16, 8), 4, seed, n_train=1500, **kw)
