"""The few-kernel summary of tensors on an accelerator: the same numbers as the host kernels, in a
bounded number of kernels, and histogram buckets exact against the float64 definition.

The path runs on any torch device, so the CPU checks its arithmetic here; ``test_torch_cuda.py``
checks it on a GPU.
"""
from __future__ import annotations

import collections

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from nnhealth.stats import histogram as H  # noqa: E402
from nnhealth.stats import summarize  # noqa: E402
from nnhealth.stats.backend import NUMPY, TorchOps  # noqa: E402
from nnhealth.stats.compute import _summarize_on_device, default_unit_axis  # noqa: E402
from nnhealth.stats.kinds import get_kind  # noqa: E402
from nnhealth.stats.summary import Summary  # noqa: E402
from nnhealth.stats.torch_device import summarize_tensor  # noqa: E402

OPS = TorchOps(torch, torch.device("cpu"))
#: aten ops that only make views: no kernel is launched for them
VIEWS = {"detach", "view", "t", "select", "slice", "permute", "expand", "unbind", "alias", "_unsafe_view",
         "as_strided", "lift_fresh", "reshape", "squeeze", "unsqueeze", "movedim", "scalar_tensor"}


def few_kernels(x, kind, hist=True, units=True, moments=False, unit_axis=None):
    layout, vector = summarize_tensor(torch, OPS, x, get_kind(kind), hist, units, moments, unit_axis,
                                      default_unit_axis)
    return Summary(layout, vector.numpy())


