"""Odd tensors through ``mon.watch(model, optimizer)``: each measured correctly, or skipped with one line.

Every case is a real module trained for a few steps by a real optimizer,
under ``Monitor(strict=True)`` so that any error inside nnhealth fails the
test instead of being reported and switched off. The numbers nnhealth
records are checked against the tensors themselves.

NaN/empty/integer arrays through the manual API are in
tests/test_monitor.py::test_nan_empty_and_integer_arrays; gradients of
parameters that never get one in tests/test_torch_hooks.py too
(test_parameters_without_gradient_are_skipped_and_named_once).
"""
from __future__ import annotations

import logging

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from nnhealth import Monitor  # noqa: E402
from nnhealth.stats import summarize  # noqa: E402
from nnhealth.stats.summary import Summary  # noqa: E402

STEPS = 3


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def run(model, batch, loss=lambda out: out.float().pow(2).mean(), opt=None, steps=STEPS) -> Monitor:
    """Train ``model`` on ``batch()`` for ``steps`` steps, watched; any nnhealth error raises."""
    opt = opt or torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    mon = Monitor(every=1, console=False, strict=True).watch(model, opt)
    for step in range(steps):
        value = loss(model(*batch()))
        opt.zero_grad()
        value.backward()
        opt.step()
        mon.step(step, loss=value)
    mon.close()
    return mon


def said(caplog, *words) -> list[str]:
    return [r.getMessage() for r in caplog.records if all(w in r.getMessage() for w in words)]


def last(mon, where, stat):
    return mon.history.values(where, stat)[-1]


def mlp(*dims):
    layers = []
    for a, b in zip(dims, dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


# -- values ---------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["weight", "input", "gradient"])
def test_nan_and_inf_become_a_non_finite_values_finding_never_a_crash(where):
    model = mlp(4, 8, 2)
    x = torch.randn(8, 4)
    if where == "weight":
        with torch.no_grad():
            model[0].weight[0, 0] = float("nan")
    elif where == "input":
        x[0, 0] = float("inf")
    else:
        model[2].weight.register_hook(lambda g: g * float("inf"))
    mon = run(model, lambda: (x,))
    places = {f.where for f in mon.findings if f.symptom == "non-finite-values"}
    expected = {"weight": "0.weight", "input": "input", "gradient": "2.weight"}[where]
    assert expected in places
    assert mon.history.latest_summary("gradient", "2.weight").nonfinite > 0


def test_an_empty_batch_is_skipped_with_one_line(caplog):
    model = mlp(4, 8, 2)
    with caplog.at_level(logging.INFO, logger="nnhealth"):
        mon = run(model, lambda: (torch.randn(0, 4),), loss=lambda out: out.sum())
    assert len(said(caplog, "activation '1' is empty")) == 1
    assert len(said(caplog, "input 'input' is empty")) == 1
    assert mon.history.names("activation") == []
    assert last(mon, "0.weight", "gradient/norm") == 0.0  # a gradient of zeros is measured as such


def test_zero_dimensional_parameters_and_arguments():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)
            self.scale = nn.Parameter(torch.tensor(2.0))

        def forward(self, x, temperature):
            return F.relu(self.fc(x)) * self.scale / temperature

    model = Scaled()
    x = torch.randn(8, 4)
    mon = run(model, lambda: (x, torch.tensor(0.5)))
    assert last(mon, "scale", "gradient/norm") == pytest.approx(abs(model.scale.grad.item()), rel=1e-6)
    assert mon.history.meta["scale"]["ndim"] == 0
    # a 0-d argument is no input batch: the input checks saw x
    assert mon.history.latest_summary("input", "input").count == x.numel()


