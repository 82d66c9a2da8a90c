"""The compiled kernels (``_kernels.c``) against the numpy path and a plain float64 reference.

Counts (header counts, histogram buckets, per-unit fired and saturated) must
be exact; sums equal to rounding (float32 data is summed in short float32 runs).
The histogram is checked against the reference definition
``floor(ln|x| / ln 1.1)`` in float64 at and around every bucket edge, where
the numpy path (a float32 log for float32 data) may differ by one bucket.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nnhealth.stats import KINDS, Layout, Summary, compiled, histogram, host, summarize  # noqa: E402
from nnhealth.stats.backend import NUMPY  # noqa: E402
from nnhealth.stats.compute import default_unit_axis  # noqa: E402
from nnhealth.stats.summary import HEADER  # noqa: E402

COUNTS = ("count", "nonfinite", "zeros", "positive", "saturated", "samples")
SATURATING = [name for name, k in KINDS.items() if k.saturated is not None]
EDGES = [0.0, -0.0, 1.0, -1.0, 1.1, 1.1**2, -(1.1**-7), 1e-13, 1e-12, -1e-12, 1e-30, 5e-324, 1e20, -3e25,
         0.0128, 0.9872, 0.9747, 6.0, 1e30]


@pytest.fixture(autouse=True)
def jit():
    k = compiled.kernels()
    if k is None:
        if os.environ.get("NNHEALTH_KERNELS", "1").strip() == "0":
            pytest.skip("compiled kernels switched off (NNHEALTH_KERNELS=0)")
        pytest.fail("the _kernels extension was not built (no C compiler when nnhealth was installed?)")
    return k


def reference_bucket(v: float) -> int:
    """The histogram bucket of ``v``, written the obvious way (float64 log)."""
    if v == 0:
        return histogram.ZERO
    k = min(max(math.floor(math.log(abs(v)) / histogram.LOG_RATIO), histogram.K_MIN), histogram.K_MAX)
    return histogram.ZERO + (1 if v > 0 else -1) * (1 + k - histogram.K_MIN)


def reference_hist(x: np.ndarray) -> np.ndarray:
    out = np.zeros(histogram.NUM_BUCKETS)
    for v in x.reshape(-1).tolist():
        out[reference_bucket(v)] += 1
    return out


def both(x: np.ndarray, kind: str, **opts):
    """(compiled, numpy) summaries of ``x``; the compiled one None when the kernel declines."""
    args = (x, KINDS[kind], opts.get("hist", True), opts.get("units", True), opts.get("moments", True),
            opts.get("unit_axis"), default_unit_axis)
    got = host._summarize_compiled(compiled.kernels(), *args)
    with np.errstate(all="ignore"):  # as summarize_host calls it: huge values overflow its sums to inf
        want = host._summarize_numpy(*args)
    return (None if got is None else Summary(*got)), Summary(*want)


def close(got, want, rel: float, abs_: float, dtype) -> bool:
    """``got`` equals float64 ``want`` to rounding; for float32 data whose sums of squares leave the
    type's range, Inf is right too (numpy's float32 sums overflow there as well)."""
    got, want = np.atleast_1d(got), np.atleast_1d(want)
    overflow = (dtype == np.float32) & (want > 1e34) & np.isinf(got)
    return bool(np.all(overflow | (np.abs(got - want) <= rel * np.abs(want) + abs_)))


def assert_same(got: Summary, want: Summary, x: np.ndarray, unit_axis=None):
    """Every field of two summaries of ``x``: counts exact, sums to the data type's rounding."""
    assert got.layout == want.layout
    for name in COUNTS + ("min", "max"):
        assert getattr(got, name) == getattr(want, name), name
    f64 = x.astype(np.float64)
    eps = 1e-5 if x.dtype == np.float32 else 1e-12
    underflow = x.size * float(np.finfo(x.dtype).tiny)  # squares below the type's range are 0, as numpy's
    scale = float(np.abs(f64).sum())
    assert abs(got.sum - f64.sum()) <= eps * scale + 1e-300
    assert close(got.sumsq, float((f64 * f64).sum()), eps, underflow, x.dtype)
    assert got.abssum == pytest.approx(scale, rel=eps, abs=1e-300)
    if got.layout.hist:
        np.testing.assert_array_equal(got.hist, reference_hist(x))
    if got.layout.units:
        np.testing.assert_array_equal(got.unit_fired, want.unit_fired)
        np.testing.assert_array_equal(got.unit_saturated, want.unit_saturated)
    if got.layout.moments:
        z3, _ = host._unit_view(f64, unit_axis, default_unit_axis)
        total, squares = z3.sum(axis=(0, 2)), (z3 * z3).sum(axis=(0, 2))
        assert np.all(np.abs(got.unit_sum - total) <= eps * np.abs(z3).sum(axis=(0, 2)) + 1e-300)
        assert close(got.unit_sumsq, squares, eps, underflow, x.dtype)


