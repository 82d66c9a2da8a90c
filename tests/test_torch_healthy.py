"""Healthy PyTorch training raises no warning: the rules' thresholds hold on real, well-set-up runs.

Three twins of the sick patients, each set up the way the lecture says:
an MLP with He initialisation and Adam (with module activations, and with
functional ones), a CNN with BatchNorm and SGD with momentum, and a tiny
Transformer encoder (LayerNorm, GELU) with AdamW.
"""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from nnhealth import Monitor  # noqa: E402
from torch_training import clusters  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class MLP(nn.Module):
    def __init__(self, functional: bool):
        super().__init__()
        self.functional = functional
        self.fc1, self.fc2, self.out = nn.Linear(32, 128), nn.Linear(128, 128), nn.Linear(128, 10)
        self.act1, self.act2 = nn.ReLU(), nn.ReLU()
        for layer in (self.fc1, self.fc2):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)

    def forward(self, x):
        if self.functional:
            return self.out(F.relu(self.fc2(F.relu(self.fc1(x)))))
        return self.out(self.act2(self.fc2(self.act1(self.fc1(x)))))


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32)
        self.act = nn.ReLU()
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        x = F.max_pool2d(self.act(self.bn1(self.conv1(x))), 2)
        x = F.relu(self.bn2(self.conv2(x)))
        return self.head(x.mean((2, 3)))


class TinyTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(16, 32)
        layer = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, dropout=0.0, activation="gelu",
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(32)
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        return self.head(self.norm(self.encoder(self.embed(x))).mean(1))


def fit(model, opt, x, y, steps, classes, every=5, batch=64):
    mon = Monitor(every=every, num_classes=classes, console=False).watch(model, opt)
    g = torch.Generator().manual_seed(0)
    losses = []
    for step in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.step(step, loss=loss)
        losses.append(loss.item())
    mon.close()
    return mon, losses


def assert_healthy(mon, losses, activations):
    loud = [f.line() for f in mon.findings if f.severity != "info"]
    assert not loud, "\n".join(loud)
    assert sum(losses[-10:]) / 10 < 0.8 * losses[0]  # it did learn: the silence is not from a dead run
    assert mon.history.names("activation") == activations
    sampled = len(mon.history.values(None, "loss")) // 5
    for name in mon.history.names("update"):  # every weight's update was measured on every sampled step
        if mon.history.meta[name]["ndim"] >= 2:
            assert len(mon.history.values(name, "update/ratio")) == sampled, name


@pytest.mark.parametrize("functional", [False, True], ids=["module-relu", "functional-relu"])
def test_mlp_he_init_adam(functional):
    torch.manual_seed(0)
    x, y = clusters(2000, (32,), 10)
    model = MLP(functional)
    mon, losses = fit(model, torch.optim.Adam(model.parameters(), lr=1e-3), x, y, steps=150, classes=10)
    assert_healthy(mon, losses, ["relu", "relu_1"] if functional else ["act1", "act2"])
    assert math.isclose(mon.history.values(None, "loss")[0], math.log(10), rel_tol=0.25)


def test_batchnorm_cnn_sgd_momentum():
    torch.manual_seed(0)
    x, y = clusters(1000, (3, 12, 12), 4, seed=1, noise=2.0)
    model = CNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    mon, losses = fit(model, opt, x, y, steps=100, classes=4)
    assert_healthy(mon, losses, ["act", "relu"])


def test_tiny_transformer_layernorm_gelu_adamw():
    torch.manual_seed(0)
    x, y = clusters(1000, (12, 16), 4, seed=2, noise=2.0)
    model = TinyTransformer()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    mon, losses = fit(model, opt, x, y, steps=100, classes=4)
    assert_healthy(mon, losses, ["encoder.layers.0.gelu", "encoder.layers.1.gelu"])
