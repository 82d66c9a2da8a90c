"""Fused per-parameter summaries equal the reference summaries, and the host transfer is right.

The optimizer hooks summarise hundreds of tensors with ``_foreach`` calls
(:mod:`nnhealth.hooks._torch_fused`); here those rows are checked against
:func:`nnhealth.stats.summarize` field by field, and the device-to-host path
the monitor takes for statistics and loss tensors is exercised.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

torch = pytest.importorskip("torch")
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

import nnhealth.hooks._torch_fused as fused  # noqa: E402
from nnhealth import Monitor  # noqa: E402
from nnhealth.stats import Layout, Summary, summarize  # noqa: E402
from nnhealth.stats.backend import Ready, TorchOps, start_fetch  # noqa: E402
from nnhealth.stats.compute import default_unit_axis  # noqa: E402
from nnhealth.stats.kinds import get_kind  # noqa: E402
from nnhealth.stats.summary import H  # noqa: E402
from nnhealth.stats.torch_device import summarize_tensor  # noqa: E402

ALWAYS = ("count", "sumsq", "nonfinite", "saturated", "samples")
FINITE = st.floats(min_value=-1e3, max_value=1e3, width=32)


def reference(x: torch.Tensor) -> Summary:
    layout, vec = summarize(x, "linear")
    return Summary(layout, vec.numpy())


def as_summary(row) -> Summary:
    return Summary(Layout(), np.asarray(row))


@settings(max_examples=60, deadline=None)
@given(tensors=st.lists(arrays(np.float32, array_shapes(min_dims=1, max_dims=3, max_side=9), elements=FINITE),
                        min_size=1, max_size=6))
def test_rows_equal_the_reference_summary(tensors):
    xs = [torch.from_numpy(a) for a in tensors]
    for fields in (fused.EVERY_FIELD, fused.GRADIENT, fused.PARAMETER, fused.NORM):
        for x, row in zip(xs, fused.header_rows(xs, fields)):
            got, want = as_summary(row), reference(x)
            for name in ALWAYS + fields:
                assert getattr(got, name) == pytest.approx(getattr(want, name), rel=1e-5, abs=1e-3), name
            for name in {"sum", "abssum", "min", "max", "zeros", "positive"} - set(fields):
                assert math.isnan(getattr(got, name)), name  # not measured for this role


@pytest.fixture
def device_arithmetic(monkeypatch):
    """What a CUDA tensor takes (``_foreach`` columns, rows put together on the device), run on the CPU."""
    monkeypatch.setattr(fused, "_on_host", lambda x: False)
    monkeypatch.setattr(fused, "_looped_columns", fused._fused_columns)


@pytest.mark.parametrize("fields", [fused.EVERY_FIELD, fused.GRADIENT, fused.PARAMETER, fused.NORM])
def test_device_rows_equal_the_host_rows(fields, device_arithmetic, monkeypatch):
    torch.manual_seed(0)
    xs = [torch.randn(300, 70), torch.randn(9, 5).t(), torch.randn(17) + 0.5,
          torch.tensor([1.0, float("nan"), -2.0, float("inf"), 0.0])]
    device = [r.numpy() for r in fused.header_rows(xs, fields)]
    monkeypatch.undo()
    host = fused.header_rows(xs, fields)
    for x, d, h in zip(xs, device, host):
        got, want = as_summary(d), as_summary(h)
        if "sum" in fields:
            d, h = np.delete(d, H["sum"]), np.delete(h, H["sum"])
        for name in ("count", "nonfinite", "saturated", "samples"):
            assert getattr(got, name) == getattr(want, name), name
        if want.nonfinite == 0:
            np.testing.assert_allclose(d, h, rtol=1e-5, atol=1e-4, equal_nan=True)  # the sum aside:
            if "sum" in fields:  # 2 * sum(max(x, 0)) - sum|x| in float32 cancels: exact to 1e-6 of sum|x|
                assert got.sum == pytest.approx(want.sum, abs=1e-5 * float(x.abs().sum()))
        else:  # the sums of a tensor with NaN/Inf are not trusted: only that they are not finite
            assert not math.isfinite(got.sumsq)


class _Concatenations(TorchDispatchMode):
    """The cat and stack calls made while it is on: (op, input types)."""

    def __init__(self):
        super().__init__()
        self.calls: list = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in ("cat", "stack"):
            self.calls.append((func.overloadpacket.__name__, {t.dtype for t in args[0]}))
        return func(*args, **(kwargs or {}))


def test_device_rows_and_summaries_concatenate_one_type_at_a_time(device_arithmetic):
    """CUDA concatenates tensors of mixed types one at a time, a copy each: stacking a role's float32
    and float64 columns together cost 92 copies per sampled step of the benchmark's MLP."""
    torch.manual_seed(0)
    xs = [torch.randn(64, 32), torch.randn(32), torch.randn(10, 64), torch.randn(10)]
    ops = TorchOps(torch, torch.device("cpu"))
    with _Concatenations() as seen:
        for fields in (fused.EVERY_FIELD, fused.GRADIENT, fused.PARAMETER, fused.NORM):
            fused.header_rows(xs, fields)
        fused.difference_rows([x.clone() for x in xs], [x + 1 for x in xs])
        for kind in ("relu", "tanh"):
            summarize_tensor(torch, ops, xs[0].relu(), get_kind(kind), True, True, True, None, default_unit_axis)
    assert len(seen.calls) > 10
    assert all(len(types) == 1 for _, types in seen.calls), seen.calls


