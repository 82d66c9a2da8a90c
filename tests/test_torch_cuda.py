"""The CUDA paths on a real device: the numbers equal the CPU's, a step never waits for the device,
one copy per step reaches the host, and every demo fault is diagnosed the same way.

Skipped where no CUDA device exists (CI has none); ``bash benchmarks/cuda_check.sh`` runs them,
with the overhead benchmark on the device, on a machine with a GPU.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from nnhealth import Monitor  # noqa: E402
from nnhealth.demo import torch_network  # noqa: E402
from torch_training import training_steps  # noqa: E402

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
              pytest.mark.usefixtures("one_torch_thread")]


def cnn() -> nn.Module:
    """conv-BN-ReLU-pool, then a tanh layer: per-channel units, a saturating kind, BatchNorm. The
    convolution has no bias: BatchNorm cancels it, so its gradient would be rounding noise, which
    differs between devices (and which Adam would scale up to a full-size update)."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(8 * 8 * 8, 16), nn.Tanh(), nn.Linear(16, 4))


def batch(device, n=16):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 16, 16, generator=g).to(device), torch.randint(0, 4, (n,), generator=g).to(device)


def watched(device, steps=3, every=1, **options):
    torch.manual_seed(0)
    model = cnn().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    mon = Monitor(every=every, console=False, strict=True, **options).watch(model, opt)
    x, y = batch(device)
    training_steps(model, opt, mon, x, y, steps)
    mon.close()
    return mon