def host(x, kind, **options):
    layout, vector = summarize(x, kind, **options)
    return Summary(layout, vector.numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_signed_boundaries_give_the_reference_bucket(dtype):
    low = H.lower_edges(dtype)
    rng = np.random.default_rng(0)
    spread = rng.standard_normal(20_000) * 10.0 ** rng.uniform(-15, 22, 20_000)
    edges = np.concatenate([low, np.nextafter(low, dtype(0)), np.nextafter(low, dtype(np.inf))])
    special = [0.0, -0.0, 1e-40, -1e-40, 1e-300, 1e30, -1e30, np.finfo(dtype).max, -np.finfo(dtype).max]
    v = np.concatenate([spread, edges, -edges, special]).astype(dtype)
    got = np.searchsorted(H.signed_boundaries(dtype), v, side="right")
    want = np.array([H.ZERO if x == 0 else H.ZERO + np.sign(x) * (1 + min(max(H.magnitude_bucket(abs(float(x))),
                     H.K_MIN), H.K_MAX) - H.K_MIN) for x in v])
    assert np.array_equal(got, want)
    assert np.searchsorted(H.signed_boundaries(dtype), dtype(np.inf), side="right") == H.NUM_BUCKETS


@pytest.mark.parametrize("shape, axis", [((64, 3, 8, 8), 1), ((16, 10), -1), ((4, 5, 6), 1), ((7,), -1), ((), None)])
@pytest.mark.parametrize("kind", ["relu", "tanh", "sigmoid", "relu6", "linear"])
def test_same_numbers_as_the_host_kernel(shape, axis, kind):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g) * 3
    x = torch.relu(x) if kind == "relu" else torch.tanh(x) if kind == "tanh" else x
    if x.numel() > 5:
        x.view(-1)[:5] = torch.tensor([0.0, -0.0, float("nan"), float("-inf"), 1.0])
    options = dict(hist=True, units=True, moments=True, unit_axis=axis)
    a, b = host(x, kind, **options), few_kernels(x, kind, **options)
    assert a.layout == b.layout
    for name in ("count", "nonfinite", "zeros", "positive", "saturated", "samples", "min", "max"):
        assert getattr(a, name) == getattr(b, name), name
    for name in ("sum", "sumsq", "abssum"):
        assert getattr(b, name) == pytest.approx(getattr(a, name), rel=1e-5), name
    np.testing.assert_array_equal(a.hist, b.hist)  # the same exact bucket edges as the C kernel
    if a.layout.units:
        np.testing.assert_array_equal(a.unit_fired, b.unit_fired)
        np.testing.assert_array_equal(a.unit_saturated, b.unit_saturated)
    if a.layout.moments:
        np.testing.assert_allclose(b.unit_sum, a.unit_sum, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(b.unit_sumsq, a.unit_sumsq, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("options", [dict(), dict(hist=True), dict(units=True), dict(units=True, moments=True)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.int64])
def test_same_layout_and_vector_as_the_generic_device_path(options, dtype):
    x = (torch.randn(6, 4, 3) * 4).to(dtype)
    full = dict(hist=False, units=False, moments=False, unit_axis=None) | options
    layout, generic = _summarize_on_device(OPS, x, get_kind("tanh"), full["hist"], full["units"], full["moments"],
                                           None)
    got = summarize_tensor(torch, OPS, x, get_kind("tanh"), full["hist"], full["units"], full["moments"], None,
                           default_unit_axis)
    assert got[0] == layout
    np.testing.assert_allclose(got[1].numpy(), generic.numpy(), rtol=1e-5, atol=1e-4)


def test_all_non_finite_and_empty_tensors():
    s = few_kernels(torch.tensor([float("nan"), float("inf")]), "relu")
    assert (s.count, s.nonfinite, s.min, s.max, s.hist.sum()) == (0, 2, np.inf, -np.inf, 0)
    assert summarize_tensor(torch, OPS, torch.zeros(0, 3), get_kind("relu"), True, True, False, None,
                            default_unit_axis) is None  # left to the generic path, which handles no values


class _Kernels(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in ("cat", "stack") and len({t.dtype for t in args[0]}) > 1:
            self.names[name] += len(args[0])  # CUDA copies mixed types in one at a time
        elif name not in VIEWS:
            self.names[name] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("shape, kind", [((128, 512), "relu"), ((64, 32, 16, 16), "relu"), ((128, 512), "tanh")])
def test_an_activation_costs_about_thirty_kernels(shape, kind):
    """About half of what the generic path launches: on a GPU each costs the CPU a launch (a cat or stack
    of mixed types counted as one copy per input, as CUDA makes them). Non-finite values are replaced by
    ``nan_to_num`` (``where`` with a number makes a scalar tensor first) and counts are summed in float64
    (no conversion after): 27 for a ReLU, 31 for a tanh (its saturation test)."""
    x = torch.randn(shape)
    few_kernels(x, kind)  # constants made once
    with _Kernels() as fast:
        few_kernels(x, kind)
    with _Kernels() as generic:
        _summarize_on_device(OPS, x, get_kind(kind), True, True, False, None)
    assert sum(fast.names.values()) <= (31 if kind == "tanh" else 27), fast.names
    assert "where" not in fast.names and "scalar_tensor" not in fast.names
    assert sum(generic.names.values()) >= sum(fast.names.values()) + 25


def test_reference_bucket_helper_matches_numpy_bucket_index():
    v = np.array([1e-13, 0.5, 1.0, 1.1, -3.0, 1e21])
    want = H.bucket_index(NUMPY, v)
    got = np.searchsorted(H.signed_boundaries(np.float64), v, side="right")
    assert np.array_equal(got, want)


@pytest.mark.parametrize("route", ["deterministic", "large"])
def test_histogram_routes_without_histc_count_the_same(route, monkeypatch):
    """histc is refused under torch.use_deterministic_algorithms on CUDA, and its float32 counts round
    above 2**24 values: those take index_add_, with the same counts."""
    import nnhealth.stats.torch_device as td

    x = torch.randn(40, 30).relu()
    want = few_kernels(x, "relu").hist
    if route == "deterministic":
        monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)
    else:
        monkeypatch.setattr(td, "HISTC_EXACT", 100)
    np.testing.assert_array_equal(few_kernels(x, "relu").hist, want)


def test_a_saturated_layer_keeps_its_small_spread():
    """Sums in float64: a sigmoid pinned near 1 with a spread of 1e-4 keeps that spread (float32 sums
    of 131k values near 1 round away most of a variance of 1e-8)."""
    g = torch.Generator().manual_seed(0)
    x = 0.999 + 1e-4 * torch.randn(256, 512, generator=g)
    s = few_kernels(x, "sigmoid", hist=False, units=False)
    assert s.std == pytest.approx(float(x.double().std(unbiased=False)), rel=3e-3)


def test_tensors_whose_size_changes_every_step_beyond_the_kept_offsets(monkeypatch):
    """Sequences of varying length: a new size each call. Past the offsets kept, each call makes its
    own (from scalars, on the device): the same numbers, and the cache stops growing."""
    import nnhealth.stats.torch_device as td

    monkeypatch.setattr(td, "_OFFSETS", {})
    monkeypatch.setattr(td, "OFFSETS_KEPT", 3)
    g = torch.Generator().manual_seed(0)
    for length in range(5, 12):
        x = torch.randn(4, length, 8, generator=g).relu()
        x[0, 0, 0] = float("nan")
        a, b = host(x, "relu", hist=True, units=True), few_kernels(x, "relu")
        for name in ("count", "nonfinite", "zeros", "positive", "samples"):
            assert getattr(a, name) == getattr(b, name), (length, name)
    assert len(td._OFFSETS) == 3