def test_non_finite_values_are_counted_exactly():
    x = torch.tensor([1.0, float("nan"), -2.0, float("inf"), float("-inf"), 0.0])
    (row,) = fused.header_rows([x])
    s = as_summary(row)
    assert s.nonfinite == 3 and s.count == 3 and s.samples == 6
    assert not math.isfinite(s.sumsq)  # the sums of a tensor with NaN/Inf are not trusted


@pytest.mark.parametrize("chunk", [fused.CHUNK, 700])
def test_device_counts_of_non_finite_values_are_exact_for_every_tensor(chunk, device_arithmetic, monkeypatch):
    """Counted together (a running count over all tensors of a chunk, read at each one's end), never with a
    norm of order 0, which CUDA computes one tensor at a time: three kernels per parameter tensor."""
    monkeypatch.setattr(fused, "CHUNK", chunk)
    orders = []
    norm = torch._foreach_norm
    monkeypatch.setattr(torch, "_foreach_norm", lambda xs, ord=2, **kw: orders.append(ord) or norm(xs, ord, **kw))
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(n, generator=g) for n in (5, 300, 1, 40, 999, 7)]
    bad = {0: [1], 1: [0, 150, 299], 3: [39], 4: list(range(0, 999, 3)), 5: []}
    for i, at in bad.items():
        for j, k in enumerate(at):
            xs[i][k] = (float("nan"), float("inf"), float("-inf"))[j % 3]
    for fields in (fused.EVERY_FIELD, fused.GRADIENT, fused.NORM):
        rows = [as_summary(r.numpy()) for r in fused.header_rows(xs, fields)]
        assert [r.nonfinite for r in rows] == [len(bad.get(i, [])) for i in range(len(xs))]
        assert [r.count for r in rows] == [x.numel() - len(bad.get(i, [])) for i, x in enumerate(xs)]
    assert 0 not in orders and orders


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_dtypes_and_odd_tensors(dtype):
    x = torch.randn(7, 5).to(dtype)
    odd = [torch.randn(3, 3).to_sparse(), torch.zeros(0), torch.randn(4, dtype=torch.complex64)]
    rows = fused.header_rows([x] + odd)
    got, want = as_summary(rows[0]), reference(x)
    assert got.sumsq == pytest.approx(want.sumsq, rel=1e-2) and got.count == 35
    for t, row in zip(odd, rows[1:]):  # summarised one by one, every field
        np.testing.assert_allclose(np.asarray(row), reference(t).v, rtol=1e-6)


@pytest.fixture(params=["header rows", "by address", "buffers", "numpy"])
def host_route(request, monkeypatch):
    """How host tensors reach the kernels: by address with the rows written by the kernel (the compiled
    extension as built), by address with rows made from the kernel's columns, through numpy buffers
    (extensions built before those entry points), or not at all (numpy computes)."""
    kernels = fused.compiled.kernels()
    if kernels is None and request.param != "numpy":
        pytest.skip("the statistics kernels are not built")
    if request.param == "by address":
        monkeypatch.setattr(fused.compiled, "kernels", lambda: fused.compiled.AddressKernels(kernels._c))
    elif request.param == "buffers":
        monkeypatch.setattr(fused.compiled, "kernels", lambda: fused.compiled.Kernels(kernels._c))
    elif request.param == "numpy":
        monkeypatch.setattr(fused.compiled, "kernels", lambda: None)
    return request.param


