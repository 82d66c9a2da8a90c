"""The detection benchmark's cases: importing this package registers every one in :data:`CASES`."""
from . import numpy_cases, torch_mlp_cases, torch_modern_cases  # noqa: F401  (each registers its cases)
from .case import CASES, Case, Proof, Result, run

__all__ = ["CASES", "Case", "Proof", "Result", "run"]
