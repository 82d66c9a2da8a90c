"""Every statistic against a plain numpy reference: one array, merged pieces, and torch vs numpy."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nnhealth.stats import Layout, Summary, get_kind, histogram, summary_of
from nnhealth.stats.summary import HEADER

FLOATS = st.one_of(st.floats(min_value=-1e6, max_value=1e6), st.sampled_from([0.0, np.nan, np.inf, -np.inf, 1e-20]))
KINDS = st.sampled_from(["relu", "tanh", "sigmoid", "linear", "hardtanh", "relu6"])


def batches(units=5):
    return arrays(np.float64, st.tuples(st.integers(0, 12), st.just(units)), elements=FLOATS)


def reference(x: np.ndarray, kind: str) -> dict:
    """The statistics written the obvious way."""
    finite = np.isfinite(x)
    f = x[finite]
    k = get_kind(kind)
    sat = k.saturated(np, np.where(finite, x, 0.0)) & finite if k.saturated else np.zeros_like(finite)
    return {
        "count": f.size, "sum": f.sum(), "sumsq": (f * f).sum(), "abssum": np.abs(f).sum(),
        "min": f.min() if f.size else math.inf, "max": f.max() if f.size else -math.inf,
        "nonfinite": (~finite).sum(), "zeros": (f == 0).sum(), "positive": (f > 0).sum(),
        "saturated": sat.sum(), "unit_fired": ((x > 0) & finite).sum(axis=0),
        "unit_saturated": sat.sum(axis=0),
    }


def assert_matches(s: Summary, ref: dict):
    for name in HEADER[:-1]:
        assert getattr(s, name) == pytest.approx(ref[name], rel=1e-9, abs=1e-6), name
    np.testing.assert_array_equal(s.unit_fired, ref["unit_fired"])
    np.testing.assert_array_equal(s.unit_saturated, ref["unit_saturated"])
    assert s.hist.sum() == ref["count"]


@settings(max_examples=150, deadline=None)
@given(a=batches(), b=batches(), kind=KINDS)
def test_merge_equals_summary_of_concatenation(a, b, kind):
    opts = dict(hist=True, units=True, moments=True)
    merged = summary_of(a, kind, **opts).merge(summary_of(b, kind, **opts))
    whole = summary_of(np.concatenate([a, b]), kind, **opts)
    assert_matches(whole, reference(np.concatenate([a, b]), kind))
    np.testing.assert_allclose(merged.v, whole.v, rtol=1e-9, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(x=batches(units=7), kind=KINDS)
def test_torch_matches_numpy(x, kind):
    torch = pytest.importorskip("torch")
    opts = dict(hist=True, units=True, moments=True)
    want = summary_of(x, kind, **opts)
    got = summary_of(torch.tensor(x, dtype=torch.float64), kind, **opts)
    # torch summarises in float32: counts exact, moments to float32 precision
    assert got.layout == want.layout
    for name in ("count", "nonfinite", "zeros", "positive", "samples"):
        assert getattr(got, name) == getattr(want, name)
    np.testing.assert_array_equal(got.unit_fired, want.unit_fired)
    assert abs(got.hist.sum() - want.hist.sum()) == 0
    np.testing.assert_allclose(got.sumsq, want.sumsq, rtol=1e-5, atol=1e-3)


def test_derived_moments_and_per_unit_counts():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(1000, 4))
    s = summary_of(x, "relu", units=True, moments=True)
    assert s.mean == pytest.approx(x.mean()) and s.std == pytest.approx(x.std())
    assert s.norm == pytest.approx(np.linalg.norm(x))
    np.testing.assert_allclose(s.unit_means(), x.mean(axis=0))
    np.testing.assert_allclose(s.unit_stds(), x.std(axis=0))
    np.testing.assert_allclose(s.unit_fraction("unit_fired"), (x > 0).mean(axis=0))


def test_conv_units_are_channels_and_sequences_use_the_last_axis():
    x = np.zeros((2, 3, 4, 4))
    x[:, 1] = 1.0
    s = summary_of(x, "relu", units=True)
    assert s.layout.units == 3 and list(s.unit_fired) == [0, 32, 0] and s.samples == 32
    seq = summary_of(np.ones((2, 5, 6)), "relu", units=True)
    assert seq.layout.units == 6 and seq.samples == 10


@pytest.mark.parametrize("dist", ["normal", "lognormal", "relu"])
def test_quantiles_from_the_fixed_histogram_within_a_few_percent(dist):
    rng = np.random.default_rng(1)
    x = {"normal": rng.normal(0, 1, 20000), "lognormal": rng.lognormal(0, 2, 20000),
         "relu": np.maximum(rng.normal(0, 1, 20000), 0)}[dist]
    s = summary_of(x, hist=True)
    qs = [0.05, 0.25, 0.5, 0.75, 0.95]
    got, want = s.quantiles(qs), np.quantile(x, qs)
    for g, w in zip(got, want):
        assert g == pytest.approx(w, rel=0.05, abs=1e-3)


def test_histogram_edges_are_fixed_and_ordered():
    assert histogram.NUM_BUCKETS == 2 * histogram.K + 1
    assert np.all(np.diff(histogram.LEFT) >= 0) and np.all(histogram.RIGHT >= histogram.LEFT)
    s = summary_of(np.array([-2.0, 0.0, 0.0, 1e-30, 3.0, 1e30]), hist=True)
    nonzero = np.flatnonzero(s.hist)
    assert s.hist[histogram.ZERO] == 2
    assert nonzero[0] < histogram.ZERO < nonzero[-1]
    assert s.hist[-1] == 1 and s.hist[histogram.ZERO + 1] == 1  # clamped into the end buckets


def test_saturation_is_where_the_derivative_is_below_five_percent():
    y = np.tanh(np.array([[0.0, 1.0, 2.0, 2.2, 5.0]]))
    s = summary_of(y, "tanh", units=True)
    assert s.saturated == 2  # tanh'(2.2) = 0.047 < 0.05; tanh'(2.0) = 0.071
    sig = 1 / (1 + np.exp(-np.array([[0.0, 4.0, 4.5, -4.5]])))
    assert summary_of(sig, "sigmoid").saturated == 2  # sigmoid'(4.5)/0.25 = 4.4%


def test_empty_and_zero_dimensional_arrays():
    e = summary_of(np.zeros((0, 3)), "relu", hist=True, units=True)
    assert e.count == 0 and math.isnan(e.mean) and e.min == math.inf
    z = summary_of(np.float64(2.5), hist=True, units=True)
    assert z.count == 1 and z.layout.units == 0 and z.max == 2.5


def test_layouts_that_differ_merge_on_their_common_part():
    a = summary_of(np.ones((4, 3)), "relu", hist=True, units=True)
    b = summary_of(np.ones((4, 5)), "relu", hist=True, units=True)
    m = a.merge(b)
    assert m.layout == Layout(hist=True, units=0) and m.count == 32


def test_unknown_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown activation kind 'reluu'"):
        get_kind("reluu")
    assert get_kind("Leaky-ReLU").name == "leaky_relu" and get_kind("swish").name == "silu"
