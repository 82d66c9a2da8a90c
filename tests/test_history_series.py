"""Series keep the first ``head`` points and the latest ``capacity``, and read them back as the plain lists would."""
from __future__ import annotations

import math

import numpy as np
import pytest

from nnhealth import History
from nnhealth.history import Series


def _reference(points: list, head: int, capacity: int) -> list:
    return points[:head] + points[head:][-capacity:]


@pytest.mark.parametrize("head,capacity", [(0, 1), (1, 1), (3, 4), (64, 1024), (5, 7)])
def test_series_reads_equal_the_kept_points(head, capacity):
    rng = np.random.default_rng(head * 100 + capacity)
    s, points = Series(head, capacity), []
    for step in range(3 * (head + capacity) + 20):
        value = float(rng.standard_normal()) if step % 11 else math.nan
        s.append(step, value)
        points.append((step, value))
        kept = _reference(points, head, capacity)
        assert len(s) == len(kept) and s.total == len(points)
        steps, values = s.arrays()
        assert steps.tolist() == [p[0] for p in kept]
        np.testing.assert_array_equal(values, [p[1] for p in kept])
        assert s.latest_step == step and (s.latest == value or math.isnan(value))
        for n in (0, 1, 2, head + 1, capacity + head + 3):
            want = kept[-n:] if n else []
            np.testing.assert_array_equal(s.last_values(n), [p[1] for p in want])
            last_steps, last_values = s.last(n)
            assert last_steps.tolist() == [p[0] for p in want]
            np.testing.assert_array_equal(last_values, [p[1] for p in want])
            first_steps, first_values = s.first(n)
            assert first_steps.tolist() == [p[0] for p in points[:min(n, head)]]
            np.testing.assert_array_equal(first_values, [p[1] for p in points[:min(n, head)]])
        assert len(s._v) <= head + capacity + max(capacity // 4, 1) + 1  # cut back as it goes


def test_record_and_record_many_fill_the_same_series():
    a, b = History(capacity=8, head=4), History(capacity=8, head=4)
    for step in range(40):
        values = {(None, "loss"): 1.0 / (step + 1), ("fc", "activation/std"): np.float32(step)}
        a.record_many(step, values)
        for (where, stat), value in values.items():
            b.record(step, where, stat, value)
    for key in a.keys():  # noqa: SIM118 (History.keys(), not a dict's)
        for x, y in zip(a.series(*key).arrays(), b.series(*key).arrays()):
            np.testing.assert_array_equal(x, y)
    assert a.to_dataframe().equals(b.to_dataframe())


def test_a_value_that_is_not_a_number_leaves_every_series_as_it_was():
    h = History()
    good = {(None, "loss"): 1.0, ("fc", "activation/std"): 2.0}
    h.record_many(0, good)
    with pytest.raises(TypeError):
        h.record_many(1, {(None, "loss"): 1.5, ("fc", "activation/std"): "two"})
    with pytest.raises(TypeError):
        h.record_many(1.5, good)
    h.record_many(2, good)
    for key, value in good.items():
        steps, values = h.series(*key).arrays()
        assert steps.tolist() == [0, 2] and values.tolist() == [value] * 2


@pytest.mark.parametrize("head,capacity", [(0, 1), (3, 4), (5, 7), (16, 32)])
def test_while_nothing_more_is_hidden_the_kept_points_only_grow_at_their_end(head, capacity):
    s, before = Series(head, capacity), None
    for step in range(4 * (head + capacity) + 20):
        s.append(step, float(step % 13) if step % 9 else math.nan)
        hidden, values = s.hidden, s.arrays()[1]
        assert hidden == max(step + 1 - head - capacity, 0)  # past the head, all but the latest capacity
        if before is not None and hidden == before[0]:
            np.testing.assert_array_equal(values[:len(before[1])], before[1])
            assert len(values) == len(before[1]) + 1
        before = hidden, values


def test_what_is_derived_from_the_first_points_is_kept_once_they_can_no_longer_change():
    calls = []

    def total(values):
        calls.append(len(values))
        return float(np.nansum(values))

    s = Series(head=6, capacity=4)
    for step in range(30):
        s.append(step, math.nan if step == 2 else float(step))
        for n in (1, 3, 5, 6, 8):
            assert s.of_first(n, total) == float(np.nansum(s.first(n)[1]))
    # computed on every step only while the points asked for were still coming (n=8: until the head was full)
    assert len(calls) == 1 + 3 + 5 + 6 + 6
    calls.clear()
    assert [s.of_first(n, total) for n in (1, 3, 5, 6, 8)] == [0.0, 1.0, 8.0, 13.0, 13.0] and not calls
