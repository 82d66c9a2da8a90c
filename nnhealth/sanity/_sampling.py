"""Which samples a check uses: a seeded draw, so a check gives the same verdict every run."""
from __future__ import annotations

import numpy as np


def draw(n_available: int, n: int, seed: int) -> np.ndarray:
    """``n`` distinct sample indices out of ``n_available`` (all of them when there are fewer)."""
    return np.random.default_rng(seed).permutation(n_available)[:min(n, n_available)]
