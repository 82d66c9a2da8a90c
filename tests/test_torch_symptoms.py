"""Every layer-level symptom, caused for real in a PyTorch training run, is found through watch().

Two patients: an MLP whose activations are modules (``nn.ReLU``, ``nn.Tanh``...)
and a small CNN with BatchNorm whose first activation is a module and second
a function (``F.relu``). The MLP with functional activations is the demo
network (``test_torch_demo.py``). Each fault is one of the lecture's; the
test asserts the symptom is reported, at the right place, by the time the
short run ends.
"""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from nnhealth import Monitor  # noqa: E402
from torch_training import clusters  # noqa: E402

ACTIVATION = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _flush_denormals():
    torch.set_flush_denormal(True)  # vanishing activations are subnormal floats: slow on a CPU
    yield
    torch.set_flush_denormal(False)


def mlp(depth=3, width=64, act="relu", init="he", bias=0.0):
    layers, n_in = [], 32
    for _ in range(depth):
        linear = nn.Linear(n_in, width)
        gain = math.sqrt(2.0) if act == "relu" else 1.0
        with torch.no_grad():
            if init == "zero":
                linear.weight.zero_()
            elif init == "he":
                linear.weight.normal_(0.0, gain / math.sqrt(n_in))
            else:  # a number: that many times the recommended scale, or a fixed std when negative
                std = -init if init < 0 else init * gain / math.sqrt(n_in)
                linear.weight.normal_(0.0, std)
            linear.bias.fill_(bias)
        layers += [linear, ACTIVATION[act]()]
        n_in = width
    return nn.Sequential(*layers, nn.Linear(n_in, 10))


class CNN(nn.Module):
    """conv-BN-ReLU (module), pool, conv-BN-relu (function), pool, linear; BN and init switchable."""

    def __init__(self, act="relu", bn=True, init_std=None, bn_bias=(0.0, 0.0, 0.0, 0.0), depth=2):
        super().__init__()
        chans = [3] + [8 * 2 ** min(i, 1) for i in range(depth)]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1, bias=not bn) for a, b in zip(chans, chans[1:]))
        self.norms = nn.ModuleList(nn.BatchNorm2d(b) if bn else nn.Identity() for b in chans[1:])
        self.act = ACTIVATION[act]()
        self.fn = {"relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}[act]
        self.head = nn.Linear(chans[-1], 4)
        with torch.no_grad():
            for conv, norm, beta in zip(self.convs, self.norms, bn_bias):
                if init_std is not None:
                    conv.weight.normal_(0.0, init_std)
                if bn:
                    norm.bias.fill_(beta)  # BatchNorm's shift: -3 puts the ReLU after it off for good

    def forward(self, x):
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = norm(conv(x))
            x = self.act(x) if i == 0 else self.fn(x)
            if i < 2:
                x = F.max_pool2d(x, 2)
        return self.head(x.mean((2, 3)))


def fit(model, x, y, *, steps=40, every=5, lr=0.02, optimizer="sgd", nan_steps=(), batch=64):
    """A real training loop, watched; returns {symptom: [places]} of what was reported."""
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9 if optimizer == "sgd" else 0.0)
    mon = Monitor(every=every, console=False).watch(model, opt)
    g = torch.Generator().manual_seed(0)
    for step in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        xb = x[idx].clone()
        if step in nan_steps:
            xb[:4] = float("nan")
        loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad()
        loss.backward()
        if step not in nan_steps:  # keep the weights finite: the NaN batch is observed, not learned
            opt.step()
        mon.step(step, loss=loss)
    mon.close()
    found: dict[str, list] = {}
    for f in mon.findings:
        found.setdefault(f.symptom, []).append(f.where)
    return found


def unnormalized(x):
    """Features as they come: offset +50, scales from 1 to 1000; images as raw 0..255 pixels."""
    if x.ndim == 2:
        g = torch.Generator().manual_seed(2)
        return x * torch.logspace(0, 3, x.shape[1])[torch.randperm(x.shape[1], generator=g)] + 50.0
    return (x * 40.0 + 128.0).clamp(0.0, 255.0)


MLP_DATA = clusters(1000, (32,), 10)
IMAGES = clusters(600, (3, 8, 8), 4, seed=1, noise=2.0)

CASES = {
    # symptom: (patient, model factory, fit options, where the finding must point)
    "dead-relu/mlp": ("mlp", lambda: mlp(bias=-5.0), {}, "dead-relu", "1"),
    "dead-relu/cnn": ("cnn", lambda: CNN(bn_bias=(-3.0, 0.0)), {}, "dead-relu", "act"),
    "dead-relu/cnn-functional": ("cnn", lambda: CNN(bn_bias=(0.0, -3.0)), {}, "dead-relu", "relu"),
    "saturated/mlp": ("mlp", lambda: mlp(act="tanh", init=-1.0, width=128), {}, "saturated-activations", "1"),
    "saturated/cnn": ("cnn", lambda: CNN(act="tanh", bn=False, init_std=1.5), {}, "saturated-activations", None),
    "vanishing-activations/mlp": ("mlp", lambda: mlp(depth=8, act="tanh", init=-0.01, width=128), {},
                                  "vanishing-activations", None),
    "vanishing-gradients/mlp": ("mlp", lambda: mlp(depth=8, act="tanh", init=-0.01, width=128), {},
                                "vanishing-gradients", "0.weight"),
    "exploding-activations/mlp": ("mlp", lambda: mlp(depth=6, init=3.0), {"lr": 1e-6}, "exploding-activations",
                                  None),
    "exploding-activations/cnn": ("cnn", lambda: CNN(bn=False, init_std=1.0, depth=4), {"lr": 1e-7},
                                  "exploding-activations", None),
    # Adam moves every weight by ~lr per step: with lr 0.5 that is most of a weight's size at first
    "update-ratio-high/mlp": ("mlp", lambda: mlp(), {"optimizer": "adam", "lr": 0.5, "every": 2},
                              "update-ratio-high", None),
    "update-ratio-high/cnn": ("cnn", lambda: CNN(), {"optimizer": "adam", "lr": 0.5, "every": 2},
                              "update-ratio-high", None),
    "update-ratio-low/mlp": ("mlp", lambda: mlp(), {"optimizer": "plain", "lr": 1e-5}, "update-ratio-low", None),
    "weights-symmetric/mlp": ("mlp", lambda: mlp(act="sigmoid", init="zero"), {"steps": 10},
                              "weights-symmetric", "0.weight"),
    "non-finite-values/mlp": ("mlp", lambda: mlp(), {"nan_steps": (10,), "steps": 12}, "non-finite-values",
                              "input"),
    "non-finite-values/cnn": ("cnn", lambda: CNN(), {"nan_steps": (10,), "steps": 12}, "non-finite-values",
                              "input"),
    "input-not-normalized/mlp": ("mlp", lambda: mlp(), {"lr": 1e-6, "raw": True}, "input-not-normalized", "input"),
    "input-not-normalized/cnn": ("cnn", lambda: CNN(), {"lr": 1e-6, "raw": True}, "input-not-normalized", "input"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_symptom_is_found_through_watch(case):
    patient, factory, options, symptom, where = CASES[case]
    torch.manual_seed(0)
    x, y = MLP_DATA if patient == "mlp" else IMAGES
    options = dict(options)
    if options.pop("raw", False):
        x = unnormalized(x)
    found = fit(factory(), x, y, **options)
    assert symptom in found, f"{case}: found {found}"
    if where is not None:
        assert where in found[symptom], f"{case}: {symptom} at {found[symptom]}"
