"""The PyTorch adapter observes what it should, where it should, and nothing else.

Real models and real optimizer steps; every number is checked against the
tensors themselves.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from nnhealth import Monitor  # noqa: E402
from torch_training import training_steps  # noqa: E402
from nnhealth.stats import summarize  # noqa: E402
from nnhealth.stats.summary import Summary  # noqa: E402


class Block(nn.Module):
    """Two functional activations, called twice per forward by its parent."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 16)

    def forward(self, x):
        return torch.tanh(F.relu(self.fc(x)))


class Net(nn.Module):
    """Module activations of several kinds, functional ones, a shared block, a frozen layer."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.act = nn.LeakyReLU(0.1)
        self.blk = Block()
        self.gelu = nn.GELU()
        self.head = nn.Linear(16, 3)
        self.frozen = nn.Linear(2, 2).requires_grad_(False)

    def forward(self, x):
        h = self.act(self.fc1(x))
        h = self.blk(self.blk(h))
        h = self.gelu(h).sigmoid()
        return self.head(F.silu(h))


def train(model, mon, steps=4, lr=0.05, opt=None, x=None, y=None):
    opt = opt or torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    mon.watch(model, opt)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 8, generator=g) if x is None else x
    y = torch.randint(0, 3, (32,), generator=g) if y is None else y
    training_steps(model, opt, mon, x, y, steps)
    return opt


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_every_activation_is_named_after_its_module_with_its_kind():
    torch.manual_seed(0)
    mon = Monitor(every=1, console=False)
    train(Net(), mon, steps=2)
    h = mon.history
    kinds = {name: h.meta[name]["kind"] for name in h.names("activation")}
    assert kinds == {"act": "leaky_relu", "blk.relu": "relu", "blk.tanh": "tanh", "gelu": "gelu",
                     "sigmoid": "sigmoid", "silu": "silu"}
    # the block runs twice per forward: its statistics merge (two batches of 32 rows)
    assert h.latest_summary("activation", "blk.relu").samples == 64
    assert h.latest_summary("activation", "act").samples == 32
    mon.close()


def test_activation_summary_is_the_summary_of_the_real_output():
    torch.manual_seed(0)
    model = Net()
    seen = {}
    model.act.register_forward_hook(lambda m, a, out: seen.__setitem__("act", out.detach().clone()))
    mon = Monitor(every=1, console=False)
    train(model, mon, steps=1)
    got = mon.history.latest_summary("activation", "act")
    layout, vec = summarize(seen["act"], "leaky_relu", hist=True, units=True)
    want = Summary(layout, vec.numpy())
    assert got.layout == want.layout
    np.testing.assert_allclose(got.v, want.v, rtol=1e-6)
    mon.close()


def test_gradients_parameters_and_updates_match_the_tensors():
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    mon = Monitor(every=1, console=False).watch(model, opt)
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    opt.step()
    mon.step(0, loss=loss)
    h = mon.history
    assert sorted(h.names("gradient")) == sorted(grads)
    for name, g in grads.items():
        s = h.latest_summary("gradient", name)
        assert s.norm == pytest.approx(g.norm().item(), rel=1e-5)
        assert s.mean_abs == pytest.approx(g.abs().mean().item(), rel=1e-5)
        assert s.nonfinite == 0 and s.count == g.numel()
        ratio = h.values(name, "update/ratio")[-1]
        after = dict(model.named_parameters())[name].detach()
        assert ratio == pytest.approx(((after - before[name]).norm() / before[name].norm()).item(), rel=1e-4)
    assert h.values(None, "loss")[-1] == pytest.approx(loss.item())
    mon.close()


@pytest.mark.parametrize("keyword", [False, True])
def test_a_closure_step_reads_the_gradients_its_closure_made(keyword):
    """step(closure) (LBFGS; Lightning passes closure=): gradients exist only once the closure has run, so
    on a sampled step they are read after its first run, and the update is the one the whole step
    applied. A positional closure went unseen (step()'s hooks get the optimizer as its first argument):
    no gradient was read on sampled steps with nothing to read yet."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=3)
    mon = Monitor(every=2, console=False, strict=True).watch(model, opt)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 8, generator=g), torch.randint(0, 3, (32,), generator=g)
    first_grads, before = {}, {}

    for step in range(5):
        runs = []

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            if not runs and step == 4:
                first_grads.update({n: p.grad.norm().item() for n, p in model.named_parameters()})
            runs.append(1)
            return loss

        if step == 4:
            before.update({n: p.detach().clone() for n, p in model.named_parameters()})
        loss = opt.step(closure=closure) if keyword else opt.step(closure)
        mon.step(step, loss=loss)
        assert len(runs) > 1  # LBFGS ran the closure more than once
    mon.close()
    h = mon.history
    for name, norm in first_grads.items():  # sampled steps 0, 2, 4
        assert [s for s, _ in h.summaries("gradient", name)] == [0, 2, 4]
        assert h.latest_summary("gradient", name).norm == pytest.approx(norm, rel=1e-5)
        after = dict(model.named_parameters())[name].detach()
        assert h.values(name, "update/ratio")[-1] == pytest.approx(
            ((after - before[name]).norm() / before[name].norm()).item(), rel=1e-4)


