"""Attaching and detaching: hooks fail open, close() leaves nothing behind, misuse is refused clearly."""
from __future__ import annotations

import gc
import logging
import weakref

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.modules import module as module_globals  # noqa: E402

import nnhealth.hooks._torch_forward as forward_part  # noqa: E402
import nnhealth.hooks._torch_optim as optim_part  # noqa: E402
from nnhealth import Monitor  # noqa: E402
from torch_training import training_steps  # noqa: E402
from nnhealth.hooks.torch import attach  # noqa: E402


def make():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))
    return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def loop(model, opt, mon, steps, start=0):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 8, generator=g), torch.randint(0, 3, (32,), generator=g)
    return training_steps(model, opt, mon, x, y, steps, start)


def hooks_left(model, opt) -> int:
    n = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())
    n += sum(len(p._post_accumulate_grad_hooks or {}) for p in model.parameters()
             if getattr(p, "_post_accumulate_grad_hooks", None) is not None)
    return n + len(opt._optimizer_step_pre_hooks) + len(opt._optimizer_step_post_hooks)


def test_close_removes_every_hook_and_every_reference():
    model, opt = make()
    off = Monitor(every=3, console=False).watch(model, opt)
    loop(model, opt, off, 2)  # step 2 is not sampled: the hooks are off (taken off between sampled steps)
    assert hooks_left(model, opt) == 0
    off.close()
    assert hooks_left(model, opt) == 0
    mon = Monitor(every=2, console=False).watch(model, opt)
    loop(model, opt, mon, 4)  # step 4 is sampled next: the hooks are on
    assert hooks_left(model, opt) > 0
    watcher = weakref.ref(mon._watchers[0])
    ref = weakref.ref(mon)
    mon.close()
    assert hooks_left(model, opt) == 0
    assert not module_globals._global_forward_hooks and not module_globals._global_forward_pre_hooks
    assert not torch._C._is_torch_function_mode_enabled()
    del mon
    gc.collect()
    assert ref() is None and watcher() is None  # the model and optimizer keep nothing of nnhealth alive
    loop(model, opt, Monitor(every=1, console=False), 2)  # and still train


def test_close_in_the_middle_of_a_forward_leaves_no_mode_behind():
    model, opt = make()
    mon = Monitor(every=1, console=False).watch(model, opt)

    class Closer(nn.Module):
        def forward(self, x):
            mon.close()
            return x

    model.insert(1, Closer())
    loop(model, opt, mon, 1)
    assert not torch._C._is_torch_function_mode_enabled()
    assert not module_globals._global_forward_hooks


def test_a_failing_hook_is_reported_once_and_switched_off(monkeypatch, caplog):
    model, opt = make()
    calls = {"n": 0}

    def broken(*args, **kwargs):
        calls["n"] += 1
        raise RuntimeError("boom")

    monkeypatch.setattr(forward_part, "summarize", broken)
    mon = Monitor(every=1, console=False).watch(model, opt)
    with caplog.at_level(logging.ERROR, logger="nnhealth"):
        loss = loop(model, opt, mon, 4)  # the training loop never sees the error
    assert torch.isfinite(loss)
    failures = [r for r in caplog.records if "failed and is disabled" in r.getMessage()]
    assert {r.getMessage().split(" failed")[0] for r in failures} == {"nnhealth: hook:activation:1",
                                                                      "nnhealth: hook:activation:3"}
    assert calls["n"] == 2  # each broken hook ran once, then stayed off
    assert mon.history.names("activation") == []
    assert len(mon.history.values("0.weight", "gradient/norm")) == 4  # the other hooks kept working
    assert not torch._C._is_torch_function_mode_enabled()
    mon.close()


def test_a_failing_optimizer_hook_never_breaks_the_step(monkeypatch, caplog):
    model, opt = make()
    monkeypatch.setattr(optim_part, "header_rows", lambda *a, **k: 1 / 0)
    mon = Monitor(every=1, console=False).watch(model, opt)
    before = model[0].weight.detach().clone()
    with caplog.at_level(logging.ERROR, logger="nnhealth"):
        loop(model, opt, mon, 3)
    assert not torch.equal(before, model[0].weight)  # the optimizer still stepped
    assert sum("hook:optimizer failed" in r.getMessage() for r in caplog.records) == 1
    assert mon.history.names("activation") == ["1", "3"]
    mon.close()


def test_strict_monitor_reraises_hook_errors(monkeypatch):
    model, opt = make()
    monkeypatch.setattr(forward_part, "summarize", lambda *a, **k: 1 / 0)
    mon = Monitor(every=1, console=False, strict=True).watch(model, opt)
    with pytest.raises(ZeroDivisionError):
        loop(model, opt, mon, 1)
    mon.close()


def test_watch_refuses_what_it_cannot_watch():
    model, opt = make()
    mon = Monitor(console=False)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        mon.watch(lambda x: x)
    with pytest.raises(TypeError, match="optimizer"):
        mon.watch(model, optimizer="sgd")
    mon.watch(model, opt)
    with pytest.raises(ValueError, match="already watched"):
        mon.watch(model, opt)
    mon.close()


def test_attach_gives_a_watcher_that_detaches_alone():
    model, opt = make()
    mon = Monitor(every=1, console=False)
    watcher = attach(mon, model, opt)
    loop(model, opt, mon, 1)
    watcher.close()
    assert hooks_left(model, opt) == 0
    assert "closed" in repr(watcher)
    mon.close()


def test_without_optimizer_gradients_are_read_when_backward_ends():
    model, opt = make()
    mon = Monitor(every=1, console=False).watch(model)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 8, generator=g), torch.randint(0, 3, (32,), generator=g)
    for _ in range(2):  # gradient accumulation: the gradient read is the accumulated one
        F.cross_entropy(model(x), y).backward()
    want = model[0].weight.grad.norm().item()
    mon.step(0, loss=torch.tensor(1.0))
    assert mon.history.values("0.weight", "gradient/norm")[-1] == pytest.approx(want, rel=1e-5)
    assert mon.history.names("update") == []
    mon.close()


def test_a_part_that_cannot_be_set_up_leaves_the_others_watching(monkeypatch, caplog):
    import nnhealth.hooks.torch as adapter

    model, opt = make()
    monkeypatch.setattr(adapter, "observe_initial", lambda *a: 1 / 0)
    with caplog.at_level(logging.ERROR, logger="nnhealth"):
        mon = Monitor(every=1, console=False).watch(model, opt)
        loop(model, opt, mon, 2)
    assert sum("watch:parameters failed" in r.getMessage() for r in caplog.records) == 1
    assert mon.history.names("activation") == ["1", "3"]
    assert len(mon.history.values("0.weight", "update/ratio")) == 2
    mon.close()
    assert hooks_left(model, opt) == 0
