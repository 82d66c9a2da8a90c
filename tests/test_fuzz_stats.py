"""Hypothesis fuzzing of the statistics, and of the rules that read them, far outside the usual values.

tests/test_stats.py checks every statistic against numpy on 2-D float64
batches of moderate values (with NaN and Inf), merged and on torch. Here the
inputs are what a training loop can really hand over, and what a damaged or
hostile log file can make the replay ingest: every dtype (integers,
booleans, half, complex), 0-d to 4-d shapes with empty axes, magnitudes up
to the dtype's limits and subnormals, the fused ``_foreach`` path the
optimizer hooks use, and any packed vector the log reader accepts
(:mod:`nnhealth.logs.plausible`). The properties: nothing raises, counts
are exact, and the derived numbers the rules read are numbers (finite, or
NaN/Inf where the data says so).

Regressions found here are kept as explicit tests in
tests/test_reliability_untrusted.py (a state with a negative count, arrays
whose unit axis is empty).

The committed default runs a few dozen examples per test; for a long run:
``NNHEALTH_FUZZ_EXAMPLES=5000 python -m pytest tests/test_fuzz_stats.py``.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from nnhealth import Monitor
from nnhealth.logs.plausible import implausible
from nnhealth.stats import Layout, Summary, histogram, summary_of
from nnhealth.stats.kinds import KINDS
from nnhealth.stats.summary import HEADER

#: values near the float64 limit overflow in x * x: numpy says so, and the result is Inf, as it should be
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

EXAMPLES = int(os.environ.get("NNHEALTH_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DTYPES = st.sampled_from([np.float16, np.float32, np.float64, np.int8, np.int64, np.uint8, np.bool_,
                          np.complex64, np.complex128])


def any_array(max_dims: int = 4):
    return DTYPES.flatmap(lambda dt: arrays(dt, array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=5)))


def finite_reference(x: np.ndarray) -> np.ndarray:
    """What the statistics see: magnitudes for complex values, everything as float64."""
    x = np.abs(x) if x.dtype.kind == "c" else x
    return x.astype(np.float64)


def assert_sane(s: Summary, size: int):
    assert s.count + s.nonfinite == size
    assert 0 <= s.zeros <= s.count and 0 <= s.positive <= s.count and 0 <= s.saturated <= s.count
    if s.hist is not None:
        assert s.hist.sum() == s.count and (s.hist >= 0).all()
    if s.count:
        assert s.min <= s.max
    with np.errstate(all="ignore"):  # values near the float64 limit overflow in x * x: Inf, no error
        for value in (s.mean, s.var, s.std, s.norm, s.mean_abs, s.fraction("zeros"), s.fraction("positive")):
            assert isinstance(value, float) and not (math.isfinite(s.sumsq) and math.isinf(value) and value < 0)
        if s.hist is not None and s.count:
            q = s.quantiles([0.0, 0.01, 0.5, 0.99, 1.0])
            assert np.all(np.diff(q) >= 0)
            finite = q[np.isfinite(q)]
            assert np.all((finite >= s.min - 1e-9 * abs(s.min)) & (finite <= s.max + 1e-9 * abs(s.max)))
        for unit in (s.unit_fraction("unit_fired"), s.unit_fraction("unit_saturated")):
            if unit is not None:
                assert ((unit >= 0) & (unit <= 1)).all()
        if s.unit_sum is not None:
            s.unit_means(), s.unit_stds()


@FUZZ
@given(x=any_array(), kind=st.sampled_from(sorted(KINDS)), hist=st.booleans(), units=st.booleans(),
       moments=st.booleans())
def test_numpy_statistics_of_any_array(x, kind, hist, units, moments):
    s = summary_of(x, kind, hist=hist, units=units, moments=moments)
    assert_sane(s, x.size)
    ref = finite_reference(x)
    finite = np.isfinite(ref)
    assert s.count == finite.sum() and s.zeros == (ref[finite] == 0).sum() and s.positive == (ref[finite] > 0).sum()
    if finite.any():
        assert (s.min, s.max) == (ref[finite].min(), ref[finite].max())


TORCH_DTYPES = ("float16", "bfloat16", "float32", "float64", "int32", "bool", "complex64")


@FUZZ
@given(x=arrays(np.float64, array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
                elements=st.floats(allow_nan=True, allow_infinity=True, width=64)),
       dtype=st.sampled_from(TORCH_DTYPES), kind=st.sampled_from(sorted(KINDS)))
def test_torch_statistics_count_like_numpy_whatever_the_dtype(x, dtype, kind):
    """Extreme values overflow half and float32 into Inf: torch and numpy must agree on the cast array."""
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(x)
    t = t.abs().nan_to_num(0.0, 0.0, 0.0).to(getattr(torch, dtype)) if dtype in ("int32", "bool") else t.to(
        getattr(torch, dtype))
    opts = dict(hist=True, units=True)
    got = summary_of(t, kind, **opts)
    as_numpy = t.to(torch.complex128 if t.is_complex() else torch.float64).numpy()
    want = summary_of(as_numpy, kind, **opts)
    assert_sane(got, t.numel())
    for name in ("count", "nonfinite", "zeros", "positive", "samples"):
        assert getattr(got, name) == getattr(want, name), name
    if got.unit_fired is not None:
        np.testing.assert_array_equal(got.unit_fired, want.unit_fired)


@FUZZ
@given(xs=st.lists(arrays(np.float32, array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6),
                          elements=st.floats(width=32, allow_nan=True, allow_infinity=True)), min_size=1, max_size=5))
def test_fused_rows_of_many_tensors_agree_with_one_summary_each(xs):
    """The optimizer hooks summarise all parameters with fused ``_foreach`` reductions."""
    torch = pytest.importorskip("torch")
    from nnhealth.hooks._torch_fused import EVERY_FIELD, header_rows

    tensors = [torch.from_numpy(x) for x in xs]
    for t, row in zip(tensors, header_rows(tensors, EVERY_FIELD)):
        got = dict(zip(HEADER, row.tolist()))
        want = summary_of(t.numpy().astype(np.float64))
        assert got["nonfinite"] == want.nonfinite and got["samples"] == t.numel()
        assert got["count"] == want.count
        if want.nonfinite == 0 and want.sumsq < 1e38:  # float32 sums of squares overflow to Inf beyond
            assert got["sumsq"] == pytest.approx(want.sumsq, rel=1e-4, abs=1e-30)
            assert got["abssum"] == pytest.approx(want.abssum, rel=1e-4, abs=1e-30)


# -- what the rules make of any state the log reader accepts -----------------------------------

FLOAT64 = st.floats(allow_nan=True, allow_infinity=True, width=64)
SIZES = st.integers(0, 10**7).map(float)
LAYOUTS = st.builds(Layout, hist=st.booleans(), units=st.integers(0, 6), moments=st.booleans())
ROLES = ("activation", "gradient", "parameter", "update", "input")


@st.composite
def plausible_summaries(draw):
    """Any packed vector the reader lets through (see nnhealth.logs.plausible): whole counts >= 0, fields
    NaN when not measured, sums and extremes anything, a histogram counting exactly the finite values."""
    layout = draw(LAYOUTS)
    v = np.full(layout.size, np.nan)
    h = {name: i for i, name in enumerate(HEADER)}
    parts = layout.slices()
    if layout.hist:
        buckets = draw(st.dictionaries(st.integers(0, histogram.NUM_BUCKETS - 1), SIZES, max_size=6))
        v[parts["hist"]] = 0.0
        for b, n in buckets.items():
            v[parts["hist"].start + b] = n
        count = float(v[parts["hist"]].sum())
    else:
        count = draw(SIZES)
    samples = draw(SIZES)
    v[h["count"]], v[h["nonfinite"]], v[h["samples"]] = count, draw(SIZES), samples
    for name in ("zeros", "positive", "saturated"):
        v[h[name]] = draw(st.one_of(st.just(np.nan), st.integers(0, int(count)).map(float)))
    v[h["sum"]] = draw(FLOAT64)
    for name in ("sumsq", "abssum"):
        v[h[name]] = draw(st.one_of(st.just(np.nan), st.floats(min_value=0.0, allow_infinity=True)))
    lo, hi = sorted([draw(FLOAT64.filter(lambda x: not math.isnan(x))) for _ in range(2)])
    v[h["min"]], v[h["max"]] = (lo, hi) if count else draw(st.sampled_from([(math.inf, -math.inf), (lo, hi)]))
    for name in ("unit_fired", "unit_saturated"):
        if name in parts:
            v[parts[name]] = draw(arrays(np.float64, layout.units, elements=st.integers(0, int(samples)).map(float)))
    for name in ("unit_sum", "unit_sumsq"):
        if name in parts:
            v[parts[name]] = draw(arrays(np.float64, layout.units, elements=FLOAT64))
    assert implausible(layout, v) is None
    return Summary(layout, v)


@st.composite
def recorded_steps(draw):
    """A few steps of layer states as a log file can hold them once the reader accepted them."""
    names = draw(st.lists(st.sampled_from(["fc1", "fc2", "fc1.weight", "input", "out"]), min_size=1, max_size=4,
                          unique=True))
    kinds = {n: draw(st.sampled_from(sorted(KINDS))) for n in names}
    steps = []
    for step in range(draw(st.integers(1, 8))):
        summaries = {}
        for name in names:
            for role in draw(st.lists(st.sampled_from(ROLES + ("update_base",)), max_size=3, unique=True)):
                summaries[(role, name)] = draw(plausible_summaries())
        values = draw(st.dictionaries(st.sampled_from(["loss", "val_loss", "train_acc", "val_acc"]), FLOAT64))
        meta = {n: draw(st.fixed_dictionaries({}, optional={
            "kind": st.just(kinds[n]), "ndim": st.integers(0, 5), "fan_in": st.integers(1, 10**6),
            "init_std": FLOAT64, "init_gain": FLOAT64, "unit_axis": st.integers(-1, 1)})) for n in names}
        steps.append((step, values, summaries, meta))
    return steps


@FUZZ
@given(steps=recorded_steps(), num_classes=st.one_of(st.none(), st.integers(2, 1000)))
def test_no_rule_breaks_on_any_state_the_reader_accepts(steps, num_classes):
    """The replay's Monitor is not strict: a rule crashing on a recorded state would silently be switched off
    for the run. Here any crash fails."""
    mon = Monitor(every=1, window=2, history_capacity=4, console=False, strict=True, num_classes=num_classes)
    for step, values, summaries, meta in steps:
        mon.ingest(step, values, summaries, meta=meta)
    for f in mon.findings:
        assert f.line() and json.loads(f.to_json())["symptom"] == f.symptom


@FUZZ
@given(layout=LAYOUTS, data=st.data())
def test_the_reader_refuses_states_nnhealth_cannot_have_written(layout, data):
    vector = data.draw(arrays(np.float64, layout.size, elements=FLOAT64))
    problem = implausible(layout, vector)
    h = dict(zip(HEADER, vector))
    if any(not (math.isfinite(h[n]) and h[n] >= 0 and h[n] == math.floor(h[n])) for n in ("count", "nonfinite",
                                                                                             "samples")):
        assert problem is not None


@FUZZ
@given(hist=arrays(np.float64, histogram.NUM_BUCKETS, elements=FLOAT64), qs=st.lists(FLOAT64, min_size=1, max_size=5),
       vmin=FLOAT64, vmax=FLOAT64)
def test_quantiles_of_any_histogram_never_raise(hist, qs, vmin, vmax):
    out = histogram.quantiles(hist, qs, vmin, vmax)
    assert out.shape == (len(qs),)