def test_rows_that_also_take_a_snapshot_copy_every_tensor_and_measure_the_same(host_route):
    torch.manual_seed(0)
    xs = [torch.randn(300, 70), torch.randn(9, 5).t(), torch.randn(5, dtype=torch.float64),
          torch.tensor([1.0, float("nan"), float("inf")]), torch.randn(4).to(torch.float16),
          torch.randn(3, 3).to_sparse()]
    copies = [torch.full_like(x, 7.0) if not x.is_sparse else torch.zeros(3, 3).to_sparse() for x in xs]
    with_copies = fused.header_rows(xs, fused.PARAMETER, copies=copies)
    alone = fused.header_rows(xs, fused.PARAMETER)
    np.testing.assert_array_equal(np.stack([np.asarray(r) for r in with_copies]),
                                  np.stack([np.asarray(r) for r in alone]))
    for x, c in zip(xs, copies):
        want, got = (x.to_dense(), c.to_dense()) if x.is_sparse else (x, c)
        torch.testing.assert_close(got, want, equal_nan=True, rtol=0, atol=0)


def test_every_host_route_gives_the_same_rows_and_differences(host_route):
    """Tensors the kernels cannot read as they are (not contiguous, a lazy negation) are read as the
    values they stand for; a snapshot buffer that is not contiguous is filled all the same."""
    torch.manual_seed(0)
    xs = [torch.randn(40, 30), torch.randn(30, 40).t(), torch._neg_view(torch.randn(6, 7)),
          torch.randn(50, dtype=torch.float64)[::2], torch.tensor([1.0, float("inf"), -3.0])]
    want = [np.array([float((x.double() ** 2).sum()), float(x.double().sum())]) for x in xs]
    copies = [torch.empty_like(x, memory_format=torch.contiguous_format) for x in xs]
    copies[1] = torch.empty(30, 40).t()  # not contiguous
    rows = [np.asarray(r) for r in fused.header_rows(xs, fused.PARAMETER, copies=copies)]
    for x, c, row, (sumsq, total) in zip(xs, copies, rows, want):
        torch.testing.assert_close(c, x.resolve_neg(), rtol=0, atol=0)
        if math.isfinite(sumsq):
            assert row[H["sumsq"]] == pytest.approx(sumsq, rel=1e-6)
            assert row[H["sum"]] == pytest.approx(total, rel=1e-5, abs=1e-4)
        else:
            assert row[H["nonfinite"]] == 1 and row[H["count"]] == 2
    after = [x + 0.5 for x in xs]
    diffs = [np.asarray(r) for r in fused.difference_rows([x.clone() for x in xs], after)]
    for x, row in zip(xs, diffs):
        finite = bool(torch.isfinite(x).all())
        assert (row[H["sumsq"]] == pytest.approx(0.25 * x.numel(), rel=1e-6)) if finite else row[H["nonfinite"]] == 1


def test_every_host_route_gives_the_same_rows_of_values_that_overflow_or_are_not_finite(host_route):
    """Finite values whose sums overflow are no non-finite values; NaN and Inf are counted; the fields a
    role does not ask for stay NaN, those it asks for are there."""
    big = torch.tensor([3e38, -3e38, 3e38, -3e38])  # float32 sums overflow
    xs = [torch.randn(64), big, torch.tensor([1.0, float("nan"), float("-inf"), 2.0])]
    for fields in (fused.GRADIENT, fused.PARAMETER, fused.EVERY_FIELD):
        rows = np.stack([np.asarray(r) for r in fused.header_rows(xs, fields)])
        assert rows[:, H["nonfinite"]].tolist() == [0, 0, 2] and rows[:, H["count"]].tolist() == [64, 4, 2]
        assert rows[:, H["samples"]].tolist() == [64, 4, 4] and (rows[:, H["saturated"]] == 0).all()
        for name in ("sum", "abssum", "min", "max"):
            assert np.isnan(rows[0, H[name]]) == (name not in fields), (fields, name)
        assert rows[0, H["sumsq"]] == pytest.approx(float((xs[0].double() ** 2).sum()), rel=1e-6)
        assert np.isnan(rows[:, [H["zeros"], H["positive"]]]).all()
    diffs = np.stack([np.asarray(r) for r in fused.difference_rows([x.clone() for x in xs], [x / 2 for x in xs])])
    assert diffs[:, H["nonfinite"]].tolist() == [0, 0, 2] and diffs[:, H["count"]].tolist() == [64, 4, 2]
    assert diffs[0, H["sumsq"]] == pytest.approx(float((xs[0].double() ** 2).sum()) / 4, rel=1e-6)


def test_a_snapshot_buffer_of_another_type_is_refused(host_route):
    if host_route == "numpy":
        pytest.skip("without kernels the copy is torch's own, which converts")
    with pytest.raises(ValueError, match="copy of"):
        fused.header_rows([torch.randn(8)], fused.PARAMETER, copies=[torch.empty(8, dtype=torch.float64)])


