"""The mechanisms that make watching cheap, checked without timing anything.

- unsampled steps compute nothing (no summary, no fused reduction) and hand
  the history only the loss;
- a sampled step's statistics reach the host in one transfer;
- the history stays bounded however long the run;
- the fast paths compute exactly what the straightforward definitions do:
  the host kernel (numpy, CPU tensors) against a plain numpy reference and
  against the branch-free device path, the chunked and fused parameter rows
  against whole-tensor reductions, the vectorised per-role numbers against
  the Summary properties, the running window totals against a fresh merge;
- the TensorBoard sink batches unsampled steps' scalars and still writes
  every step.
"""
from __future__ import annotations

import logging
import math
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nnhealth import Monitor
from nnhealth.derived import derive_step
from nnhealth.history import History
from nnhealth.inflight import MAX_HELD
from nnhealth.stats import Layout, Summary, get_kind, histogram, summarize, summary_of
from nnhealth.stats.backend import NUMPY
from nnhealth.stats.summary import HEADER

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import nnhealth.hooks._torch_fused as fused  # noqa: E402
import nnhealth.inflight as inflight_module  # noqa: E402
import nnhealth.stats.compute as compute  # noqa: E402
from nnhealth.stats.backend import TorchOps  # noqa: E402

EDGE_VALUES = [0.0, -0.0, 1.0, -1.0, 1.1, 1.1**2, -(1.1**-7), 1e-13, 1e-12, 1e-30, 5e-324, 1e20, 3e25,
               np.nan, np.inf, -np.inf]
VALUES = st.one_of(st.floats(min_value=-1e6, max_value=1e6), st.sampled_from(EDGE_VALUES))
KINDS = st.sampled_from(["relu", "tanh", "sigmoid", "linear", "hardtanh", "relu6"])


def reference_hist(x: np.ndarray) -> np.ndarray:
    """Fixed-edge counts of the finite values, written the obvious way (float64 log)."""
    f = x[np.isfinite(x)].astype(np.float64)
    out = np.zeros(histogram.NUM_BUCKETS)
    for v in f:
        if v == 0:
            out[histogram.ZERO] += 1
            continue
        k = min(max(math.floor(math.log(abs(v)) / histogram.LOG_RATIO), histogram.K_MIN), histogram.K_MAX)
        out[histogram.ZERO + (1 if v > 0 else -1) * (1 + k - histogram.K_MIN)] += 1
    return out


def reference(x: np.ndarray, kind: str, unit_axis: int = -1) -> dict:
    finite = np.isfinite(x)
    f = x[finite]
    k = get_kind(kind)
    z = np.where(finite, x, 0.0)
    sat = k.saturated(NUMPY, z) & finite if k.saturated else np.zeros_like(finite)
    rows = np.moveaxis(z, unit_axis, -1).reshape(-1, x.shape[unit_axis])
    return {
        "count": f.size, "sum": f.sum(), "sumsq": (f * f).sum(), "abssum": np.abs(f).sum(),
        "min": f.min() if f.size else math.inf, "max": f.max() if f.size else -math.inf,
        "nonfinite": (~finite).sum(), "zeros": (f == 0).sum(), "positive": (f > 0).sum(),
        "saturated": sat.sum(), "samples": rows.shape[0], "hist": reference_hist(x),
        "unit_fired": (rows > 0).sum(axis=0),
        "unit_saturated": np.moveaxis(sat, unit_axis, -1).reshape(-1, x.shape[unit_axis]).sum(axis=0),
        "unit_sum": rows.sum(axis=0), "unit_sumsq": (rows * rows).sum(axis=0),
    }


# -- the fast statistics compute what the definitions say ---------------------------------