@pytest.fixture
def exact_float32():
    """TF32 off: cuDNN and cuBLAS then compute in float32, like the CPU."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.usefixtures("exact_float32")
def test_every_statistic_equals_the_cpu_one():
    cpu, gpu = watched("cpu").history, watched("cuda").history
    a, b = (h.to_dataframe().sort_values(["step", "where", "stat"], ignore_index=True) for h in (cpu, gpu))
    assert len(a) == len(b) > 200
    assert list(zip(a.step, a["where"], a.stat)) == list(zip(b.step, b["where"], b.stat))
    close = np.isclose(b.value, a.value, rtol=2e-3, atol=1e-5, equal_nan=True)
    assert close.all(), a[~close].assign(cuda=b.value[~close]).to_string()
    for role in ("activation", "input"):
        assert cpu.names(role) == gpu.names(role) != []
        for name in cpu.names(role):
            s, t = cpu.latest_summary(role, name), gpu.latest_summary(role, name)
            assert s.count == t.count and s.nonfinite == t.nonfinite == 0
            assert np.abs(s.hist - t.hist).sum() <= 1e-3 * s.count + 2, name  # values on a bucket edge may move
            if s.unit_fired is not None:
                np.testing.assert_allclose(t.unit_fired, s.unit_fired, atol=2)


@pytest.mark.parametrize("every", [1, 10])
def test_steps_never_wait_for_the_device(tmp_path, every):
    """Sampled and unsampled steps, the rules and the TensorBoard writer included: no host synchronisation."""
    torch.manual_seed(0)
    model = cnn().cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    # strict: an error inside nnhealth (a synchronisation refused) is raised, not logged and survived
    mon = Monitor(logdir=tmp_path, every=every, console=False, strict=True).watch(model, opt)
    x, y = batch("cuda")
    training_steps(model, opt, mon, x, y, 1)  # first step: allocations, pinned buffers
    torch.cuda.set_sync_debug_mode("error")
    try:
        training_steps(model, opt, mon, x, y, 24, start=1)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    mon.close()
    assert len(mon.history.values("0.weight", "gradient/norm")) == len(range(0, 25, every))
    assert len(mon.history.values(None, "loss")) == 25


def _device_to_host_copies(fn) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if "Memcpy DtoH" in e.name)


def test_one_copy_to_the_host_per_step():
    torch.manual_seed(0)
    model = cnn().cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    mon = Monitor(every=4, console=False, strict=True).watch(model, opt)
    x, y = batch("cuda")
    training_steps(model, opt, mon, x, y, 4)  # warm: step 4 is the next sampled one
    sampled = _device_to_host_copies(lambda: training_steps(model, opt, mon, x, y, 1, start=4))
    unsampled = _device_to_host_copies(lambda: training_steps(model, opt, mon, x, y, 1, start=5))
    mon.close()
    # a sampled step: every statistic, its loss and the losses held since the last copy, in one copy;
    # an unsampled one: none (its loss waits on the device for the next copy)
    assert (sampled, unsampled) == (1, 0)
    assert len(mon.history.values("0.weight", "gradient/norm")) == 2


@pytest.mark.parametrize("name", list(torch_network.FAULTS))
def test_each_demo_fault_is_diagnosed_on_the_device(name):
    spec = torch_network.FAULTS[name]
    with Monitor(every=5, num_classes=10, console=False) as mon:
        result = torch_network.train(name, observer=mon, device="cuda")
    found = {f.symptom for f in mon.findings if f.severity != "info"}
    expected = set(spec.symptoms)
    if name == "high-lr":  # stopped after a few steps, before update ratios can be judged
        expected -= {"update-ratio-high"}
    if name == "none":
        assert found == set() and result.val_acc > 0.8
    else:
        assert expected <= found, f"{name}: expected {sorted(expected)}, found {sorted(found)}"


def test_bfloat16_autocast_activations_are_summarised():
    torch.manual_seed(0)
    model = cnn().cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(every=1, console=False, strict=True).watch(model, opt)
    x, y = batch("cuda")
    for step in range(3):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.step(step, loss=loss)
    mon.close()
    h = mon.history
    assert h.names("activation") == ["2", "6"]
    zeros = h.values("2", "activation/zero_fraction")
    assert len(zeros) == 3 and 0.3 < zeros[-1] < 0.7  # ReLU after BatchNorm: about half the values
    assert h.values("2", "activation/dead_fraction")[-1] == 0.0  # and no unit that never fires
    assert np.isfinite(h.values("5.weight", "gradient/norm")).all()


def test_summaries_under_deterministic_algorithms():
    """histc has no deterministic CUDA kernel: under torch.use_deterministic_algorithms the histogram
    takes index_add_, which has one."""
    from nnhealth.stats import Summary, summarize

    x = torch.randn(64, 32, device="cuda").relu()
    torch.use_deterministic_algorithms(True)
    try:
        layout, vector = summarize(x, "relu", hist=True, units=True)
    finally:
        torch.use_deterministic_algorithms(False)
    s = Summary(layout, vector.cpu().numpy())
    assert s.hist.sum() == s.count == x.numel() and s.zeros == int((x == 0).sum())


def test_a_saturated_layer_keeps_its_small_spread():
    """Float64 sums on the device: a sigmoid pinned near 1 with a spread of 1e-4 keeps that spread."""
    from nnhealth.stats import Summary, summarize

    g = torch.Generator().manual_seed(0)
    x = 0.999 + 1e-4 * torch.randn(256, 512, generator=g)
    layout, vector = summarize(x.cuda(), "sigmoid")
    gpu = Summary(layout, vector.cpu().numpy())
    # float64 sums of float32 squares: 1.00247e-4 on an H200 against 1.00140e-4 exactly (float32
    # sums, as the foreach kernels would take them, are off by several percent)
    assert gpu.std == pytest.approx(float(x.double().std(unbiased=False)), rel=3e-3)


@pytest.mark.parametrize("deterministic", [False, True])
def test_non_finite_values_of_many_tensors_are_counted_exactly(deterministic):
    """Header rows count each tensor's NaN and infinite values with one running count over all of them
    (no per-tensor kernel): the CPU's counts, in and out of deterministic mode, half precision too."""
    import nnhealth.hooks._torch_fused as fused
    from nnhealth.stats import Layout, Summary

    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(n, generator=g) for n in (5, 300, 1, 40, 999, 7)]
    for i, at in {0: [1], 1: [0, 150, 299], 3: [39], 4: list(range(0, 999, 3))}.items():
        for j, k in enumerate(at):
            xs[i][k] = (float("nan"), float("inf"), float("-inf"))[j % 3]
    for dtype in (torch.float32, torch.float16):
        cpu = [x.to(dtype) for x in xs]
        gpu = [x.cuda() for x in cpu]
        torch.use_deterministic_algorithms(deterministic)
        try:
            rows = fused.header_rows(gpu, fused.GRADIENT)
        finally:
            torch.use_deterministic_algorithms(False)
        got = [Summary(Layout(), r.cpu().numpy()) for r in rows]
        want = [Summary(Layout(), np.asarray(r)) for r in fused.header_rows(cpu, fused.GRADIENT)]
        assert [(s.nonfinite, s.count) for s in got] == [(s.nonfinite, s.count) for s in want]
