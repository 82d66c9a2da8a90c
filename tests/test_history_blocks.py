"""The history's per-role blocks hold what the per-layer definitions say, whatever the step brings.

The layer rules read every layer at once from :class:`~nnhealth.blocks.RoleBlock`
arrays instead of merging each layer's summaries. These tests drive a history
through the awkward cases (layers appearing late, skipping steps, changing
their unit count, non-finite values, windows shorter than the rules' point
counts) and compare the blocks with the straightforward per-layer
computations: merged window summaries, the latest summary, the derived series.
"""
from __future__ import annotations

import numpy as np
import pytest

from nnhealth import History
from nnhealth.blocks import _recent
from nnhealth.derived import CHUNK_UNITS, chunks, derive_step, split
from nnhealth.rules.base import medians, row_medians
from nnhealth.rules.init_plateau import _any_below, _first_below, _running_median
from nnhealth.stats import summary_of
from nnhealth.stats.summary import H


def _awkward_steps(window: int = 5, steps: int = 40, seed: int = 0):
    """Activations, gradients, parameters and updates of a few layers, recorded the way Monitor.ingest does,
    with layers that start late, skip steps, change their unit count or hold NaN: yields the history after
    each step."""
    rng = np.random.default_rng(seed)
    h = History(window=window)
    for name in ("a0", "a1", "a2", "a3"):
        h.meta[name] = {"kind": "relu" if name != "a2" else "tanh"}
    h.meta["w1.bias"] = {"ndim": 1}
    for step in range(steps):
        summaries = {}
        for i, name in enumerate(("a0", "a1", "a2", "a3")):
            if (name == "a3" and step < 7) or (name == "a1" and step % 4 == 3):
                continue  # starts late; skips every fourth step
            units = 6 if not (name == "a0" and 12 <= step < 15) else 4  # a0 changes its unit count
            x = rng.standard_normal((8, units)) - (3.0 if name == "a1" else 0.0)
            x = np.tanh(3 * x) if name == "a2" else np.maximum(x, 0)
            if name == "a0" and step == 20:
                x[0, 0] = np.nan
            summaries[("activation", name)] = summary_of(x, h.meta[name]["kind"], hist=True, units=True)
        for name in ("w0", "w1", "w1.bias"):
            if name == "w1" and step % 5 == 2:
                continue
            w = rng.standard_normal((3, 5)) if name != "w1.bias" else rng.standard_normal(5)
            g = w * 10.0 ** rng.uniform(-6, 1)
            if name == "w0" and step == 25:
                g.flat[0] = np.inf
            summaries[("gradient", name)] = summary_of(g, "linear")
            summaries[("parameter", name)] = summary_of(w, "linear", units=w.ndim > 1, moments=w.ndim > 1)
            summaries[("update", name)] = summary_of(w * 1e-3, "linear")
            if name != "w1" or step % 3:  # w1's parameter before the update is sometimes missing
                summaries[("update_base", name)] = summary_of(w if step % 7 else np.zeros_like(w), "linear")
        h.record_summaries(step, summaries)
        h.record_many(step, {(None, "loss"): 1.0, **derive_step(summaries, h.meta)})
        yield h


def _awkward_history(window: int = 5) -> History:
    for h in _awkward_steps(window):
        pass
    return h


def _merged(h: History, role: str, name: str):
    members = [s for _, s in h.summaries(role, name)]
    merged = members[0]
    for s in members[1:]:
        merged = merged.merge(s)
    return merged


@pytest.mark.parametrize("window", [1, 3, 5])
def test_window_headers_and_unit_counts_equal_merged_summaries(window):
    mixed = 0
    for h in _awkward_steps(window):
        block = h.block("activation")
        head, units = block.window_header(), block.window_units()
        fired = block.count_units(0, 0.3)
        saturated = block.count_units(1, 0.2, above=True)
        _check_windows(block, window)
        for j, name in enumerate(h.names("activation")):
            want = _merged(h, "activation", name)
            assert block.window_size()[j] == h.window_size("activation", name) == len(h.summaries("activation", name))
            np.testing.assert_allclose(head[j], np.array(want.h), rtol=1e-12)
            for field in ("count", "samples", "nonfinite", "saturated", "min", "max"):
                assert head[j, H[field]] == getattr(want, field), (name, field)
            if want.unit_fired is None:  # the window mixes unit counts
                assert units[j] == 0, name
                mixed += 1
                continue
            assert units[j] == want.layout.units
            assert fired[j] == np.count_nonzero(want.unit_fraction("unit_fired") < 0.3)
            assert saturated[j] == np.count_nonzero(want.unit_fraction("unit_saturated") > 0.2)
    assert mixed >= (window > 1)


def _check_windows(block, window: int) -> None:
    """The window numbers that the blocks keep from step to step, or read from shortcuts, equal the ones
    computed anew from the rings."""
    size = np.minimum(block.seen[:block.n], window)
    np.testing.assert_array_equal(block.window_size(), size)
    extremes = [H["min"], H["max"]]
    np.testing.assert_array_equal(np.delete(block.window_sums(), extremes, axis=1),
                                  np.delete(block.window_header(), extremes, axis=1))
    if block.unit_ring is not None:
        np.testing.assert_array_equal(block.window_units(), block.unit_ring.consistent(block.n, size))