@settings(max_examples=120, deadline=None)
@given(x=arrays(np.float64, st.tuples(st.integers(1, 9), st.integers(1, 6)), elements=VALUES), kind=KINDS)
def test_host_kernel_equals_the_reference_field_by_field(x, kind):
    s = summary_of(x, kind, hist=True, units=True, moments=True)
    ref = reference(x, kind)
    for name in HEADER:
        assert getattr(s, name) == pytest.approx(ref[name], rel=1e-9, abs=1e-9), name
    np.testing.assert_array_equal(s.hist, ref["hist"])  # every bucket, exact powers of 1.1 included
    for name in ("unit_fired", "unit_saturated"):
        np.testing.assert_array_equal(getattr(s, name), ref[name])
    np.testing.assert_allclose(s.unit_sum, ref["unit_sum"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(s.unit_sumsq, ref["unit_sumsq"], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("shape, axis", [((64, 3, 8, 8), 1), ((16, 10), -1), ((4, 5, 6), 1), ((7,), -1)])
@pytest.mark.parametrize("kind", ["relu", "tanh", "linear"])
def test_cpu_tensors_equal_the_branch_free_device_path(shape, axis, kind):
    """The host kernel (CPU tensors) and the arithmetic a CUDA tensor takes, on the same float32 data."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g) * 3
    x = torch.relu(x) if kind == "relu" else torch.tanh(x) if kind == "tanh" else x
    x.view(-1)[:5] = torch.tensor([0.0, -0.0, float("nan"), float("inf"), 1.0])
    opts = dict(hist=True, units=True, moments=True, unit_axis=axis)
    layout, host = summarize(x, kind, **opts)
    dev_layout, device = compute._summarize_on_device(TorchOps(torch, x.device), x, get_kind(kind), True, True,
                                                      True, axis)
    assert layout == dev_layout
    a, b = Summary(layout, host.numpy()), Summary(layout, device.numpy())
    for name in ("count", "nonfinite", "zeros", "positive", "saturated", "samples", "min", "max"):
        assert getattr(a, name) == getattr(b, name), name
    for name in ("sum", "sumsq", "abssum"):
        assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-5), name
    np.testing.assert_array_equal(a.unit_fired, b.unit_fired)
    np.testing.assert_array_equal(a.unit_saturated, b.unit_saturated)
    np.testing.assert_allclose(a.unit_sum, b.unit_sum, rtol=1e-4, atol=1e-3)
    # float32 logs of two libraries may round a value lying on a bucket edge to either side
    assert a.hist.sum() == b.hist.sum() == a.count
    assert np.abs(a.hist - b.hist).sum() <= 2e-4 * a.count + 2


def test_per_unit_counts_beyond_the_range_of_narrow_counters():
    x = torch.ones(65, 2, 32, 32)  # 66,560 samples per channel: more than a 16-bit counter holds
    x[0, 1] = -1.0
    s = Summary(*(lambda lv: (lv[0], lv[1].numpy()))(summarize(x, "relu", units=True)))
    np.testing.assert_array_equal(s.unit_fired, [66_560, 66_560 - 1024])
    assert s.positive == 2 * 66_560 - 1024


def test_float32_histogram_equals_the_float64_reference_off_the_edges():
    x = (torch.randn(50_000, generator=torch.Generator().manual_seed(1)) * 10).float()
    s = Summary(*(lambda lv: (lv[0], lv[1].numpy()))(summarize(x, hist=True)))
    want = reference_hist(x.double().numpy())
    # only values within float32 rounding of an edge may move: a handful among 50k
    assert np.abs(s.hist - want).sum() <= 4


@pytest.mark.parametrize("fields", [fused.EVERY_FIELD, fused.GRADIENT, fused.PARAMETER, fused.NORM])
def test_chunked_rows_equal_whole_tensor_reductions(monkeypatch, fields):
    monkeypatch.setattr(fused, "HOST_CHUNK", 7)  # many pieces per tensor
    xs = [torch.randn(5, 9), torch.randn(3), torch.randn(40, dtype=torch.float64)]
    xs[1][1] = float("nan")
    for x, row in zip(xs, fused.header_rows(xs, fields)):
        s = Summary(Layout(), np.asarray(row))
        finite = x[torch.isfinite(x)].double()
        assert s.count == finite.numel() and s.nonfinite == x.numel() - finite.numel() and s.samples == x.numel()
        if s.nonfinite:
            assert not math.isfinite(s.sumsq)  # a tensor with NaN has untrusted sums, as documented
            continue
        assert s.sumsq == pytest.approx(float((finite**2).sum()), rel=1e-5)
        want = {"sum": finite.sum(), "abssum": finite.abs().sum(), "min": finite.min(), "max": finite.max()}
        for name in fields:
            assert getattr(s, name) == pytest.approx(float(want[name]), rel=1e-5, abs=1e-5), name


def test_difference_rows_measure_the_update(monkeypatch):
    monkeypatch.setattr(fused, "HOST_CHUNK", 11)
    before = [torch.randn(6, 7), torch.randn(13, dtype=torch.float64), torch.randn(4)]
    after = [b + 1e-3 * torch.randn(b.shape, dtype=b.dtype) for b in before]
    after[2][0] = float("inf")
    want = [float(((a.double() - b.double()) ** 2).sum()) for a, b in zip(after, before)]
    rows = fused.difference_rows([b.clone() for b in before], after)
    for row, w, a in zip(rows, want, after):
        s = Summary(Layout(), np.asarray(row))
        if not math.isfinite(w):
            assert s.nonfinite == 1 and s.count == a.numel() - 1
        else:
            assert s.sumsq == pytest.approx(w, rel=1e-5) and s.nonfinite == 0 and s.count == a.numel()


# -- the vectorised host side computes what the Summary properties say --------------------


def _per_summary(role: str, s: Summary, kind: str) -> dict:
    """The per-step numbers as the Monitor used to derive them, one summary at a time."""
    if role == "activation":
        out = {"mean": s.mean, "std": s.std, "zero_fraction": s.fraction("zeros"),
               "positive_fraction": s.fraction("positive"), "saturated_fraction": s.fraction("saturated")}
        fired = s.unit_fraction("unit_fired")
        if fired is not None and fired.size and get_kind(kind).can_die:
            out["dead_fraction"] = float(np.mean(fired < 0.01))
        return out
    if role == "gradient":
        return {"norm": s.norm, "mean_abs": s.mean_abs, "nonfinite": s.nonfinite}
    if role == "parameter":
        return {"norm": s.norm, "mean": s.mean, "std": s.std}
    if role == "update":
        return {"norm": s.norm}
    return {"mean": s.mean, "std": s.std, "min": s.min, "max": s.max, "nonfinite": s.nonfinite}


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), layers=st.integers(1, 6))
def test_derived_numbers_equal_the_summary_properties(seed, layers):
    rng = np.random.default_rng(seed)
    summaries, meta = {}, {}
    for i in range(layers):
        kind = ["relu", "tanh", "linear"][i % 3]
        meta[f"a{i}"] = {"kind": kind}
        act = rng.standard_normal((rng.integers(1, 20), 6))
        if rng.random() < 0.3:
            act[0, 0] = np.nan
        summaries[("activation", f"a{i}")] = summary_of(np.maximum(act, 0) if kind == "relu" else act, kind,
                                                        hist=True, units=True)
        w = rng.standard_normal((4, 3)) * rng.choice([0.0, 1.0])
        summaries[("gradient", f"w{i}")] = summary_of(w * 1e-2)
        summaries[("parameter", f"w{i}")] = summary_of(w, units=True, moments=True)
        summaries[("update", f"w{i}")] = summary_of(w * 1e-3)
        summaries[("update_base", f"w{i}")] = summary_of(w)
        summaries[("input", f"x{i}")] = summary_of(np.full((3, 2), np.nan) if i == 0 else act, units=True,
                                                   moments=True)
    want: dict = {}
    grad_sq = 0.0
    for (role, where), s in summaries.items():
        if role == "update_base":
            continue
        for stat, value in _per_summary(role, s, meta.get(where, {}).get("kind") or "linear").items():
            want[(where, f"{role}/{stat}")] = value
        if role == "gradient":
            grad_sq += s.sumsq if s.nonfinite == 0 else math.inf
        if role == "update":
            base = summaries[("update_base", where)]
            if base.norm > 0:
                want[(where, "update/ratio")] = s.norm / base.norm
    want[(None, "gradient/total_norm")] = math.sqrt(grad_sq)
    got = derive_step(summaries, meta)
    assert set(got) == set(want)
    total = want.pop((None, "gradient/total_norm"))
    # Python 3.12's sum() of floats is compensated (Neumaier), so the total may differ in the last bit
    assert got[(None, "gradient/total_norm")] == pytest.approx(total, rel=1e-12)
    for key, value in want.items():
        assert got[key] == value or (math.isnan(got[key]) and math.isnan(value)), key


def test_running_window_totals_equal_a_fresh_merge():
    rng = np.random.default_rng(3)
    h = History(window=5)
    for step in range(300):
        units = 6 if step < 150 or step > 160 else 4  # a layout change empties the running total
        x = rng.standard_normal((8, units)) * (1 + step % 7)
        if step % 37 == 0:
            x[0, 0] = np.inf  # non-finite sums cannot be subtracted again: merged afresh
        h.record_summaries(step, {("activation", "a"): summary_of(x, "relu", hist=True, units=True)})
        if step % 3 == 0 or step > 140:
            got = h.window_summary("activation", "a")
            members = [s for _, s in h.summaries("activation", "a")]
            want = members[0]
            for s in members[1:]:
                want = want.merge(s)
            assert got.layout == want.layout
            np.testing.assert_allclose(got.v, want.v, rtol=1e-9, atol=1e-9)


# -- nothing on unsampled steps, one transfer on sampled ones --------------------------------


def _mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))
    return model, torch.optim.SGD(model.parameters(), lr=0.05)


def _train(model, opt, mon, steps, every_step=lambda step: None, loss_at=None):
    """``steps`` training steps closed by ``mon.step``; ``loss_at``: {step: loss handed to step() instead
    of the real one}."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 12, generator=g), torch.randint(0, 3, (32,), generator=g)
    for step in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        mon.step(step, loss=(loss_at or {}).get(step, loss))
        every_step(step)


def test_unsampled_steps_compute_nothing(monkeypatch):
    calls: list[str] = []

    def counting(name, fn):
        def wrapper(*args, **kwargs):
            calls.append(name)
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(compute, "summarize_host", counting("summary", compute.summarize_host))
    monkeypatch.setattr(compute, "_summarize_on_device", counting("summary", compute._summarize_on_device))
    monkeypatch.setattr(fused, "difference_rows", counting("update", fused.difference_rows))
    import nnhealth.hooks._torch_optim as optim_hooks
    monkeypatch.setattr(optim_hooks, "header_rows", counting("rows", fused.header_rows))
    monkeypatch.setattr(optim_hooks, "difference_rows", counting("update", fused.difference_rows))
    model, opt = _mlp()
    mon = Monitor(every=4, console=False).watch(model, opt)
    ingested = []
    real_ingest = mon.ingest
    monkeypatch.setattr(mon, "ingest", lambda step, values, summaries, **kw: (
        ingested.append((step, dict(values), len(summaries))), real_ingest(step, values, summaries, **kw))[1])
    per_step = []
    _train(model, opt, mon, 12, lambda step: (per_step.append(list(calls)), calls.clear()))
    mon.close()
    for step, work in enumerate(per_step):
        if step % 4:
            assert work == [], (step, work)
        else:
            assert {"summary", "rows", "update"} <= set(work), (step, work)
    for step, values, n_summaries in ingested:
        assert set(values) == {"loss"}
        assert (n_summaries > 0) == (step % 4 == 0), step


def _hooked(model) -> dict[str, int]:
    """Module name -> its forward hooks and pre-hooks (any at all puts PyTorch on its slow call path)."""
    return {name: len(m._forward_hooks) + len(m._forward_pre_hooks) for name, m in model.named_modules()
            if m._forward_hooks or m._forward_pre_hooks}


def test_between_sampled_steps_the_modules_carry_no_hooks():
    """Modules without hooks take PyTorch's fast call path: nnhealth's hooks are on for sampled steps
    alone (from the step() before one to the step() ending it), and every sampled step is seen."""
    model, opt = _mlp()
    mon = Monitor(every=3, console=False, strict=True).watch(model, opt)
    on_watch = _hooked(model)
    assert on_watch == {"": 2, "1": 1, "3": 1}  # step 0 is sampled: the model's own pair, two activations
    seen, optimizer = [], []
    _train(model, opt, mon, 9, lambda step: (seen.append(_hooked(model)), optimizer.append(
        len(opt._optimizer_step_pre_hooks) + len(opt._optimizer_step_post_hooks))))
    # after step s: the hooks are there when step s + 1 is sampled
    assert seen == [{} if (s + 1) % 3 else on_watch for s in range(9)]
    assert optimizer == [0 if (s + 1) % 3 else 2 for s in range(9)]
    for role, where in (("activation", "1"), ("input", "input"), ("gradient", "0.weight"), ("update", "0.weight")):
        assert len(mon.history.summaries(role, where)) == 3, role
    mon.close()
    assert _hooked(model) == {} and not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks


def test_every_step_sampled_leaves_the_hooks_on():
    model, opt = _mlp()
    mon = Monitor(every=1, console=False).watch(model, opt)
    seen = []
    _train(model, opt, mon, 3, lambda step: seen.append(_hooked(model)))
    assert seen == [{"": 2, "1": 1, "3": 1}] * 3
    assert all(not w.forward._off.hooks and not w.grads._off.hooks for w in mon._watchers)
    mon.close()


def test_a_hook_put_back_takes_its_old_place_whatever_came_and_went():
    from nnhealth.hooks._torch_switch import SwitchableHook

    def hook(name):
        def run(module, args, out):
            return None
        run.__name__ = name
        return run

    m = nn.ReLU()
    a, ours, b = (m.register_forward_hook(hook(n)) for n in ("a", "ours", "b"))
    switch = SwitchableHook(ours)

    def names():
        return [fn.__name__ for fn in m._forward_hooks.values()]

    switch.off()
    m.register_forward_hook(hook("c"))  # appended while ours was off: after it
    m.register_forward_hook(hook("d"), prepend=True)  # prepended: before everything
    switch.put_back()
    assert names() == ["d", "a", "ours", "b", "c"]
    switch.off()
    a.remove()  # its neighbour before is gone: ours goes before the first of those that were after it
    switch.put_back()
    assert names() == ["d", "ours", "b", "c"]
    switch.off()
    switch.off()  # twice: nothing more
    switch.put_back()
    switch.put_back()
    assert names() == ["d", "ours", "b", "c"]
    ours.remove()
    assert names() == ["d", "b", "c"]


def test_a_hook_the_user_prepends_after_watch_stays_before_nnhealths():
    model, opt = _mlp()
    mon = Monitor(every=2, console=False, strict=True).watch(model, opt)
    model[1].register_forward_hook(lambda m, args, out: out + 100.0, prepend=True)
    _train(model, opt, mon, 5)
    mon.close()
    relu = mon.history.summaries("activation", "1")
    assert len(relu) == 3 and all(s.mean > 99 for _, s in relu)


def test_without_compiler_stances_the_hooks_stay_on(monkeypatch):
    """On PyTorch without stances, code compiled while the hooks were off would run without them on
    sampled steps too: there they stay on, and return at their first line between sampled steps."""
    import nnhealth.hooks._torch_switch as switch

    monkeypatch.setattr(switch, "HOOKS_CAN_BE_OFF", False)
    model, opt = _mlp()
    mon = Monitor(every=3, console=False).watch(model, opt)
    seen = []
    _train(model, opt, mon, 4, lambda step: seen.append(_hooked(model)))
    mon.close()
    assert seen == [{"": 2, "1": 1, "3": 1}] * 4
    assert len(mon.history.summaries("activation", "1")) == 2


def test_hooks_put_back_keep_their_place_among_the_users_hooks():
    """A user's hook that changes a layer's output runs after nnhealth's if registered after watch(),
    before it if registered before, however often nnhealth's hooks are taken off and put back."""
    model, opt = _mlp()
    model[1].register_forward_hook(lambda m, args, out: out + 100.0)  # before watch: nnhealth sees it
    mon = Monitor(every=2, console=False, strict=True).watch(model, opt)
    model[3].register_forward_hook(lambda m, args, out: out + 100.0)  # after watch: nnhealth does not
    _train(model, opt, mon, 7)
    mon.close()
    relu, tanh = mon.history.summaries("activation", "1"), mon.history.summaries("activation", "3")
    assert len(relu) == len(tanh) == 4
    assert all(s.mean > 99 for _, s in relu)  # the output as the user's earlier hook made it
    assert all(abs(s.mean) <= 1 for _, s in tanh)  # tanh's own output, before the user's later hook
    assert [len(m._forward_hooks) for m in model] == [0, 1, 0, 1, 0]  # the user's hooks stay


def test_a_sampled_step_reaches_the_host_in_one_transfer(monkeypatch):
    transfers = []
    real = inflight_module.start_fetch

    def counting(ops, vectors):
        transfers.append(len(vectors))
        return real(ops, vectors)

    monkeypatch.setattr(inflight_module, "start_fetch", counting)
    model, opt = _mlp()
    mon = Monitor(every=3, console=False).watch(model, opt)
    per_step = []
    _train(model, opt, mon, 9, lambda step: (per_step.append(list(transfers)), transfers.clear()))
    for step, copies in enumerate(per_step):
        if step % 3:
            assert copies == [], step
        else:
            # input, 2 activations, and 6 parameters' gradient, value, update and value before it
            assert len(copies) == 1 and copies[0] >= 1 + 2 + 6 * 4, (step, copies)
    mon.close()


# -- bounded ---------------------------------------------------------------------------------


def test_the_history_is_bounded_however_long_the_run():
    capacity, head, window = 50, 8, 4
    mon = Monitor(every=2, console=False, window=window, history_capacity=capacity)
    mon.history.head = head
    rng = np.random.default_rng(0)
    act = summarize(np.maximum(rng.standard_normal((16, 8)), 0), "relu", hist=True, units=True)
    grad = summarize(rng.standard_normal((8, 8)))

    def run(steps, start):
        for step in range(start, start + steps):
            sampled = step % 2 == 0
            summaries = {("activation", f"a{i}"): Summary(*act) for i in range(3)}
            summaries.update({("gradient", f"w{i}"): Summary(*grad) for i in range(3)})
            mon.ingest(step, {"loss": 1.0 + 1.0 / (step + 1)}, summaries if sampled else {}, sampled=sampled)

    run(2000, 0)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    run(6000, 2000)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    h = mon.history
    assert max(len(h.series(w, s)) for w, s in h.keys()) <= head + capacity
    assert all(len(h.summaries(role, name)) <= window for role in ("activation", "gradient") for name in h.names(role))
    assert grown < 256 * 1024, f"the history grew {grown} bytes over 6000 more steps"
    mon.close()


# -- the TensorBoard sink batches unsampled steps, and loses none ----------------------------


def test_tensorboard_scalars_of_unsampled_steps_are_batched_and_all_written(tmp_path, monkeypatch):
    from nnhealth.dashboards import background
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    puts = []
    real_put = background.BackgroundWriter.put
    monkeypatch.setattr(background.BackgroundWriter, "put",
                        lambda self, job, kind="scalars", cost=0, steps=1: (puts.append((kind, steps)),
                                                                            real_put(self, job, kind, cost, steps))[1])
    mon = Monitor(logdir=tmp_path, every=10, console=False)
    for step in range(95):
        mon.step(step, loss=2.0 - step / 100)
    mon.close()
    scalar_jobs = [steps for kind, steps in puts if kind == "scalars"]
    assert sum(scalar_jobs) == 95 and len(scalar_jobs) <= 95 // 5
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("loss/train")] == list(range(95))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_summaries_equal_the_cpu_ones():
    x = torch.randn(64, 32, 16, 16, device="cuda").relu()
    x[0, 0, 0, :3] = torch.tensor([float("nan"), 0.0, float("inf")], device="cuda")
    cpu_layout, cpu = summarize(x.cpu(), "relu", hist=True, units=True)
    layout, dev = summarize(x, "relu", hist=True, units=True)
    assert layout == cpu_layout and dev.device.type == "cuda"
    a, b = Summary(layout, dev.cpu().numpy()), Summary(layout, cpu.numpy())
    for name in ("count", "nonfinite", "zeros", "positive", "samples", "min", "max"):
        assert getattr(a, name) == getattr(b, name), name
    np.testing.assert_array_equal(a.unit_fired, b.unit_fired)
    assert np.abs(a.hist - b.hist).sum() <= 1e-4 * a.count + 2


# -- unsampled steps: the loss is judged in batches, but urgent values at once -----------------


def _judged_steps(mon):
    judged = []
    real = mon.engine.evaluate

    def counting(history, step, *args, **kwargs):
        judged.append(step)
        return real(history, step, *args, **kwargs)

    mon.engine.evaluate = counting
    return judged


def test_healthy_losses_of_unsampled_steps_are_judged_with_the_next_sampled_step():
    mon = Monitor(every=5, console=False)
    judged = _judged_steps(mon)
    at_each_step = []
    for step in range(12):
        mon.step(step, loss=2.0 - 0.1 * step)
        at_each_step.append(list(judged))
    assert at_each_step[0] == [0]                 # the first loss at once (the reference)
    assert at_each_step[4] == [0]                 # steps 1-4 wait...
    assert at_each_step[5] == [0, 1, 2, 3, 4, 5]  # ...and are judged in order, under their own steps
    assert mon.history.series(None, "loss").arrays()[0].tolist() == list(range(12))  # reading settles
    assert judged == list(range(12))
    mon.close()



# -- dense sampling on the host: steps are judged in batches, urgent values at once ------------------


def _tiny_init_run(batched: bool, steps: int, loss_at=None):
    """every=1 on the CPU, a net whose tiny init really makes its gradients vanish; ``loss_at`` as
    :func:`_train`'s."""
    model, opt = _mlp()
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.mul_(0.01)
    mon = Monitor(every=1, console=False).watch(model, opt)
    if not batched:
        mon._host_batch = 0
    judged = _judged_steps(mon)
    per_step = []
    _train(model, opt, mon, steps, lambda step: per_step.append((list(judged), mon.should_stop)), loss_at)
    return mon, per_step


def test_dense_host_steps_are_judged_in_batches_with_the_same_findings():
    """Judged one step at a time, between the training's own kernels, the history and the rules cost a
    third more: every=1 on the CPU, steps wait until MAX_HELD are queued, then are judged one after the
    other under their own step numbers. History and findings are those of judging each at once."""
    steps = 2 * MAX_HELD + 3
    mon, per_step = _tiny_init_run(True, steps)
    at_once, _ = _tiny_init_run(False, steps)
    judged = [j for j, _ in per_step]
    assert judged[0] == [0]  # the first loss at once (the reference)
    assert judged[MAX_HELD - 1] == [0] and judged[MAX_HELD] == list(range(MAX_HELD + 1))
    assert judged[2 * MAX_HELD] == list(range(2 * MAX_HELD + 1)) and judged[-1] == judged[2 * MAX_HELD]
    assert mon.history.series(None, "loss").arrays()[0].tolist() == list(range(steps))  # reading releases
    found = [(f.symptom, f.step, f.where, f.message) for f in mon.findings]
    assert found == [(f.symptom, f.step, f.where, f.message) for f in at_once.findings]
    assert {"vanishing-gradients", "dead-relu"} <= {s for s, *_ in found}
    for name in ("0.weight", "2.weight"):
        a, b = mon.history.summaries("gradient", name), at_once.history.summaries("gradient", name)
        assert [s for s, _ in a] == [s for s, _ in b] and all(np.array_equal(x.v, y.v, equal_nan=True)
                                                     for (_, x), (_, y) in zip(a, b))
    mon.close()
    at_once.close()


def test_a_batch_of_dense_host_steps_stops_at_a_memory_bound(monkeypatch):
    """A large model's steps hold megabytes of vectors each: the steps of a batch hold at most
    HOST_BATCH_BYTES, not MAX_HELD steps' worth."""
    import nnhealth.monitor as monitor_module

    probe, _ = _tiny_init_run(True, 2)  # step 0 judged at once, step 1 held
    one_step = probe._flight.host_bytes
    assert one_step > 0
    probe.close()
    monkeypatch.setattr(monitor_module, "HOST_BATCH_BYTES", 3 * one_step)
    mon, per_step = _tiny_init_run(True, 8)
    judged = [j for j, _ in per_step]
    assert judged[2] == [0] and judged[3] == [0, 1, 2, 3]  # three steps held, judged with the fourth
    assert judged[6] == list(range(7))
    mon.close()


def test_a_non_finite_loss_is_judged_at_once_between_batches():
    mon, per_step = _tiny_init_run(True, 8, loss_at={5: torch.tensor(float("nan"))})
    judged, stop = zip(*per_step)
    assert judged[4] == [0] and not stop[4]      # steps 1-4 wait...
    assert judged[5] == list(range(6)) and stop[5]  # ...and the NaN loss is judged with them, at once
    assert mon._findings[-1].symptom == "loss-nan" and mon._findings[-1].step == 5
    mon.close()

def test_with_a_sparse_every_losses_wait_at_most_a_few_steps():
    """every=1000 (layer statistics now and then) must not leave the loss rules 1000 steps behind, nor
    keep 1000 steps in memory: deferred losses are judged at most MAX_HELD steps late."""
    mon = Monitor(every=1000, console=False)
    judged = _judged_steps(mon)
    for step in range(3 * MAX_HELD + 2):
        mon.step(step, loss=2.0 - 0.001 * step)
        assert len(mon._deferred) <= MAX_HELD
        assert step - judged[-1] <= MAX_HELD
    assert judged == list(range(3 * MAX_HELD + 2))[:len(judged)]
    mon.close()


def test_a_non_finite_or_rising_loss_is_judged_at_once():
    mon = Monitor(every=10, console=False)
    for step, loss in enumerate([2.0, 1.5, 1.2, 7.0]):
        mon.step(step, loss=loss)
    assert not mon.should_stop  # one value above 3x the start: loss-exploding wants two
    mon.step(4, loss=8.0)
    assert mon.should_stop and mon._findings[-1].symptom == "loss-exploding" and mon._findings[-1].step == 4
    mon = Monitor(every=10, console=False)
    for step, loss in enumerate([2.0, 1.5, float("nan")]):
        mon.step(step, loss=loss)
    assert mon.should_stop and mon._findings[-1].symptom == "loss-nan" and mon._findings[-1].step == 2
    mon.close()


@pytest.mark.parametrize("loss", [torch.tensor(1.25), torch.tensor(1.25, dtype=torch.float16),
                                  torch.tensor(1.25, dtype=torch.bfloat16), torch.tensor(1.25, dtype=torch.float64),
                                  torch.tensor(3), torch.tensor(True), torch.tensor([1.25, 9.0]),
                                  torch.tensor(1.25, requires_grad=True) * 1, 1.25, 3, np.float32(1.25)],
                         ids=["f32", "f16", "bf16", "f64", "int", "bool", "1-d", "grad", "float", "int-py", "np"])
def test_an_unsampled_loss_is_read_as_on_a_sampled_step(loss):
    """Unsampled steps read a 0-d CPU tensor in one call (their fast path): the same number as the
    general path, which sampled steps and metrics take."""
    mon = Monitor(every=2, console=False, strict=True)
    mon.step(0, loss=loss, val_loss=loss)  # a metric: the general path
    mon.step(1, loss=loss)                 # unsampled, the loss alone: the fast path
    mon.step(2, loss=loss)                 # sampled
    want = mon.history.values(None, "val_loss").tolist()
    assert mon.history.values(None, "loss").tolist() == want * 3
    mon.close()


def test_the_step_profile_sees_every_part_of_a_watched_step(capsys):
    """``step_profile.py --parts`` (README's accounting of where a step's time goes) wraps nnhealth's own
    functions: each part must really be measured (a renamed hook would read as costing nothing), the
    C kernels inside the parts that call them, and the wrappers must be gone afterwards."""
    root = str(Path(__file__).resolve().parents[1])  # benchmarks/ lives at the repository root
    if root not in sys.path:
        sys.path.insert(0, root)
    from nnhealth.hooks._torch_forward import ForwardWatch

    from benchmarks import step_profile

    begin, step = ForwardWatch._begin, Monitor.step
    logger = logging.getLogger("nnhealth")
    level = logger.level  # the benchmark's runs quieten nnhealth's logger (for the process): restored
    try:
        cpu, parts = step_profile.parts_of_steps("small", rounds=1)
    finally:
        logger.setLevel(level)
    assert ForwardWatch._begin is begin and Monitor.step is step
    assert not parts["plain"] or set(parts["plain"]) == {"TensorBoard writer thread"}
    kernels = step_profile.compiled.kernels() is not None
    for variant in ("nnhealth (defaults)", "nnhealth every=1"):
        got = parts[variant]
        for part in ("forward hooks", "optimizer hooks", "Monitor.step"):
            assert got[part] > 0, (variant, part)
        for part in ("forward hooks", "optimizer hooks"):
            assert (got[(part, "kernels")] > 0) == kernels and got[(part, "kernels")] < got[part]
        assert got[("Monitor.step", "kernels")] == 0
        assert cpu[variant] > cpu["plain"]
    assert parts["nnhealth every=1"]["TensorBoard writer thread"] > 0
    step_profile.print_parts(cpu, parts, rounds=1)
    assert "Monitor.step" in capsys.readouterr().out



def test_the_floor_variants_compute_and_copy_every_sampled_step_but_record_nothing(capsys):
    """``step_profile.py --floor`` reads what watching would cost if recording, judging and writing
    were free: its "not recorded" runs must still compute each sampled step's statistics and bring
    them to the host (else the floor would be too low), keep nothing, and leave the benchmark's
    variants as they were."""
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    from benchmarks import overhead_workloads, step_profile

    logger = logging.getLogger("nnhealth")
    level = logger.level
    try:
        for every in (1, 10):
            run = step_profile.FLOORS[f"every={every}, not recorded" if every == 1 else "defaults, not recorded"](
                overhead_workloads.WORKLOADS["small"], torch.device("cpu"), None)
            for _ in range(40):
                run.step()
            run.flush()
            mon = run.extra["monitor"]
            assert run.extra["arrived"] == list(range(0, 40, every))
            assert mon.history.to_dataframe().empty and not mon.findings
            run.close()
        variants = dict(overhead_workloads.VARIANTS)
        ratios = step_profile.floors("small", rounds=1, block=10)
    finally:
        logger.setLevel(level)
    assert overhead_workloads.VARIANTS == variants
    assert list(ratios) == step_profile.FLOOR_TABLE and ratios["plain"] == 1.0
    assert all(r > 0 for r in ratios.values())
    step_profile.print_floors(ratios, "small", rounds=1)
    assert "not recorded" in capsys.readouterr().out


_ALLOCATING_CHILD = """
import ctypes, sys
sys.path.insert(0, sys.argv[1])
from benchmarks.overhead_timing import _minor_faults, pin_allocator
pinned = pin_allocator() if sys.argv[2] == "pin" else None
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
before = _minor_faults()
for mib in range(9, 17):  # each block larger than any freed before, as a growing batch's activations
    block = libc.malloc(mib << 20)
    ctypes.memset(block, 1, mib << 20)
    libc.free(block)
print(pinned, _minor_faults() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_timing_allocator_keeps_large_blocks_in_the_heap():
    """The overhead benchmark pins glibc's thresholds (``overhead_timing.pin_allocator``): a block larger
    than any freed before then comes from the heap, whose pages stay mapped, where glibc by itself maps
    it afresh from the kernel and faults every page in again (what made the CNN's timing noisy)."""
    root = str(Path(__file__).resolve().parents[1])

    def faults(mode: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", _ALLOCATING_CHILD, root, mode], capture_output=True, text=True,
                             check=True)
        pinned, count = out.stdout.split()
        return pinned, int(count)

    pinned, with_pin = faults("pin")
    if pinned != "True":
        pytest.skip("not glibc: mallopt refused")
    _, native = faults("native")
    pages = sum(range(9, 17)) << 8  # 4 KiB pages of all the blocks
    assert native > pages // 2 and with_pin < pages // 4