VALUES = st.one_of(st.floats(-1e4, 1e4), st.sampled_from(EDGES), st.floats(-1.0, 1.0))
SHAPES = st.sampled_from([(7,), (1,), (5, 3), (9, 17), (2, 3, 4, 5), (3, 2, 6), (1, 4, 2, 2)])


@settings(max_examples=200, deadline=None)
@given(data=st.data(), dtype=st.sampled_from([np.float32, np.float64]), kind=st.sampled_from(sorted(KINDS)),
       opts=st.sampled_from([dict(), dict(moments=False), dict(units=False, moments=False),
                             dict(hist=False), dict(hist=False, units=False, moments=False)]))
def test_kernel_equals_numpy_and_the_reference(data, dtype, kind, opts):
    x = data.draw(arrays(dtype, SHAPES, elements=VALUES))
    got, want = both(x, kind, **opts)
    assert got is not None
    assert_same(got, want, x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis", [((3, 70000), -1), ((64, 3, 20, 20), 1), ((2, 3, 5000), 1),
                                         ((5000, 9), -1), ((150000,), -1)])
def test_arrays_of_many_pieces_and_blocks(dtype, shape, axis):
    """Bigger than a piece (rows grouped, pieces split), inner axes longer than a block."""
    rng = np.random.default_rng(1)
    for kind, x in (("relu", np.maximum(rng.standard_normal(shape), 0)), ("tanh", np.tanh(3 * rng.standard_normal(shape))),
                    ("linear", rng.standard_normal(shape) * 1e3)):
        x = x.astype(dtype)
        got, want = both(x, kind, unit_axis=axis)
        assert_same(got, want, x, axis)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pieces_without_negative_values_take_the_unsigned_histogram_and_agree(dtype):
    """Pieces whose smallest value is >= 0 (a ReLU's output, -0.0 included) are bucketed without the
    sign arithmetic; a tensor whose pieces differ takes both loops, and every count is still right."""
    rng = np.random.default_rng(4)
    x = np.maximum(rng.standard_normal((6, 40000)), 0).astype(dtype)
    x[0, ::3] = -0.0                  # zeros with the sign bit: still the zero bucket, in an unsigned piece
    x[4, :7] = -rng.random(7)         # one piece with negative values among unsigned ones
    x[5, -5:] = [1e-13, 1e-30, 3e19, np.finfo(dtype).tiny, 1.1**4]
    got, want = both(x, "relu")
    assert_same(got, want, x)
    assert got.hist[histogram.ZERO] == np.count_nonzero(x == 0) and got.hist[:histogram.ZERO].sum() == 7


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("zeros", [0.0, 0.2, 0.3, 0.9, 1.0])
def test_pieces_of_many_zeros_are_packed_and_agree(dtype, zeros):
    """float32 pieces whose sample is a quarter or more zeros have their other values packed before
    counting (where the CPU has AVX2): either sign, -0.0, edges and the smallest values, sizes
    that are no multiple of the 8 lanes or of the packing chunk, a tail too short to sample."""
    rng = np.random.default_rng(int(zeros * 10))
    x = (rng.standard_normal(70003) * np.exp(rng.uniform(-30, 30, 70003))).astype(dtype)
    x[:64] = np.array(EDGES * 4, dtype=dtype)[:64]
    x[rng.random(x.size) < zeros] = 0.0
    x[rng.random(x.size) < zeros / 4] = -0.0
    for n in (x.size, 32768 + 255, 2048 * 3 + 7, 300):
        got, _ = both(x[:n], "linear", units=False, moments=False)
        np.testing.assert_array_equal(got.hist, reference_hist(x[:n]))
        assert got.hist[histogram.ZERO] == got.zeros == np.count_nonzero(x[:n] == 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_bucket_edge_lands_where_the_reference_says(jit, dtype):
    """At, just below and just above every edge (both RATIO**k and the float nearest it), both signs,
    and the ends: below 1e-12, subnormals, the largest finite value."""
    k = np.arange(histogram.K_MIN - 2, histogram.K_MAX + 3, dtype=np.float64)
    powers = np.concatenate([(histogram.RATIO ** k).astype(dtype), np.array([1.1 ** int(i) for i in k], dtype=dtype)])
    up, down = dtype(np.inf), dtype(0)
    mags = np.concatenate([powers, np.nextafter(powers, up), np.nextafter(powers, down),
                           np.array([np.finfo(dtype).smallest_subnormal, np.finfo(dtype).tiny, 1e-30, 1e-12,
                                     np.finfo(dtype).max], dtype=dtype)])
    x = np.concatenate([mags, -mags, np.array([0.0, -0.0], dtype=dtype)])
    got, _ = both(x, "linear", units=False, moments=False)
    np.testing.assert_array_equal(got.hist, reference_hist(x))
    assert got.zeros == 2 and got.hist[histogram.ZERO] == 2


def slot_by_candidate_and_edge(dtype, patterns: np.ndarray) -> np.ndarray:
    """Count index (slot, plus SLOTS below zero) of uint64 bit patterns the way the kernel found it
    before the packed table: a candidate slot per 1/16 octave of the magnitude, then one comparison
    with the next edge's bit pattern."""
    width = np.dtype(dtype).itemsize * 8
    edges = compiled._slot_edges(dtype)
    shift = np.uint64(np.finfo(dtype).nmant - 4)
    keys = np.arange(((1 << (width - 1)) - 1 >> int(shift)) + 1, dtype=np.uint64) << shift
    candidate = 1 + np.searchsorted(edges[2:-1], keys, side="right")
    candidate[0] = 0  # zero and subnormals: the edge at 1 sends all but zero to slot 1
    magnitude = patterns & np.uint64((1 << (width - 1)) - 1)
    v = candidate[magnitude >> shift]
    v += magnitude >= edges[v + 1]
    return v + compiled.SLOTS * (patterns >> np.uint64(width - 1)).astype(np.int64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_packed_table_entry_decodes_to_the_candidate_slot_and_edge(dtype):
    """Every key of the packed table, both signs, NaN and Inf keys included: at its first and last
    bit pattern, on both sides of each edge inside it and at random offsets, the entry plus the
    bits gives the index the candidate table and edge comparison give, always inside the counts."""
    table, shift = compiled._tables(dtype)
    width = np.dtype(dtype).itemsize * 8
    assert table.dtype.itemsize * 8 == width and table.size == 1 << (width - shift)
    start = np.arange(table.size, dtype=np.uint64) << np.uint64(shift)
    span = 1 << shift
    edges = compiled._slot_edges(dtype)
    inner = edges[(edges % np.uint64(span) != 0) & (edges < edges[-1])]  # edges that fall inside a key
    inner = np.concatenate([inner, inner | np.uint64(1 << (width - 1))])
    rng = np.random.default_rng(5)
    patterns = np.concatenate([start, start + np.uint64(span - 1), inner, inner - np.uint64(1),
                               start + rng.integers(0, span, start.size, dtype=np.uint64)])
    got = compiled._decode(table, shift, patterns)
    np.testing.assert_array_equal(got, slot_by_candidate_and_edge(dtype, patterns))
    assert got.min() == 0 and got.max() == 2 * compiled.SLOTS - 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_random_bit_patterns_count_where_the_candidate_slot_and_edge_say(dtype):
    """A million finite values of any exponent and sign, drawn as bit patterns."""
    itype = np.uint32 if dtype == np.float32 else np.uint64
    rng = np.random.default_rng(6)
    bits = rng.integers(0, np.iinfo(itype).max, 1 << 20, dtype=itype, endpoint=True)
    x = bits.view(dtype)
    x = x[np.isfinite(x)]
    got, _ = both(x, "linear", units=False, moments=False)
    index = slot_by_candidate_and_edge(dtype, x.view(itype).astype(np.uint64))
    slots = np.bincount(index, minlength=2 * compiled.SLOTS)
    want = np.concatenate([slots[compiled.SLOTS + 1:][::-1], [slots[0] + slots[compiled.SLOTS]], slots[1:compiled.SLOTS]])
    np.testing.assert_array_equal(got.hist, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_any_nan_payload_or_infinity_is_refused_after_counting_inside_the_counts(dtype):
    """NaN with random payloads, both signs, and +-Inf: the histogram counts them in its last
    slots (inside its work array) and the kernel then returns nothing."""
    itype = np.uint32 if dtype == np.float32 else np.uint64
    width = np.dtype(dtype).itemsize * 8
    rng = np.random.default_rng(7)
    payload = rng.integers(1, 1 << (np.finfo(dtype).nmant), 4000, dtype=np.uint64)
    exponent = np.uint64(((1 << (width - 1 - np.finfo(dtype).nmant)) - 1) << np.finfo(dtype).nmant)  # all ones
    patterns = exponent | payload | (rng.integers(0, 2, payload.size, dtype=np.uint64) << np.uint64(width - 1))
    x = np.concatenate([patterns.astype(itype).view(dtype), np.array([np.inf, -np.inf], dtype)])
    assert not np.isfinite(x).any()
    for a in (x, np.concatenate([x, np.zeros(3 * x.size, dtype)])[rng.permutation(4 * x.size)]):  # packed too
        got = compiled.kernels().activation(a.reshape(1, -1, 1), KINDS["linear"], True, True, True,
                                            Layout(True, a.size, True).size)
        assert got is None
    index = compiled._decode(*compiled._tables(dtype), x.view(itype).astype(np.uint64))
    assert set(index.tolist()) == {compiled.SLOTS - 1, 2 * compiled.SLOTS - 1}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", SATURATING)
def test_saturation_at_the_thresholds_as_numpy_computes_it(dtype, kind):
    """Values within 8 steps of the type's spacing of every threshold crossing, in its own precision."""
    t = 0.05
    crossings = [(1 - math.sqrt(1 - t)) / 2, math.sqrt(1 - t), 1 - math.sqrt(t), 0.0, 1.0, 6.0, 0.5]
    centres = np.array(crossings + [1 - c for c in crossings], dtype=dtype)
    near, up, down = [centres], centres, centres
    for _ in range(8):
        up, down = np.nextafter(up, dtype(np.inf)), np.nextafter(down, dtype(-np.inf))
        near += [up, down]
    near = np.concatenate(near)
    x = np.stack([near, -near, near[::-1]])
    got, want = both(x, kind)
    mask = KINDS[kind].saturated(NUMPY, x)
    assert got.saturated == want.saturated == np.count_nonzero(mask)
    np.testing.assert_array_equal(got.unit_saturated, mask.sum(axis=0))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_data_is_left_to_numpy(bad):
    x = np.array([[1.0, bad, -2.0], [0.0, 3.0, 4.0]], dtype=np.float32)
    got, want = both(x, "tanh")
    assert got is None
    layout, vector = host._summarize(x, KINDS["tanh"], True, True, True, None, default_unit_axis)
    np.testing.assert_array_equal(vector, want.v)
    assert Summary(layout, vector).nonfinite == 1


def test_a_kind_the_kernel_does_not_know_is_left_to_numpy():
    odd = KINDS["tanh"].__class__("odd", saturated=lambda ops, y: y > 0.25)
    x = np.linspace(-1, 1, 12).reshape(3, 4)
    assert compiled.kernels().activation(x.reshape(3, 4, 1), odd, True, True, False, Layout(True, 4).size) is None
    layout, vector = host._summarize(x, odd, True, True, False, None, default_unit_axis)
    assert Summary(layout, vector).saturated == np.count_nonzero(x > 0.25)


def test_switched_off_gives_the_numpy_path(monkeypatch):
    x = np.maximum(np.random.default_rng(2).standard_normal((16, 8)), 0).astype(np.float32)
    args = (x, KINDS["relu"], True, True, True, None, default_unit_axis)
    monkeypatch.setattr(compiled, "_KERNELS", None)
    np.testing.assert_array_equal(host._summarize(*args)[1], host._summarize_numpy(*args)[1])


def test_the_environment_switch_turns_the_kernels_off():
    code = ("from nnhealth.stats import compiled, summary_of; import numpy as np; "
            "assert compiled.kernels() is None; print(summary_of(np.arange(6.0) - 2, 'relu', hist=True).positive)")
    env = dict(os.environ, NNHEALTH_KERNELS="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "3.0"


def test_read_only_and_header_only():
    x = np.linspace(-3, 3, 30)
    x.flags.writeable = False
    got, want = both(x, "hardtanh", hist=False, units=False, moments=False)
    assert got.layout == Layout() and got.saturated == want.saturated == np.count_nonzero(np.abs(x) >= 1)
    assert_same(got, want, x)
    got, want = both(np.float32(-0.5) * np.ones((), np.float32), "linear")  # 0-d: no units
    assert_same(got, want, np.array([-0.5], np.float32))


# -- the parameter and update kernels -------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 5, 4095, 4096, 4097, 70001])
def test_columns_and_difference_equal_float64_sums(jit, dtype, n):
    rng = np.random.default_rng(n)
    a, b = (rng.standard_normal(n) * 10).astype(dtype), (rng.standard_normal(n) * 10).astype(dtype)
    ((sumsq, total, abssum, lo, hi),) = jit.columns([a])
    f = a.astype(np.float64)
    eps = 1e-5 if dtype == np.float32 else 1e-12
    assert (lo, hi) == (f.min(), f.max())
    assert sumsq == pytest.approx((f * f).sum(), rel=eps)
    assert abssum == pytest.approx(np.abs(f).sum(), rel=eps)
    assert abs(total - f.sum()) <= eps * np.abs(f).sum()
    d = (a - b).astype(np.float64)  # the difference rounded to the data type, as the kernel makes it
    assert jit.difference([a], [b])[0] == pytest.approx((d * d).sum(), rel=eps)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_call_measures_a_list_and_copies_it(jit, dtype):
    """Rows of a list of arrays of different sizes and shapes are those of each alone; copies are
    filled as the arrays are read (None: not copied)."""
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal(shape).astype(dtype) for shape in [(7,), (300, 11), (4096,), (2, 3, 5)]]
    copies = [np.zeros_like(arrays[0]), None, np.zeros_like(arrays[2]), np.zeros_like(arrays[3])]
    rows = jit.columns(arrays, copies)
    assert rows.shape == (4, 5)
    for x, row in zip(arrays, rows):
        assert row.tolist() == jit.columns([x])[0].tolist()
    for x, c in zip(arrays, copies):
        assert c is None or np.array_equal(c, x)
    totals = jit.difference(arrays, [x[::-1].copy() for x in arrays])
    assert totals.tolist() == [jit.difference([x], [x[::-1].copy()])[0] for x in arrays]
    assert jit.columns([]).shape == (0, 5) and jit.difference([], []).shape == (0,)


def test_bad_lists_are_refused_with_a_message(jit):
    a32, a64 = np.ones(8, np.float32), np.ones(8, np.float64)
    with pytest.raises(ValueError, match="one type"):
        jit.columns([a32, a64])
    with pytest.raises(ValueError, match="one type"):
        jit.columns([np.ones(8, np.int32)])
    with pytest.raises(ValueError, match="another type"):
        jit.columns([a32], [a64[:4]])
    with pytest.raises(ValueError, match="bytes"):
        jit.columns([a32], [np.ones(9, np.float32)])
    with pytest.raises(ValueError):
        jit.difference([a32], [np.ones(9, np.float32)])
    with pytest.raises(ValueError, match="one type"):
        jit.difference([a32], [a64])
    with pytest.raises((ValueError, BufferError)):
        jit.columns([a32[::2]])  # not contiguous
    read_only = np.zeros(8, np.float32)
    read_only.flags.writeable = False
    with pytest.raises((ValueError, BufferError)):
        jit.columns([a32], [read_only])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_columns_and_difference_report_non_finite_data(jit, bad):
    a = np.ones(10000, np.float32)
    a[7777] = bad
    assert not np.isfinite(jit.columns([a])[0, :3]).all()
    assert not math.isfinite(jit.difference([a], [np.zeros_like(a)])[0])


def test_fused_rows_are_the_same_with_and_without_the_kernels(monkeypatch):
    torch = pytest.importorskip("torch")
    import nnhealth.hooks._torch_fused as fused

    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(300, 70, generator=gen), torch.randn(5, generator=gen), torch.randn(3, 3, dtype=torch.float64)]
    xs.append(torch.tensor([1.0, float("nan"), -2.0, float("inf")]))
    before = [x.clone() for x in xs]
    after = [x + 0.01 * torch.randn(x.shape, generator=gen, dtype=x.dtype) for x in xs]
    fast = (np.stack(fused.header_rows(xs)), np.stack(fused.difference_rows([b.clone() for b in before], after)))
    monkeypatch.setattr(compiled, "_KERNELS", None)
    slow = (np.stack(fused.header_rows(xs)), np.stack(fused.difference_rows([b.clone() for b in before], after)))
    for got, want in zip(fast, slow):
        np.testing.assert_allclose(got[:3], want[:3], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(got[3], want[3])  # non-finite: numpy computes it either way
    assert fast[0][3, HEADER.index("nonfinite")] == 2


@pytest.mark.parametrize("path", ["kernels", "numpy"])
def test_values_pinned_near_a_constant_keep_their_spread(path, monkeypatch):
    """A saturated sigmoid (0.999 +- 1e-4) and a BatchNorm scale (1 +- 1e-3), float32: their variance is
    far below float32's rounding of their sum of squares, so the sums are taken around the first value."""
    import torch

    from nnhealth.hooks import _torch_fused as fused

    if path == "numpy":
        monkeypatch.setattr(compiled, "kernels", lambda: None)
    g = torch.Generator().manual_seed(0)
    saturated = 0.999 + 1e-4 * torch.randn(256, 512, generator=g)
    s = Summary(*(lambda lv: (lv[0], lv[1].numpy()))(summarize(saturated, "sigmoid", units=True, hist=True)))
    assert s.std == pytest.approx(float(saturated.double().std(unbiased=False)), rel=1e-4)
    scale = 1.0 + 1e-3 * torch.randn(300_000, generator=g)
    (row,) = fused.header_rows([scale], fused.PARAMETER)
    p = Summary(Layout(), np.asarray(row))
    assert p.std == pytest.approx(float(scale.double().std(unbiased=False)), rel=1e-4)
    assert p.mean == pytest.approx(float(scale.double().mean()), rel=1e-9)


def _addresses(arrays):
    return (np.array([a.ctypes.data for a in arrays], np.int64), np.array([a.size for a in arrays], np.int64))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reading_by_address_equals_reading_buffers(jit, dtype):
    """columns_at and difference_at (an array library's tensors, read where they lie) give the rows,
    copies and sums of columns and difference."""
    rng = np.random.default_rng(5)
    arrays = [rng.standard_normal(shape).astype(dtype) for shape in [(7,), (300, 11), (4096,)]]
    others = [x[::-1].copy() for x in arrays]
    copies = [np.zeros_like(arrays[0]), None, np.zeros_like(arrays[2])]
    at, counts = _addresses(arrays)
    into = np.array([0 if c is None else c.ctypes.data for c in copies], np.int64)
    rows = jit.columns_at(at, counts, np.dtype(dtype).itemsize, into)
    np.testing.assert_array_equal(rows, jit.columns(arrays))
    assert np.array_equal(copies[0], arrays[0]) and np.array_equal(copies[2], arrays[2])
    totals = jit.difference_at(at, _addresses(others)[0], counts, np.dtype(dtype).itemsize)
    np.testing.assert_array_equal(totals, jit.difference(arrays, others))
    assert jit.columns_at(at[:0], counts[:0], 4).shape == (0, 5)


def test_bad_address_lists_are_refused_with_a_message(jit):
    at, counts = _addresses([np.ones(8, np.float32)])
    with pytest.raises(ValueError, match="one length"):
        jit._c.columns_at(at, np.zeros(2, np.int64), 4, np.empty(5), np.zeros(1, np.int64))
    with pytest.raises(ValueError, match="width"):
        jit.columns_at(at, counts, 2)
    with pytest.raises(ValueError, match="5 number"):
        jit._c.columns_at(at, counts, 4, np.empty(4), np.zeros(1, np.int64))
    with pytest.raises(ValueError, match="one length"):
        jit.difference_at(at, np.zeros(2, np.int64), counts, 4)