def test_latest_and_first_summaries_and_windows_keep_their_steps():
    h = _awkward_history()
    for role in ("activation", "gradient", "parameter", "update"):
        block = h.block(role)
        for j, name in enumerate(h.names(role)):
            window = h.summaries(role, name)
            latest = h.latest_summary(role, name)
            assert latest.layout == window[-1][1].layout and latest.v is window[-1][1].v
            assert block.latest[j].tolist() == latest.h
            assert [step for step, _ in window] == sorted(step for step, _ in window)
            assert h.first_summary(role, name)[0] <= window[0][0]
    params = h.block("parameter")
    for j, name in enumerate(h.names("parameter")):
        s, units, at = h.latest_summary("parameter", name), params.munits[j], params.moffset[j]
        assert units == (s.unit_sum.size if s.unit_sum is not None else 0)
        if units:
            np.testing.assert_array_equal(s.v[at:at + 2 * units], np.concatenate([s.unit_sum, s.unit_sumsq]))
    assert h.first_summary("activation", "a3")[0] == 7
    assert [step for step, _ in h.summaries("activation", "a1")] == [33, 34, 36, 37, 38]
    assert "update_base" not in h.order and h.latest_summary("update_base", "w0") is None
    assert h.names("gradient") == ["w0", "w1", "w1.bias"]


@pytest.mark.parametrize("window", [2, 5])
def test_recent_headers_and_ratios_equal_the_derived_series(window):
    for h in _awkward_steps(window, steps=25):
        _check_recent(h, window)


def _regular_steps(window: int, steps: int = 40, late: int = 23, wider: int = 31):
    """Every layer on every step, the blocks' usual step (their latest summaries share ring slots), until a
    layer joins at step ``late`` and another one's unit count changes at step ``wider`` (that layer then
    misses a few steps): the history after each step."""
    rng = np.random.default_rng(window)
    h = History(window=window)
    for step in range(steps):
        summaries = {}
        for name in ("a0", "a1", "a2") if step >= late else ("a0", "a1"):
            if name == "a1" and wider + 2 <= step < wider + 8:
                continue
            units = 6 if name != "a1" or step < wider else 9
            summaries[("activation", name)] = summary_of(np.maximum(rng.standard_normal((8, units)), 0), "relu",
                                                         hist=True, units=True)
        for name in ("w0", "w1", "w2") if step >= late else ("w0", "w1"):
            w = rng.standard_normal((3, 5))
            summaries[("gradient", name)] = summary_of(w * 1e-2, "linear")
            summaries[("update", name)] = summary_of(w * 1e-3, "linear")
            summaries[("update_base", name)] = summary_of(w, "linear")
        h.record_summaries(step, summaries)
        h.record_many(step, {(None, "loss"): 1.0, **derive_step(summaries, h.meta)})
        yield h


@pytest.mark.parametrize("window", [1, 2, 5])
def test_shortcuts_of_the_usual_step_equal_the_general_reads(window):
    """Reads that take a shortcut when every layer came on every step (slots shared by all layers, windows
    full, unit counts settled) give what the general reads give, as the window slides, when a layer joins
    late and when a unit count changes."""
    shortcuts = 0
    for h in _regular_steps(window):
        for role in ("activation", "gradient", "update"):
            block = h.block(role)
            _check_windows(block, window)
            seen = block.seen[:block.n]
            shortcuts += block._common is not None
            for points in range(window + 1):
                np.testing.assert_array_equal(block.recent(points),
                                              _recent(block.ring, seen, points, window, None))
                if np.shares_memory(block.recent(points), block.ring):  # the shortcut's view of the ring
                    with pytest.raises(ValueError):
                        block.recent(points)[...] = 0.0
                if role == "update":
                    rseen, cols = block.rseen[:block.n], np.arange(block.n)
                    np.testing.assert_array_equal(block.recent_ratios(points),
                                                  _recent(block.rring, rseen, points, window, None))
                    np.testing.assert_array_equal(block.with_ratios(cols, points), cols[rseen >= points])
        _check_recent(h, window)
    assert shortcuts >= 3 * 20


@pytest.mark.parametrize("window", [1, 3, 5])
def test_window_moments_equal_the_merged_window_summary(window):
    """The per-unit sums that the input rule adds on their own equal the merged window summary's, to the
    last bit; a window whose layouts differ (a step without a histogram, a feature count that changes)
    has none, and the merged summary is read instead."""
    rng = np.random.default_rng(window)
    h, added = History(window=window), 0
    for step in range(30):
        features = 6 if step < 20 else 4
        x = rng.standard_normal((16, features)) * np.arange(1, features + 1) + 3.0 * step
        if step == 9:
            x[2, 1] = np.nan
        summaries = {("input", "x"): summary_of(x, "linear", hist=step % 7 != 3, units=True, moments=True),
                     ("parameter", "w"): summary_of(x[:5].T, "linear", units=True, moments=True),
                     ("parameter", "w.bias"): summary_of(x[0], "linear")}
        h.record_summaries(step, summaries)
        for role, name in (("input", "x"), ("parameter", "w"), ("parameter", "w.bias")):
            got, want = h.window_moments(role, name), h.window_summary(role, name)
            layouts = {s.layout for _, s in h.summaries(role, name)}
            if len(layouts) > 1 or not want.layout.moments:
                assert got is None
                continue
            samples, count, sums, squares = got
            assert (samples, count) == (want.samples, want.count)
            np.testing.assert_array_equal(sums, want.unit_sum)
            np.testing.assert_array_equal(squares, want.unit_sumsq)
            added += 1
    assert added >= 30


