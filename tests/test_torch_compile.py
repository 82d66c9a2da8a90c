"""torch.compile: activations are seen whether the model is compiled before or after watch().

Compiling with the ``eager`` backend runs TorchDynamo, which decides whether
hooks are part of the compiled code, without the minutes a C++ backend
takes on two cores; the hooks' fate does not depend on the backend.
"""
from __future__ import annotations

import logging

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from nnhealth import Monitor  # noqa: E402
from torch_training import training_steps  # noqa: E402

try:
    import torch._dynamo  # noqa: F401, E402
except Exception as e:  # pragma: no cover - a build without the compiler
    pytest.skip(f"torch.compile is unavailable in this build: {e}", allow_module_level=True)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(16, 16)
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        return self.out(torch.tanh(self.fc2(self.act(self.fc1(x)))))


def run(order: str, steps: int = 6, **options):
    torch._dynamo.reset()
    torch.manual_seed(0)
    net = Net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    mon = Monitor(every=2, console=False)
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    if order == "watch, then compile":
        mon.watch(net, opt)
        model = torch.compile(net, backend="eager")
    else:
        model = torch.compile(net, backend="eager")
        F.cross_entropy(model(x), y).backward()  # compiled and run: hooks added now would be skipped
        opt.zero_grad()
        from nnhealth.hooks.torch import attach

        mon._watchers.append(attach(mon, model, opt, **options))
    training_steps(model, opt, mon, x, y, steps)
    mon.close()
    return mon


@pytest.mark.parametrize("order", ["watch, then compile", "compile, then watch"])
def test_compiled_model_shows_module_and_functional_activations(order, caplog):
    with caplog.at_level(logging.INFO, logger="nnhealth"):
        mon = run(order)
    h = mon.history
    assert h.names("activation") == ["act", "tanh"]
    assert len(h.summaries("activation", "act")) == 3  # every sampled step, none of the others
    assert h.names("input") == ["input"]
    assert len(h.values("fc1.weight", "gradient/norm")) == 3
    if order == "compile, then watch":
        assert any("recompil" in r.getMessage() for r in caplog.records)


def test_compile_then_watch_without_function_mode_still_sees_module_activations():
    mon = run("compile, then watch", functional=False)
    assert mon.history.names("activation") == ["act"]


def test_compiled_code_that_skips_the_hooks_is_named_loudly_once(monkeypatch, caplog):
    import nnhealth.hooks.torch as adapter

    monkeypatch.setattr(adapter, "refresh", lambda model: False)  # a PyTorch that cannot recompile
    with caplog.at_level(logging.INFO, logger="nnhealth"):
        mon = run("compile, then watch", steps=8, functional=False)
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert mon.history.names("activation") == []
    assert len(loud) == 1 and "never reached nnhealth's hooks" in loud[0]
    assert "Fix: call mon.watch(model, optimizer) before torch.compile(model)" in loud[0]
    assert len(mon.history.values("fc1.weight", "gradient/norm")) == 4  # gradients keep working
