"""torch.compile: activations are seen whether the model is compiled before or after watch(), and the
compiled graph of the steps that are not sampled is the unwatched one.

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
from nnhealth.sinks import Sink  # noqa: E402
from nnhealth.hooks import _torch_compile  # noqa: E402
from torch_training import training_steps  # noqa: E402

try:
    import torch._dynamo  # noqa: F401, E402
    from torch._dynamo.utils import counters  # noqa: E402
except Exception as e:  # pragma: no cover - a build without the compiler
    pytest.skip(f"torch.compile is unavailable in this build: {e}", allow_module_level=True)


@pytest.fixture(autouse=True)
def no_eager_stance_left_over():
    """Every test starts and ends with the compiler's default stance: nnhealth's hold is let go."""
    import gc

    gc.collect()  # watchers other tests dropped unclosed
    assert torch._dynamo.eval_frame._stance.stance == "default"
    yield
    gc.collect()
    assert torch._dynamo.eval_frame._stance.stance == "default"


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(16, 16)
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        return self.out(torch.tanh(self.fc2(self.act(self.fc1(x)))))


class Stack(nn.Module):
    """Blocks run in a loop, as most deep models do: a graph break inside the loop would make the
    compiler give up on the whole forward for good."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(*(nn.Sequential(nn.Linear(16, 16), nn.ReLU()) for _ in range(3)))
        self.inp = nn.Linear(8, 16)
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        for block in self.blocks:
            h = block(h)
        return self.out(h)


def run(order: str, steps: int = 6, net=None, reset=True, every=2, **options):
    if reset:
        torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    net = net or Net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    mon = Monitor(every=every, console=False)
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


def breaks() -> int:
    return sum(counters["graph_break"].values())


@pytest.mark.parametrize("order", ["watch, then compile", "compile, then watch"])
def test_compiled_model_shows_module_and_functional_activations(order, caplog):
    with caplog.at_level(logging.INFO, logger="nnhealth"):
        mon = run(order)
    h = mon.history
    assert h.names("activation") == ["act", "tanh"]
    assert len(h.summaries("activation", "act")) == 3  # every sampled step, none of the others
    assert h.names("input") == ["input"]
    assert len(h.values("fc1.weight", "gradient/norm")) == 3
    # sampled steps run eagerly: the hooks traced into the graph do nothing, so nothing breaks it,
    # and a model compiled before watch() needs no recompilation to be seen
    assert breaks() == 0 and counters["stats"]["unique_graphs"] == 1
    assert not any("recompil" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("order", ["watch, then compile", "compile, then watch"])
def test_a_model_that_runs_its_blocks_in_a_loop_stays_one_graph(order):
    mon = run(order, steps=8, net=Stack())
    assert breaks() == 0 and counters["stats"]["unique_graphs"] == 1
    h = mon.history
    assert sorted(h.names("activation")) == ["blocks.0.1", "blocks.1.1", "blocks.2.1", "tanh"]
    assert [s for s, _ in h.summaries("activation", "blocks.2.1")] == [0, 2, 4, 6]


def test_a_model_compiled_with_fullgraph_trains_watched():
    torch._dynamo.reset()
    net = Stack()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    mon = Monitor(every=2, console=False).watch(net, opt)
    model = torch.compile(net, backend="eager", fullgraph=True)  # a graph break would be an error
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    training_steps(model, opt, mon, x, y, 5)
    mon.close()
    assert [s for s, _ in mon.history.summaries("activation", "blocks.0.1")] == [0, 2, 4]


def test_the_compiler_runs_eagerly_from_the_step_before_a_sampled_one_to_the_step_that_ends_it():
    torch._dynamo.reset()
    counters.clear()
    net = Net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))

    def stance():
        return torch._dynamo.eval_frame._stance.stance

    mon = Monitor(every=3, console=False).watch(net, opt)
    model = torch.compile(net, backend="eager")
    loss_fn = torch.compile(F.cross_entropy, backend="eager")
    seen = []
    for step in range(7):
        loss = 0
        for micro_batch in (x[:16], x[16:]):  # gradient accumulation: both micro-batches are measured
            seen.append(stance())
            loss = loss + loss_fn(model(micro_batch), y[:16])
        opt.zero_grad()
        loss.backward()
        seen.append(stance())
        opt.step()
        mon.step(step, loss=loss)
    per_step = [seen[i:i + 3] for i in range(0, len(seen), 3)]
    assert per_step == [["force_eager"] * 3, ["default"] * 3, ["default"] * 3] * 2 + [["force_eager"] * 3]
    mon.close()
    assert stance() == "default"
    assert [s for s, _ in mon.history.summaries("activation", "act")] == [0, 3, 6]
    assert mon.history.latest_summary("activation", "act").count == 32 * 16  # both micro-batches
    assert breaks() == 0


@pytest.mark.parametrize("order", ["watch, then compile", "compile, then watch"])
def test_with_every_step_sampled_every_step_is_seen(order):
    mon = run(order, steps=4, every=1)
    assert [s for s, _ in mon.history.summaries("activation", "act")] == [0, 1, 2, 3]


def test_a_sampled_step_that_runs_compiled_anyway_is_skipped_without_breaking_the_graph(monkeypatch, caplog):
    import nnhealth.hooks.torch as adapter

    def refuse(owner):
        raise RuntimeError("attempted to set_stance in a torch.compile region")

    monkeypatch.setattr(adapter, "hold_eager", refuse)  # step() called where stances cannot change
    with caplog.at_level(logging.WARNING, logger="nnhealth"):
        mon = run("watch, then compile", steps=6, net=Stack())
    assert breaks() == 0  # the function mode and module hooks of the open capture are traced as nothing
    assert "watch:compile failed" in caplog.text  # said once
    # the forwards that then skip the hooks are not blamed on compiling before watch(), which is not it
    assert "no forward pass of Stack reached nnhealth" in caplog.text and "before watch()" not in caplog.text
    assert "could not be run eagerly on sampled steps" in caplog.text and "before torch.compile" not in caplog.text
    assert len(mon.history.values("inp.weight", "gradient/norm")) == 3  # the rest is watched