def test_watch_time_parameters_carry_units_fan_in_and_init_scale():
    torch.manual_seed(0)
    model = Net()
    initial = model.fc1.weight.detach().clone()
    mon = Monitor(every=1, console=False)
    train(model, mon, steps=1)
    h = mon.history
    first = h.first_summary("parameter", "fc1.weight")[1]
    assert first.layout.units == 16 and first.layout.moments  # one unit per output row: weight[out, in]
    np.testing.assert_allclose(first.unit_sum, initial.sum(1).numpy(), rtol=1e-5, atol=1e-6)
    facts = h.meta["fc1.weight"]
    assert facts["ndim"] == 2 and facts["fan_in"] == 8 and facts["unit_axis"] == 0
    assert h.meta["fc1.bias"]["ndim"] == 1
    # default nn.Linear init is uniform(+-1/sqrt(fan_in)): std 1/sqrt(3 fan_in), a gain of 1/sqrt(3)
    assert facts["init_gain"] == pytest.approx(1 / math.sqrt(3), rel=0.2)
    assert facts["activation"] == "leaky_relu" and facts["recommended_gain"] == pytest.approx(math.sqrt(2))
    assert facts["init_scale"] == pytest.approx(facts["init_gain"] / math.sqrt(2))
    mon.close()


def test_output_nonlinearity_is_not_a_hidden_layer(caplog):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1), nn.Sigmoid())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = Monitor(every=1, console=False).watch(model, opt)
    x, y = torch.randn(32, 8), torch.rand(32, 1).round()
    with caplog.at_level(logging.INFO, logger="nnhealth"):
        for step in range(3):
            loss = F.binary_cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.step(step, loss=loss)
    assert mon.history.names("activation") == ["1"]
    said = [r.getMessage() for r in caplog.records if "output nonlinearity" in r.getMessage()]
    assert len(said) == 1 and "'3'" in said[0]
    mon.close()


def test_inputs_are_observed_per_feature_and_token_ids_are_not_features(caplog):
    torch.manual_seed(0)
    mon = Monitor(every=1, console=False)
    x = torch.randn(32, 8) * torch.linspace(1, 8, 8) + 3.0
    train(Net(), mon, steps=1, x=x)
    s = mon.history.latest_summary("input", "input")
    np.testing.assert_allclose(s.unit_means(), x.mean(0).numpy(), rtol=1e-5)
    np.testing.assert_allclose(s.unit_stds(), x.std(0, unbiased=False).numpy(), rtol=1e-4)
    mon.close()

    emb = nn.Sequential(nn.Embedding(10, 8), nn.Flatten(), nn.Linear(32, 3))
    mon = Monitor(every=1, console=False)
    with caplog.at_level(logging.INFO, logger="nnhealth"):
        train(emb, mon, steps=1, x=torch.randint(0, 10, (32, 4)))
    assert mon.history.names("input") == []
    assert any("not features" in r.getMessage() for r in caplog.records)
    mon.close()


def test_evaluation_forwards_are_not_recorded():
    torch.manual_seed(0)
    model = Net()
    mon = Monitor(every=1, console=False).watch(model)
    model.eval()
    with torch.no_grad():
        model(torch.randn(4, 8))
    assert not [k for k in mon._pending if k[0] in ("activation", "input")]
    mon.close()