def test_integer_and_boolean_tensors(caplog):
    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(20, 8)
            self.head = nn.Linear(8, 3)
            self.vocab = nn.Parameter(torch.arange(20), requires_grad=False)     # integer parameter
            self.keep = nn.Parameter(torch.ones(8, dtype=torch.bool), requires_grad=False)

        def forward(self, ids, mask):
            h = torch.tanh(self.emb(ids)) * self.keep * mask.unsqueeze(-1)
            return self.head(h).mean(1)

    model = Tagger()
    ids, mask = torch.randint(0, 20, (4, 6)), torch.rand(4, 6) > 0.3
    with caplog.at_level(logging.INFO, logger="nnhealth"):
        mon = run(model, lambda: (ids, mask), opt=torch.optim.SGD(model.parameters(), lr=0.1))
    assert len(said(caplog, "input 'input' holds torch.int64 values")) == 1
    assert len(said(caplog, "no gradient for vocab, keep (frozen")) == 1
    assert mon.history.latest_summary("parameter", "vocab").sum == sum(range(20))  # measured at watch time
    assert mon.history.latest_summary("parameter", "keep").positive == 8
    assert mon.history.names("activation") == ["tanh"]
    assert last(mon, "emb.weight", "gradient/norm") == pytest.approx(model.emb.weight.grad.norm().item(), rel=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_and_bfloat16_are_measured_in_float32(dtype):
    model = mlp(4, 16, 2).to(dtype)
    x = torch.randn(32, 4).to(dtype)
    mon = run(model, lambda: (x,))
    assert last(mon, "0.weight", "gradient/norm") == pytest.approx(model[0].weight.grad.float().norm().item(), rel=1e-3)
    h = F.relu(model[0](x)).float()
    s = mon.history.latest_summary("activation", "1")
    assert s.count == h.numel() and s.positive == int((h > 0).sum())
    assert s.sum == pytest.approx(h.sum().item(), rel=1e-3)


def test_complex_parameters_are_measured_by_their_magnitude():
    class Spectral(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(0.5 * torch.randn(4, 4, dtype=torch.cfloat))
            self.fc = nn.Linear(4, 1)

        def forward(self, x):
            return self.fc(torch.tanh((x.to(torch.cfloat) @ self.w).abs()))

    model = Spectral()
    mon = run(model, lambda: (torch.randn(8, 4),))
    assert last(mon, "w", "gradient/norm") == pytest.approx(model.w.grad.abs().norm().item(), rel=1e-5)
    assert last(mon, "w", "update/ratio") > 0
    assert mon.history.names("activation") == ["tanh"]


@pytest.mark.parametrize("optimizer", ["SGD", "SparseAdam"])
def test_sparse_embedding_gradients(optimizer):
    class Bag(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(100, 8, sparse=True)
            self.act = nn.Tanh()

        def forward(self, ids):
            return self.act(self.emb(ids)).sum(1)

    model = Bag()
    opt = getattr(torch.optim, optimizer)(model.parameters(), lr=0.1)
    ids = torch.randint(0, 100, (16, 5))
    before = {}

    def loss(out):
        before["w"] = model.emb.weight.detach().clone()
        return out.pow(2).mean()

    mon = run(model, lambda: (ids,), loss=loss, opt=opt)
    grad = model.emb.weight.grad
    assert grad.is_sparse
    assert last(mon, "emb.weight", "gradient/norm") == pytest.approx(grad.to_dense().norm().item(), rel=1e-5)
    step = model.emb.weight.detach() - before["w"]
    assert last(mon, "emb.weight", "update/ratio") == pytest.approx((step.norm() / before["w"].norm()).item(),
                                                                     rel=1e-4)


# -- layouts --------------------------------------------------------------------------------

def capture(module, into: list):
    module.register_forward_hook(lambda m, a, out: into.append(out.detach().clone()))


def test_channels_last_activations_count_channels_as_units():
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 6 * 6, 2))
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 8, 8).to(memory_format=torch.channels_last)
    outs: list = []
    capture(model[1], outs)
    mon = run(model, lambda: (x,))
    s = mon.history.latest_summary("activation", "1")
    assert outs[-1].is_contiguous(memory_format=torch.channels_last)
    assert (s.layout.units, s.samples) == (6, 4 * 6 * 6)
    assert list(s.unit_fired) == (outs[-1] > 0).sum(dim=(0, 2, 3)).tolist()


def test_non_contiguous_activations_are_measured_like_their_contiguous_copy():
    class Transposed(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 6)
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(self.fc(x).t()).t()  # the ReLU sees a transposed view

    model = Transposed()
    outs: list = []
    model.act.register_forward_hook(lambda m, a, out: outs.append((out.is_contiguous(), out.detach().clone())))
    mon = run(model, lambda: (torch.randn(8, 6).t().contiguous().t(),))  # a non-contiguous input too
    contiguous, out = outs[-1]
    assert not contiguous
    got = mon.history.latest_summary("activation", "act")
    want = Summary(*[v.numpy() if torch.is_tensor(v) else v for v in summarize(out.contiguous(), "relu", hist=True,
                                                                               units=True)])
    assert got.v.tolist() == pytest.approx(want.v.tolist(), rel=1e-6)


# -- modules --------------------------------------------------------------------------------

def test_lazy_modules_are_watched_once_they_have_values(caplog):
    model = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with caplog.at_level(logging.INFO, logger="nnhealth"):
        mon = run(model, lambda: (torch.randn(16, 5),), opt=opt)
    (line,) = said(caplog, "have no values yet")
    assert line.startswith("nnhealth: 0.weight, 0.bias have no values yet (lazy, or on the meta device)")
    assert last(mon, "0.weight", "gradient/norm") == pytest.approx(model[0].weight.grad.norm().item(), rel=1e-5)
    assert mon.history.names("activation") == ["1"]


