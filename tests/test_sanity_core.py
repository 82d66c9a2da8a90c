"""The checklist's framework-agnostic core: a Subject written in numpy, result objects, no torch import."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from nnhealth import sanity
from nnhealth.sanity import CheckResult, Checklist, Evaluation, Fit, Subject


class SoftmaxRegression(Subject):
    """A linear softmax classifier trained by full-batch gradient descent, in plain numpy."""

    def __init__(self, X, y, classes, *, l2=None, loss_scale=1.0, init_scale=0.01, lr=0.5):
        self.X, self.y, self.classes = np.asarray(X, float), np.asarray(y), classes
        self.n_samples, self.num_classes = len(self.X), classes
        self.has_regularization = l2 is not None
        self.l2, self.loss_scale, self.lr = l2, loss_scale, lr
        self.W0 = np.random.default_rng(0).standard_normal((self.X.shape[1], classes)) * init_scale

    def _losses(self, W, X, y):
        logits = X @ W
        logits = logits - logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return -logp[np.arange(len(y)), y] * self.loss_scale, logp

    def loss(self, idx, regularized=False):
        value = float(self._losses(self.W0, self.X[idx], self.y[idx])[0].mean())
        return value + (0.5 * self.l2 * float((self.W0 ** 2).sum()) if regularized else 0.0)

    def gradient_norms(self, idx):
        _, logp = self._losses(self.W0, self.X[idx], self.y[idx])
        p = np.exp(logp)
        p[np.arange(len(idx)), self.y[idx]] -= 1
        return {"W": float(np.linalg.norm(self.X[idx].T @ p / len(idx)))}

    def train(self, idx, steps, *, zero_inputs=False, until_fit=False, seed=0):
        X = np.zeros_like(self.X[idx]) if zero_inputs else self.X[idx]
        X = np.hstack([X, np.ones((len(X), 1))])   # a bias, so the zero-input model can learn class priors
        y, W, losses = self.y[idx], np.vstack([self.W0, np.zeros((1, self.classes))]), []
        step = 0
        for step in range(1, steps + 1):
            per, logp = self._losses(W, X, y)
            losses.append(float(per.mean()))
            p = np.exp(logp)
            if until_fit and np.all(p.argmax(1) == y):
                break
            p[np.arange(len(y)), y] -= 1
            W = W - self.lr * X.T @ p / len(y)
        return Fit(losses, step, W)

    def evaluate(self, fit, idx, zero_inputs=False, training_mode=False):
        X = np.zeros_like(self.X[idx]) if zero_inputs else self.X[idx]
        X = np.hstack([X, np.ones((len(X), 1))])
        per, logp = self._losses(fit.model, X, self.y[idx])
        return Evaluation(per, logp.argmax(1) == self.y[idx])


def blobs(n=400, dim=10, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    centres = 2.0 * rng.standard_normal((classes, dim))
    y = rng.integers(classes, size=n)
    return centres[y] + rng.standard_normal((n, dim)), y


def test_a_correct_numpy_model_passes_the_whole_checklist():
    X, y = blobs()
    report = sanity.run_all(SoftmaxRegression(X, y, 4, l2=1e-2))
    assert isinstance(report, Checklist) and report.passed, str(report)
    assert [r.check for r in report] == ["initial-loss", "gradient-flow", "overfit-small-subset", "input-dependence"]
    assert report["initial-loss"].measured["expected"] == pytest.approx(math.log(4))
    assert report["initial-loss"].measured["loss_with_regularization"] > report["initial-loss"].measured["loss"]
    assert report["overfit-small-subset"].measured["train_accuracy"] == 1.0
    assert report["input-dependence"].measured["z"] > 5


def test_shuffled_labels_fail_input_dependence_only():
    X, y = blobs()
    y = np.random.default_rng(1).permutation(y)
    report = sanity.run_all(SoftmaxRegression(X, y, 4))
    assert [r.check for r in report.failed] == ["input-dependence"], str(report)
    result = report["input-dependence"]
    assert result.measured["held_out_loss"] >= result.measured["zero_input_loss"] - 0.05
    assert "paired" in result.advice


def test_a_summed_loss_fails_the_initial_loss_check_and_says_why():
    X, y = blobs()
    result = sanity.check_initial_loss(SoftmaxRegression(X, y, 4, loss_scale=64.0), batch_size=64)
    assert result.failed
    assert result.measured["ratio"] == pytest.approx(64, rel=0.1)
    assert "summed over the batch" in result.advice


def test_an_overconfident_start_and_a_too_good_start_both_fail():
    X, y = blobs()
    high = sanity.check_initial_loss(SoftmaxRegression(X, y, 4, init_scale=5.0))
    assert high.failed and "overconfident" in high.advice
    low = sanity.check_initial_loss(SoftmaxRegression(X, y, 4, loss_scale=0.1))
    assert low.failed and "better than chance" in low.advice


def test_regularisation_that_does_not_raise_the_loss_fails():
    X, y = blobs()
    result = sanity.check_initial_loss(SoftmaxRegression(X, y, 4, l2=-1.0))
    assert result.failed and "did not raise the loss" in result.message


def test_not_applicable_checks_skip_with_a_reason():
    X, y = blobs(n=30)
    subject = SoftmaxRegression(X, y, 4)
    result = sanity.check_input_dependence(subject)
    assert result.status == "skip" and "too few" in result.message and not result.passed and not result.failed
    subject.num_classes = None
    assert sanity.check_initial_loss(subject).status == "skip"
    checklist = Checklist((CheckResult("a", "skip", "n/a"),))
    assert not checklist.passed and not checklist.failed


def test_non_finite_losses_fail_instead_of_passing_silently():
    X, y = blobs()
    X[0, 0] = np.nan
    subject = SoftmaxRegression(X, y, 4)
    everything = np.arange(len(X))
    assert not math.isfinite(subject.loss(everything))
    result = sanity.check_initial_loss(subject, batch_size=len(X))
    assert result.failed and "not finite" in result.message


def test_results_read_well_and_validate():
    r = CheckResult("initial-loss", "fail", "loss 147 is 64x ln(10)", {"loss": 147.0, "names": ["a"]}, "average it")
    assert r.line() == "FAIL initial-loss: loss 147 is 64x ln(10)"
    assert str(r).splitlines() == ["FAIL initial-loss: loss 147 is 64x ln(10)", "       loss=147, names=[a]",
                                   "    -> average it"]
    with pytest.raises(ValueError, match="status"):
        CheckResult("x", "ok", "")
    report = Checklist((r, CheckResult("gradient-flow", "pass", "fine")))
    assert not report.passed and report.failed == [r] and len(report) == 2
    assert str(report).splitlines()[0] == "nnhealth sanity checklist: 1 passed, 1 failed"
    with pytest.raises(KeyError, match="ran: initial-loss, gradient-flow"):
        report["overfit"]


def test_bad_arguments_are_refused():
    X, y = blobs()
    subject = SoftmaxRegression(X, y, 4)
    with pytest.raises(TypeError, match="already a Subject"):
        sanity.check_gradient_flow(subject, X, y)
    with pytest.raises(TypeError, match="no sanity-check support for list"):
        sanity.run_all([1, 2], X, y)
    with pytest.raises(ValueError, match="tolerance"):
        sanity.check_initial_loss(subject, tolerance=0)
    with pytest.raises(ValueError, match="held_out"):
        sanity.check_input_dependence(subject, held_out=1.5)
    with pytest.raises(ValueError, match="min_accuracy"):
        sanity.overfit_small_subset(subject, min_accuracy=0)


def test_the_sanity_package_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"   # any 'import torch' now fails
            "import nnhealth.sanity as s\n"
            "try:\n    s.run_all(object(), [1], [1])\nexcept TypeError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "no sanity-check support for object" in out.stdout
