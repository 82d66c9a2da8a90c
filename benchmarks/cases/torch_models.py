"""The PyTorch patients: an MLP with switchable initialisation, and three modern architectures.

Each is written the way its healthy recipe says (He init for ReLU, BatchNorm
in a residual CNN, LayerNorm/GELU in a Transformer, a GRU whose gradients are
clipped by the training loop); a fault case changes one knob.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}


class MLP(nn.Sequential):
    """``depth`` Linear + activation blocks and a linear head.

    ``gain`` scales the recommended initialisation (He for ReLU, Xavier
    otherwise); ``std`` replaces it with a fixed std; ``bias`` fills every
    hidden bias.
    """

    def __init__(self, n_in: int = 32, classes: int = 10, depth: int = 2, width: int = 128, act: str = "relu",
                 gain: float = 1.0, std: float | None = None, bias: float = 0.0, head_gain: float = 0.3):
        layers, fan_in = [], n_in
        for _ in range(depth):
            linear = nn.Linear(fan_in, width)
            recommended = (math.sqrt(2.0) if act == "relu" else 1.0) / math.sqrt(fan_in)
            with torch.no_grad():
                linear.weight.normal_(0.0, std if std is not None else gain * recommended)
                linear.bias.fill_(bias)
            layers += [linear, ACTIVATIONS[act]()]
            fan_in = width
        head = nn.Linear(fan_in, classes)
        with torch.no_grad():
            head.weight.mul_(head_gain)  # small logits: the first loss is about ln(C)
            head.bias.zero_()
        super().__init__(*layers, head)


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the input, then ReLU (the ResNet basic block)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.act1, self.act2 = nn.ReLU(), nn.ReLU()

    def forward(self, x):
        h = self.act1(self.bn1(self.conv1(x)))
        return self.act2(x + self.bn2(self.conv2(h)))


class ResidualCNN(nn.Module):
    """A stem (conv-BN-ReLU), two residual blocks with a pooling between, global pooling, a linear head.

    ``stem_shift`` fills the stem BatchNorm's bias (beta): a large negative
    shift puts the ReLU after it below zero for every input.
    """

    def __init__(self, classes: int = 4, channels: int = 16, stem_shift: float = 0.0):
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(channels)
        self.stem_act = nn.ReLU()
        self.block1 = ResidualBlock(channels)
        self.block2 = ResidualBlock(channels)
        self.head = nn.Linear(channels, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        with torch.no_grad():
            self.stem_bn.bias.fill_(stem_shift)

    def forward(self, x):
        x = self.stem_act(self.stem_bn(self.stem(x)))
        x = F.max_pool2d(self.block1(x), 2)
        x = self.block2(x)
        return self.head(x.mean((2, 3)))


class TinyTransformer(nn.Module):
    """Linear embedding + learned positions, a 2-layer Transformer encoder (LayerNorm, GELU), mean pooling."""

    def __init__(self, n_in: int = 8, length: int = 16, classes: int = 4, d_model: int = 32, heads: int = 4,
                 layers: int = 2, norm_first: bool = True):
        super().__init__()
        self.embed = nn.Linear(n_in, d_model)
        self.position = nn.Parameter(0.02 * torch.randn(length, d_model))
        layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=4 * d_model, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, classes)

    def forward(self, x):
        h = self.encoder(self.embed(x) + self.position)
        return self.head(self.norm(h).mean(1))


class GRUClassifier(nn.Module):
    """A one-layer GRU over the sequence; the last hidden state goes through a linear head."""

    def __init__(self, n_in: int = 8, classes: int = 4, hidden: int = 64):
        super().__init__()
        self.gru = nn.GRU(n_in, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        out, _ = self.gru(x)
        return self.head(out[:, -1])


class RNNClassifier(nn.Module):
    """A one-layer tanh RNN (orthogonal recurrent weights); the last hidden state goes through a linear head."""

    def __init__(self, n_in: int = 8, classes: int = 4, hidden: int = 64):
        super().__init__()
        self.rnn = nn.RNN(n_in, hidden, batch_first=True, nonlinearity="tanh")
        self.head = nn.Linear(hidden, classes)
        nn.init.orthogonal_(self.rnn.weight_hh_l0)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])