def test_a_model_on_the_meta_device_is_skipped_with_one_line_each(caplog):
    with torch.device("meta"):
        model = mlp(4, 8, 2)
    with caplog.at_level(logging.INFO, logger="nnhealth"):
        mon = run(model, lambda: (torch.randn(8, 4, device="meta"),))
    lines = [r.getMessage() for r in caplog.records]
    assert len(said(caplog, "meta device")) == len(set(lines)) == 5, lines
    assert len(said(caplog, "gradient and update checks skip them")) == 1
    assert mon.history.names("gradient") == [] and mon.findings == []


def test_a_model_built_on_meta_and_materialised_after_watch_keeps_its_names(caplog):
    with torch.device("meta"):
        model = mlp(4, 8, 2)
    mon = Monitor(every=1, console=False, strict=True).watch(model)  # no optimizer: read after backward
    model.to_empty(device="cpu")                                       # new Parameter objects
    for m in model:
        if isinstance(m, nn.Linear):
            m.reset_parameters()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with caplog.at_level(logging.INFO, logger="nnhealth"):
        for step in range(STEPS):
            loss = model(torch.randn(8, 4)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.step(step, loss=loss)
    mon.close()
    assert sorted(mon.history.names("gradient")) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert said(caplog, "no gradient") == []


def test_modules_returning_tuples_and_dicts():
    class Recurrent(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(4, 8, batch_first=True)      # returns (output, (h, c))
            self.act = nn.ReLU()
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            out, (h, c) = self.rnn(x)
            return self.head(self.act(out[:, -1]))

    class Branches(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 4)

        def forward(self, x):
            return {"hidden": torch.relu(self.fc(x)), "skip": x}

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.rec = Recurrent()
            self.branches = Branches()
            self.out = nn.Linear(4, 1)

        def forward(self, x):
            parts = self.branches(self.rec(x))
            y = self.out(parts["hidden"])
            return y, {"aux": parts["skip"]}                 # the model itself returns a tuple with a dict

    mon = run(Net(), lambda: (torch.randn(4, 5, 4),), loss=lambda out: out[0].pow(2).mean() + out[1]["aux"].mean())
    assert mon.history.names("activation") == ["rec.act", "branches.relu"]
    assert "rec.rnn.weight_hh_l0" in mon.history.names("gradient")


def test_parameters_that_never_get_a_gradient_are_named_once(caplog):
    class Partly(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(4, 2)
            self.unused = nn.Linear(4, 2)
            self.frozen = nn.Linear(4, 4).requires_grad_(False)

        def forward(self, x):
            return self.used(torch.relu(self.frozen(x)))

    model = Partly()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with caplog.at_level(logging.INFO, logger="nnhealth"):
        mon = run(model, lambda: (torch.randn(8, 4),), opt=opt, steps=4)
    assert said(caplog, "no gradient reached") == [
        "nnhealth: no gradient reached unused.weight, unused.bias although they require one (not used in the loss "
        "of this step?); gradient and update checks skip them"]
    assert len(said(caplog, "no gradient for frozen.weight, frozen.bias (frozen")) == 1
    assert sorted(mon.history.names("gradient")) == ["used.bias", "used.weight"]


def test_a_parameter_shared_by_two_modules_is_measured_once():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Linear(6, 6, bias=False)
            self.dec = nn.Linear(6, 6, bias=False)
            self.dec.weight = self.enc.weight
            self.act = nn.Tanh()

        def forward(self, x):
            return self.dec(self.act(self.enc(x)))

    model = Tied()
    mon = run(model, lambda: (torch.randn(8, 6),))
    assert mon.history.names("gradient") == ["enc.weight"]
    assert last(mon, "enc.weight", "gradient/norm") == pytest.approx(model.enc.weight.grad.norm().item(), rel=1e-5)


def test_a_module_called_several_times_per_forward_merges_its_calls():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.act = nn.Linear(4, 8), nn.Linear(8, 8), nn.ReLU()

        def forward(self, x):
            return self.act(self.fc2(self.act(self.fc1(x)))).sum(1)

    model = Twice()
    outs: list = []
    capture(model.act, outs)
    mon = run(model, lambda: (torch.randn(16, 4),), steps=1)
    s = mon.history.latest_summary("activation", "act")
    assert s.samples == 32 and s.count == 2 * 16 * 8
    assert s.positive == sum(int((o > 0).sum()) for o in outs)
    assert s.sum == pytest.approx(sum(o.sum().item() for o in outs), rel=1e-5)
