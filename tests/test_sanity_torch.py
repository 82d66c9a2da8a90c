"""The checklist on real PyTorch models: a correct one passes, each classic bug fails the check meant for it."""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from nnhealth import sanity  # noqa: E402
from nnhealth.sanity.torch import TorchSubject  # noqa: E402

CLASSES, DIM = 5, 16


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def clusters(n=600, seed=0):
    """Three Gaussian clusters per class: learnable, and only from the inputs."""
    g = torch.Generator().manual_seed(seed)
    centres = 1.5 * torch.randn(3 * CLASSES, DIM, generator=g)
    cid = torch.randint(0, len(centres), (n,), generator=g)
    return centres[cid] + 0.7 * torch.randn(n, DIM, generator=g), cid % CLASSES


class MLP(nn.Module):
    def __init__(self, detach_first=False, ignore_input=False, out_scale=1.0, batchnorm_dropout=False):
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(DIM, 64), nn.Linear(64, 64), nn.Linear(64, CLASSES)
        self.norm = nn.BatchNorm1d(64) if batchnorm_dropout else nn.Identity()
        self.drop = nn.Dropout(0.5) if batchnorm_dropout else nn.Identity()
        self.detach_first, self.ignore_input = detach_first, ignore_input
        with torch.no_grad():
            self.out.weight.mul_(out_scale)

    def forward(self, x):
        if self.ignore_input:
            x = torch.ones_like(x)             # the bug: the input is overwritten
        h = F.relu(self.norm(self.fc1(x)))
        if self.detach_first:
            h = h.detach()                     # the bug: fc1 is cut out of the graph
        return self.out(self.drop(F.relu(self.fc2(h))))


def test_a_correct_model_passes_every_check():
    X, y = clusters()
    report = sanity.run_all(MLP(), X, y, regularization=1e-3)
    assert report.passed, str(report)
    assert report["initial-loss"].measured["ratio"] == pytest.approx(1.0, abs=0.1)
    assert report["overfit-small-subset"].measured["train_accuracy"] == 1.0
    assert report["input-dependence"].measured["held_out_accuracy"] > 0.8


def test_batchnorm_dropout_and_the_users_optimizer_settings_are_handled():
    X, y = clusters()
    model = MLP(batchnorm_dropout=True)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.5)   # decay switched off for the checks
    report = sanity.run_all(model, X, y, optimizer=opt)
    assert report.passed, str(report)


def test_the_users_model_is_left_untouched():
    X, y = clusters()
    model = MLP(batchnorm_dropout=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    sanity.run_all(model, X, y, regularization=1e-3)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)   # weights and batch-norm statistics
    assert all(p.grad is None for p in model.parameters())
    assert not model.training


def test_shuffled_labels_fail_input_dependence():
    X, y = clusters()
    shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))]
    report = sanity.run_all(MLP(), X, shuffled)
    result = report["input-dependence"]
    assert result.failed, str(report)
    assert result.measured["held_out_accuracy"] < 0.35        # chance is 0.2: nothing learned from the inputs
    assert report["initial-loss"].passed and report["gradient-flow"].passed


def test_labels_reshuffled_every_batch_fail_the_overfit_check():
    X, y = clusters()

    def loss_with_a_loader_bug(out, target):   # inputs and labels shuffled separately each batch
        return F.cross_entropy(out, target[torch.randperm(len(target))])

    result = sanity.overfit_small_subset(MLP(), X, y, loss_fn=loss_with_a_loader_bug)
    assert result.failed, str(result)
    assert result.measured["train_accuracy"] < 0.8 and result.measured["steps"] == 300
    assert "check_gradient_flow" in result.advice


def test_a_detached_layer_fails_gradient_flow_and_is_named():
    X, y = clusters()
    report = sanity.run_all(MLP(detach_first=True), X, y)
    result = report["gradient-flow"]
    assert result.failed, str(report)
    assert result.measured["disconnected"] == ["fc1.weight", "fc1.bias"]
    assert "detach" in result.advice
    assert report["initial-loss"].passed


def test_a_summed_loss_fails_the_initial_loss_check():
    X, y = clusters()
    result = sanity.check_initial_loss(MLP(), X, y, loss_fn=nn.CrossEntropyLoss(reduction="sum"))
    assert result.failed
    assert result.measured["ratio"] == pytest.approx(64, rel=0.15)     # the batch size
    assert "reduction='mean'" in result.advice


def test_a_wrongly_scaled_last_layer_fails_the_initial_loss_check():
    X, y = clusters()
    result = sanity.check_initial_loss(MLP(out_scale=30.0), X, y)
    assert result.failed and result.measured["ratio"] > 1.5
    assert "last layer start small" in result.advice


def test_a_loss_on_raw_logits_starts_too_low():
    X, y = clusters()
    result = sanity.check_initial_loss(MLP(), X, y, loss_fn=F.nll_loss)   # nll_loss without log_softmax
    assert result.failed and result.measured["ratio"] < 0.5


def test_regularisation_must_raise_the_loss():
    X, y = clusters()
    model = MLP()
    good = sanity.check_initial_loss(model, X, y, regularization=1e-2)
    assert good.passed and good.measured["loss_with_regularization"] > good.measured["loss"]
    wrong_sign = sanity.check_initial_loss(model, X, y, regularization=lambda m: -1e-2 * m.fc1.weight.pow(2).sum())
    assert wrong_sign.failed and "did not raise" in wrong_sign.message


def test_a_model_that_ignores_its_input_fails_input_dependence():
    X, y = clusters()
    report = sanity.run_all(MLP(ignore_input=True), X, y)
    assert report["input-dependence"].failed, str(report)
    assert report["overfit-small-subset"].failed   # nor can it memorise anything


def test_binary_and_regression_models_get_their_own_defaults():
    X, y = clusters()
    binary = (y % 2).float()
    model = nn.Sequential(nn.Linear(DIM, 32), nn.ReLU(), nn.Linear(32, 1))
    report = sanity.run_all(model, X, binary)
    assert report["initial-loss"].measured["expected"] == pytest.approx(math.log(2))
    assert report.passed, str(report)
    target = X[:, :3].sum(dim=1, keepdim=True)
    regression = sanity.run_all(nn.Sequential(nn.Linear(DIM, 32), nn.ReLU(), nn.Linear(32, 1)), X, target)
    assert regression["initial-loss"].status == "skip"
    assert regression["overfit-small-subset"].passed and "loss_ratio" in regression["overfit-small-subset"].measured
    assert regression["input-dependence"].passed


def test_a_subject_is_built_once_and_checked_against_bad_input():
    X, y = clusters(n=100)
    subject = TorchSubject(MLP(), X, y)
    assert subject.num_classes == CLASSES and subject.task == "multiclass"
    assert sanity.as_subject(subject) is subject
    with pytest.raises(ValueError, match="same number"):
        TorchSubject(MLP(), X, y[:50])
    with pytest.raises(ValueError, match="regularization"):
        TorchSubject(MLP(), X, y, regularization=-1.0)
    with pytest.raises(TypeError, match="need data"):
        sanity.check_gradient_flow(MLP())


@pytest.mark.parametrize("module", ["nnhealth.sanity", "nnhealth.sanity.initial_loss", "nnhealth.sanity.gradient_flow",
                                    "nnhealth.sanity.overfit", "nnhealth.sanity.input_dependence",
                                    "nnhealth.sanity.checklist"])
def test_the_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