def test_chunks_bound_the_temporaries_without_changing_a_number(monkeypatch):
    xs = [torch.randn(50, 20), torch.randn(3), torch.randn(400), torch.randn(10, 10)]
    whole = np.stack(fused.header_rows(xs))
    monkeypatch.setattr(fused, "CHUNK", 100)
    assert fused._chunks(xs) == [[0], [1], [2], [3]]
    np.testing.assert_array_equal(np.stack(fused.header_rows(xs)), whole)


def test_gradscaler_scale_and_skipped_steps():
    x = torch.randn(6, 4)
    (row,) = fused.header_rows([x * 1024.0])
    (plain,) = fused.header_rows([x])
    (unscaled,) = fused.scaled([row], torch.tensor([1024.0]))
    assert isinstance(row, np.ndarray)  # CPU rows stay in host memory as numpy arrays
    np.testing.assert_allclose(unscaled, plain, rtol=1e-12)
    (skipped,) = fused.masked([plain], torch.tensor([1.0]))
    assert np.isnan(skipped).all()
    (taken,) = fused.masked([plain], torch.tensor([0.0]))
    np.testing.assert_array_equal(taken, plain)


def test_cpu_vectors_are_fetched_at_once_and_in_order():
    ops = TorchOps(torch, torch.device("cpu"))
    vectors = [torch.arange(3, dtype=torch.float64), torch.tensor([7.0]), torch.zeros(0, dtype=torch.float64)]
    transfer = start_fetch(ops, vectors)
    assert isinstance(transfer, Ready) and transfer.ready() and not transfer.is_async
    got = transfer.result()
    assert [g.tolist() for g in got] == [[0.0, 1.0, 2.0], [7.0], []]


def test_vectors_of_mixed_types_are_joined_by_type_and_come_back_in_order():
    """The device copy joins float64 summaries and float32 (or half) losses one type at a time, each
    widened once, and cuts them back in the order they were given."""
    from nnhealth.stats.backend import _TorchTransfer

    vectors = [torch.tensor(0.5), torch.arange(3, dtype=torch.float64), torch.tensor(1.5, dtype=torch.float16),
               torch.tensor([2.5, 3.5]), torch.tensor([-1.0], dtype=torch.float64)]
    with _Concatenations() as seen:
        got = _TorchTransfer(torch, vectors).result()
    assert [g.tolist() for g in got] == [[0.5], [0.0, 1.0, 2.0], [1.5], [2.5, 3.5], [-1.0]]
    assert all(len(types) == 1 for _, types in seen.calls) and len(seen.calls) == 4  # three types, then one


def test_a_transfer_in_order_comes_back_whole_in_memory_of_its_own():
    """A step's usual transfer (its float64 summaries, then a float32 loss) is already in order: it is
    copied whole, not vector by vector, and not left in the buffer the device copied into (on a GPU a
    pinned one, which goes back to its pool)."""
    from nnhealth.stats.backend import _TorchTransfer

    vectors = [torch.arange(3, dtype=torch.float64), torch.tensor([4.0, 5.0], dtype=torch.float64), torch.tensor(0.25)]
    transfer = _TorchTransfer(torch, vectors)
    got = transfer.result()
    assert [g.tolist() for g in got] == [[0.0, 1.0, 2.0], [4.0, 5.0], [0.25]]
    ((order, buffer, _),) = transfer.parts
    assert order == [0, 1, 2] and not any(np.shares_memory(g, np.asarray(buffer)) for g in got)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the non-blocking copy path needs a CUDA device")
def test_cuda_vectors_take_the_non_blocking_path():
    ops = TorchOps(torch, torch.device("cuda"))
    vectors = [torch.arange(3, dtype=torch.float64, device="cuda"), torch.tensor([7.0], dtype=torch.float64)]
    transfer = start_fetch(ops, vectors)
    assert transfer.is_async
    assert [g.tolist() for g in transfer.result()] == [[0.0, 1.0, 2.0], [7.0]]


def test_loss_and_metric_tensors_reach_the_history_without_item():
    w = torch.randn(4, requires_grad=True)
    loss = (w * 2).sum()  # requires grad, like a real loss
    mon = Monitor(every=1, console=False)
    mon.step(0, loss=loss, train_acc=torch.tensor(0.75), val_loss=torch.tensor([1.5]))
    h = mon.history
    assert h.values(None, "loss")[-1] == pytest.approx(loss.item())
    assert h.values(None, "train_acc")[-1] == 0.75 and h.values(None, "val_loss")[-1] == 1.5
    mon.close()