def test_an_error_out_of_step_lets_go_of_the_eager_stance():
    class Broken(Sink):
        def write_step(self, record):
            raise RuntimeError("a sink with a bug")

    net = Net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    mon = Monitor(every=1, console=False, strict=True, sinks=[Broken()]).watch(net, opt)
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    F.cross_entropy(net(x), y).backward()
    opt.step()
    with pytest.raises(RuntimeError, match="a sink with a bug"):
        mon.step(0, loss=1.0)  # strict: re-raised once step 1 is already under way; the loop stops here
    assert mon.sampled
    assert torch._dynamo.eval_frame._stance.stance == "default"  # though the monitor lives on
    mon.close()


def test_a_model_whose_compiled_code_was_traced_without_the_hooks_is_still_seen():
    torch._dynamo.reset()
    other = torch.compile(Net(), backend="eager")
    other(torch.randn(32, 8))  # compiled unwatched: a second instance reuses this code, hooks not traced
    mon = run("watch, then compile", steps=6, reset=False)
    assert [s for s, _ in mon.history.summaries("activation", "act")] == [0, 2, 4]


def test_a_compiled_submodule_does_not_make_torch_warn_about_hooks_the_user_never_registered():
    import warnings

    def train(watched: bool):
        torch._dynamo.reset()
        net = Stack()
        net.blocks[1] = torch.compile(net.blocks[1], backend="eager")  # a compiled part in an eager model
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
        net(x)  # compiled now: compiling uses catch_warnings, which shows every warning once more
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("default")  # Python's own default: each warning once per place
            filters = list(warnings.filters)
            mon = Monitor(every=2, console=False)
            if watched:
                mon.watch(net, opt)
            for step in range(4):
                warnings.warn("the training loop's own warning, every step", UserWarning)
                training_steps(net, opt, mon, x, y, 1, start=step)
            mon.close()
            assert warnings.filters == filters  # nnhealth's filter is gone again
        return mon, [str(w.message) for w in seen]

    mon, seen = train(watched=True)
    assert not [w for w in seen if "global hooks" in w]
    # shown once: nnhealth does not change the warning filters on every step, which would show it each time
    assert len([w for w in seen if "own warning" in w]) == 1
    assert len([w for w in train(watched=False)[1] if "own warning" in w]) == 1
    assert [s for s, _ in mon.history.summaries("activation", "blocks.1._orig_mod.1")] == [0, 2]


def test_eager_steps_are_held_until_the_last_owner_lets_go_then_the_users_stance_is_back():
    first, second = object(), object()
    torch.compiler.set_stance("eager_on_recompile")
    try:
        _torch_compile.hold_eager(first)
        _torch_compile.hold_eager(second)
        _torch_compile.hold_eager(first)  # twice: still one hold
        _torch_compile.release_eager(first)
        assert torch._dynamo.eval_frame._stance.stance == "force_eager"
        _torch_compile.release_eager(second)
        _torch_compile.release_eager(second)  # not held any more: nothing
        assert torch._dynamo.eval_frame._stance.stance == "eager_on_recompile"
    finally:
        torch.compiler.set_stance("default")


def test_a_watcher_dropped_unclosed_lets_go_when_collected():
    import gc

    net = Net()
    mon = Monitor(every=2, console=False).watch(net)  # step 0 is sampled: held until its forward
    assert torch._dynamo.eval_frame._stance.stance == "force_eager"
    del mon, net
    gc.collect()
    assert torch._dynamo.eval_frame._stance.stance == "default"


def test_compile_then_watch_without_function_mode_still_sees_module_activations():
    mon = run("compile, then watch", functional=False)
    assert mon.history.names("activation") == ["act"]


@pytest.mark.parametrize("order", ["watch, then compile", "compile, then watch"])
def test_without_compiler_stances_hooks_break_the_graph_and_still_see_everything(order, monkeypatch, caplog):
    monkeypatch.setattr(_torch_compile, "EAGER_WHEN_SAMPLED", False)  # PyTorch older than 2.6
    with caplog.at_level(logging.INFO, logger="nnhealth"):
        mon = run(order)
    h = mon.history
    assert h.names("activation") == ["act", "tanh"]
    assert len(h.summaries("activation", "act")) == 3
    assert breaks() > 0
    if order == "compile, then watch":
        assert any("recompil" in r.getMessage() for r in caplog.records)


def test_compiled_code_that_skips_the_hooks_is_named_loudly_once(monkeypatch, caplog):
    import nnhealth.hooks.torch as adapter

    monkeypatch.setattr(_torch_compile, "EAGER_WHEN_SAMPLED", False)  # PyTorch older than 2.6
    monkeypatch.setattr(adapter, "refresh", lambda model: False)  # that cannot recompile either
    with caplog.at_level(logging.INFO, logger="nnhealth"):
        mon = run("compile, then watch", steps=8, functional=False)
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert mon.history.names("activation") == []
    assert len(loud) == 1 and "never reached nnhealth's hooks" in loud[0]
    assert "Fix: call mon.watch(model, optimizer) before torch.compile(model)" in loud[0]
    assert len(mon.history.values("fc1.weight", "gradient/norm")) == 4  # gradients keep working