class OpLog(TorchDispatchMode):
    """Every aten operation run while active (what the device would execute)."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def _one_step(model, opt, mon, step, x, y):
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    if mon is not None:
        mon.step(step, loss=loss)


def test_unsampled_steps_compute_nothing_but_the_loss():
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    runs = {}
    for watched in (False, True):
        torch.manual_seed(0)
        model = Net()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        mon = Monitor(every=10, console=False).watch(model, opt) if watched else None
        _one_step(model, opt, mon, 0, x, y)
        with OpLog() as log:
            _one_step(model, opt, mon, 1, x, y)
        runs[watched] = log.ops
        if mon:
            assert not torch._C._is_torch_function_mode_enabled()
            mon.close()
    extra = list(runs[True])
    for op in runs[False]:
        extra.remove(op)
    # the only extra work: the loss tensor's first element, copied to the host
    assert set(extra) <= {"aten.detach", "aten.view", "aten.reshape", "aten._reshape_alias", "aten.slice",
                          "aten.alias", "aten._to_copy", "aten.cat"}, extra
    assert len(extra) <= 8, extra


def test_sampled_steps_never_read_a_device_value_on_the_host():
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(every=1, console=False).watch(model, opt)
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    _one_step(model, opt, mon, 0, x, y)
    loss = F.cross_entropy(model(x), y)
    with OpLog() as log:  # forward hooks, backward, optimizer hooks: everything up to mon.step
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    syncing = {"aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten.unique",
               "aten._unique2", "aten.item"}
    assert not syncing & set(log.ops)
    # the histograms did run: every activation's summary holds one, counting each of its values
    activations = [(layout, vec) for (role, _), (_, layout, vec) in mon._pending.items() if role == "activation"]
    assert activations
    for layout, vec in activations:
        summary = Summary(layout, np.asarray(vec))
        assert layout.hist and summary.hist.sum() == summary.count > 0
    mon.step(1, loss=loss)
    mon.close()


def test_parameters_without_gradient_are_skipped_and_named_once(caplog):
    torch.manual_seed(0)
    model = Net()
    model.unused = nn.Linear(4, 4)
    mon = Monitor(every=1, console=False)
    with caplog.at_level(logging.INFO, logger="nnhealth"):
        train(model, mon, steps=3)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("frozen.weight" in m for m in messages) == 1
    assert sum("unused.weight" in m for m in messages) == 1
    assert [r.levelno for r in caplog.records if "unused.weight" in r.getMessage()] == [logging.WARNING]
    assert "frozen.weight" not in mon.history.names("gradient")
    mon.close()


def test_gradscaler_gradients_are_unscaled_and_a_skipped_step_is_no_update():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    mon = Monitor(every=1, console=False).watch(model, opt)
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    for step in range(4):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        scaled = scaler.scale(loss * (math.inf if step == 2 else 1.0))
        scaled.backward()
        unscaled_norm = None if step == 2 else torch.autograd.grad(
            F.cross_entropy(model(x), y), model[0].weight)[0].norm().item()
        scaler.step(opt)
        scaler.update()
        mon.step(step, loss=loss)
        if unscaled_norm is not None:
            assert mon.history.values("0.weight", "gradient/norm")[-1] == pytest.approx(unscaled_norm, rel=1e-4)
    steps_with_updates = mon.history.series("0.weight", "update/ratio").arrays()[0].tolist()
    assert steps_with_updates == [0, 1, 3]  # step 2 was skipped by the scaler: no (zero) update
    assert "exploding-gradients" not in {f.symptom for f in mon.findings}
    mon.close()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host synchronisation can only be caught on a CUDA device")
def test_cuda_steps_never_synchronise_with_the_host():
    torch.manual_seed(0)
    model = Net().cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    mon = Monitor(every=2, console=False).watch(model, opt)  # watch time may synchronise: not a step
    x, y = torch.randn(64, 8, device="cuda"), torch.randint(0, 3, (64,), device="cuda")
    _one_step(model, opt, mon, 0, x, y)  # first step: allocations, pinned buffers
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(1, 7):  # sampled and unsampled steps, each one's copy read a step later
            _one_step(model, opt, mon, step, x, y)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    mon.close()
    h = mon.history
    assert len(h.values("fc1.weight", "gradient/norm")) == 4 and h.names("activation")
    assert len(h.values(None, "loss")) == 7


MODULES = [(nn.ReLU(), "relu"), (nn.ReLU6(), "relu6"), (nn.LeakyReLU(), "leaky_relu"), (nn.PReLU(), "prelu"),
           (nn.RReLU(), "rrelu"), (nn.ELU(), "elu"), (nn.CELU(), "celu"), (nn.SELU(), "selu"), (nn.GELU(), "gelu"),
           (nn.SiLU(), "silu"), (nn.Mish(), "mish"), (nn.Softplus(), "softplus"), (nn.Hardswish(), "hardswish"),
           (nn.Tanh(), "tanh"), (nn.Sigmoid(), "sigmoid"), (nn.Softsign(), "softsign"),
           (nn.Hardsigmoid(), "hardsigmoid"), (nn.Hardtanh(), "hardtanh")]


@pytest.mark.parametrize("layer,kind", MODULES, ids=[k for _, k in MODULES])
def test_every_activation_layer_has_its_kind(layer, kind):
    model = nn.Sequential(nn.Linear(4, 8), layer, nn.Linear(8, 2))
    mon = Monitor(every=1, console=False).watch(model)
    model(torch.randn(16, 4)).sum().backward()
    mon.step(0)
    assert mon.history.meta["1"]["kind"] == kind
    mon.close()


SPELLINGS = {
    "relu": [F.relu, torch.relu, lambda x: x.relu(), lambda x: x.clone().relu_(), lambda x: F.relu(x.clone(), True)],
    "tanh": [torch.tanh, lambda x: x.tanh(), F.tanh],
    "sigmoid": [torch.sigmoid, lambda x: x.sigmoid(), F.sigmoid, torch.special.expit],
    "gelu": [F.gelu, lambda x: F.gelu(x, approximate="tanh")],
    "leaky_relu": [F.leaky_relu, lambda x: F.leaky_relu(x, 0.2)],
    "elu": [F.elu], "selu": [F.selu], "silu": [F.silu], "mish": [F.mish], "softplus": [F.softplus],
    "hardswish": [F.hardswish], "hardsigmoid": [F.hardsigmoid], "softsign": [F.softsign], "relu6": [F.relu6],
    "hardtanh": [F.hardtanh],
}


class Functional(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fc = nn.Linear(4, 8)
        self.fn = fn

    def forward(self, x):
        return self.fn(self.fc(x)).sum(1)


@pytest.mark.parametrize("label", list(SPELLINGS))
def test_every_spelling_of_an_activation_function_is_seen(label):
    for fn in SPELLINGS[label]:
        model = Functional(fn)
        mon = Monitor(every=1, console=False).watch(model)
        model(torch.randn(16, 4)).sum().backward()
        mon.step(0)
        assert mon.history.names("activation") == [label], fn
        assert mon.history.meta[label]["kind"] == label
        mon.close()


def test_hardtanh_with_other_bounds_is_no_hardtanh():
    model = Functional(lambda x: F.hardtanh(x, -2.0, 2.0))
    model.clip = nn.Hardtanh(-3.0, 3.0)
    mon = Monitor(every=1, console=False).watch(model)
    model.clip(model(torch.randn(16, 4)))
    mon.step(0)
    assert mon.history.names("activation") == []
    mon.close()


class Wrapped(nn.Module):
    """The same layers, run by a forward of its own: module calls are watched as the forward goes."""

    def __init__(self, seq):
        super().__init__()
        self.seq = seq

    def forward(self, x):
        return self.seq(x)


def _chain():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(), nn.Flatten(),
                         nn.Sequential(nn.Linear(24, 16), nn.BatchNorm1d(16), nn.Tanh()), nn.Linear(16, 3))


def _watched_forward(model, steps=3):
    """(history, the activation each layer was seen followed by, whether each sampled forward ran with a
    function mode or global module hooks)."""
    seen = []
    relu = model[1] if isinstance(model, nn.Sequential) else model.seq[1]
    relu.register_forward_hook(lambda *_: seen.append(
        torch._C._len_torch_function_stack() > 0 or bool(torch.nn.modules.module._global_forward_hooks)))
    mon = Monitor(every=1, console=False)
    g = torch.Generator().manual_seed(0)
    train(model, mon, steps=steps, x=torch.randn(32, 2, 8, generator=g), y=torch.randint(0, 3, (32,), generator=g))
    follows = dict(mon._watchers[0].forward.follows)
    mon.close()
    return mon.history, follows, seen


def test_a_chain_of_torch_modules_is_watched_without_watching_module_calls():
    """A Sequential of torch.nn's own layers cannot call an activation as a function, and which layer each
    activation follows is its order: its sampled forwards run without the function mode and global hooks,
    and record what a forward of its own records (the Conv1d's 3-D output by channel, what follows what)."""
    plain, plain_follows, plain_watched = _watched_forward(_chain())
    own, own_follows, own_watched = _watched_forward(Wrapped(_chain()))
    assert plain_watched == [False] * 3 and own_watched == [True] * 3
    assert plain.names("activation") == ["1", "3.2"] and own.names("activation") == ["seq.1", "seq.3.2"]
    for name in ("1", "3.2"):
        a, b = plain.latest_summary("activation", name), own.latest_summary("activation", f"seq.{name}")
        assert a.layout == b.layout and np.array_equal(a.v, b.v)
    assert plain.latest_summary("activation", "1").layout.units == 4  # channels, not the 6 positions
    assert plain_follows == {"0": "relu", "3.1": "tanh"}  # the batch norm, not the linear layer before it
    assert own_follows == {"seq.0": "relu", "seq.3.1": "tanh"}
    assert plain.meta["0.weight"]["init_scale"] == own.meta["seq.0.weight"]["init_scale"]


def test_models_whose_calls_cannot_be_known_beforehand_are_watched_as_they_run():
    from nnhealth.hooks._torch_kinds import plain_order

    relu = nn.ReLU()
    shared = nn.Sequential(nn.Linear(4, 4), relu, nn.Linear(4, 4), relu)  # which layer relu follows varies
    replaced = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    replaced[0].forward = lambda x: F.relu(x)
    for model in (shared, replaced, nn.Sequential(nn.TransformerEncoderLayer(8, 2)), Wrapped(nn.Linear(4, 4))):
        assert plain_order(model, set(model.modules())) is None