def _check_recent(h: History, window: int) -> None:
    for role, stat, read in (("gradient", "gradient/norm", lambda r, have: np.sqrt(r[:, :, H["sumsq"]])),
                             ("update", "update/ratio", None)):
        block = h.block(role)
        for points in range(1, window + 1):
            recent = block.recent_ratios(points) if read is None else block.recent(points)
            have = np.minimum(block.rseen if read is None else block.seen, points)
            values = recent if read is None else read(recent, have)
            for j, name in enumerate(h.names(role)):
                series = h.last_values(name, stat, points)[::-1]  # newest first, as the blocks give them
                assert have[j] == len(series), (name, points)
                np.testing.assert_array_equal(values[j, :have[j]], series)
                assert np.isnan(values[j, have[j]:]).all()


def test_row_medians_equal_the_per_row_median():
    rng = np.random.default_rng(1)
    for width in range(1, 7):
        m = rng.standard_normal((50, width))
        m[rng.random(m.shape) < 0.2] = np.nan
        m[rng.random(m.shape) < 0.05] = np.inf
        rows = [[v for v in row if not np.isnan(v)] for row in m]
        np.testing.assert_array_equal(medians(rows), row_medians(m.copy()))
        full = rng.standard_normal((20, width))
        np.testing.assert_array_equal(row_medians(full.copy()), medians(full.tolist()))


def test_running_median_and_its_search_equal_np_median():
    rng = np.random.default_rng(2)
    for k in range(1, 8):
        for n in (k, k + 1, 70, 300, 1000):
            values = np.cumsum(rng.standard_normal(n))
            smooth = np.median(np.lib.stride_tricks.sliding_window_view(values, k), axis=1)
            np.testing.assert_array_equal(_running_median(values, k), smooth)
            for limit in (values.min() - 1, np.median(values), values.max() + 1):
                hits = np.flatnonzero(smooth < limit)
                want = (int(hits[0]), float(smooth[hits[0]])) if hits.size else None
                assert _first_below(values, k, limit) == want
                for start in (n // 3, *range(max(len(smooth) - 20, 0), len(smooth) + 1)):
                    later = np.flatnonzero(smooth[start:] < limit)
                    assert _first_below(values, k, limit, start) == (
                        (start + int(later[0]), float(smooth[start + later[0]])) if later.size else None)
                    few = values[start:start + k + 5]  # the few windows a step adds, searched in Python
                    if len(few) >= k:
                        assert _any_below(few.tolist(), k, limit) == (_first_below(few, k, limit) is not None)


def test_a_step_is_split_once_for_the_history_and_the_derived_numbers():
    x = np.maximum(np.random.default_rng(3).standard_normal((8, 4)), 0)
    summaries = {("activation", "a"): summary_of(x, "relu", units=True), ("gradient", "w"): summary_of(x, "linear")}
    h = History()
    h.record_summaries(0, summaries)
    assert split(summaries) is h._step  # derive_step finds the history's split
    again = dict(summaries)
    again[("gradient", "w")] = summary_of(2 * x, "linear")
    other = split(again)
    assert other is not h._step and other.plan is h._step.plan  # same keys: the plan is reused
    assert other.headers("gradient")[0, H["sum"]] == pytest.approx(2 * x.sum(), rel=1e-12)


def test_record_many_follows_changing_key_sets():
    h = History()
    for step in range(30):
        values = {(None, "loss"): float(step)}
        if step % 3 == 0:
            values.update({("a", "activation/mean"): step + 0.5, ("b", "activation/mean"): -step})
        if step % 5 == 0:
            values[(None, "val_loss")] = 2.0 * step
        h.record_many(step, values)
    assert h.values(None, "loss").tolist() == [float(s) for s in range(30)]
    assert h.values("a", "activation/mean").tolist() == [s + 0.5 for s in range(0, 30, 3)]
    assert h.values(None, "val_loss").tolist() == [2.0 * s for s in range(0, 30, 5)]
    assert h.series("b", "activation/mean").latest_step == 27


def test_per_unit_work_is_split_into_small_runs_of_whole_layers():
    sizes = [5000, 5000, 7000, 20000, 1, 1, 15999]
    runs = list(chunks(sizes))
    assert [sizes[r] for r in runs] == [[5000, 5000], [7000], [20000], [1, 1], [15999]]
    assert all(sum(sizes[r]) <= CHUNK_UNITS or r.stop - r.start == 1 for r in runs)
    assert list(chunks([])) == []
