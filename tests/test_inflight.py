"""Steps in flight: the losses of unsampled steps on an accelerator are fetched several at a time, read
only once their copy is done, and judged in step order.

A CPU tensor stands in for a GPU one: its ops are marked asynchronous, and each copy is a fake
transfer that says it is done only when the test says so (as a CUDA event would).
"""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

import nnhealth.inflight as inflight  # noqa: E402
from nnhealth import Monitor  # noqa: E402
from nnhealth.stats.backend import ops_for  # noqa: E402


class Device:
    """Fake asynchronous copies: each waits until ``done()``; ``sent`` counts copies and their sizes."""

    def __init__(self, monkeypatch):
        self.sent, self.finished = [], False
        real = inflight.start_fetch
        device = self

        class Copy:
            is_async = True

            def __init__(self, ops, vectors):
                self._inner = real(ops, vectors)

            def ready(self):
                return device.finished

            def result(self):
                return self._inner.result()

        def start(ops, vectors):
            if ops.name != "torch":  # host rows (numpy): already there, nothing is copied
                return real(ops, vectors)
            self.sent.append(len(vectors))
            self.finished = False
            return Copy(ops, vectors)

        monkeypatch.setattr(inflight, "start_fetch", start)
        monkeypatch.setattr(ops_for(torch.zeros(1)), "is_async", True)  # the CPU's ops play a GPU's

    def done(self):
        self.finished = True


def losses(mon):
    return mon.history.values(None, "loss").tolist()


def test_unsampled_losses_are_fetched_every_steps_at_a_time(monkeypatch):
    device = Device(monkeypatch)
    mon = Monitor(every=4, console=False, strict=True)
    for step in range(12):
        mon.step(step, loss=torch.tensor(2.0 - step / 100))
        device.done()  # the device has copied everything sent so far
    assert device.sent == [4, 4, 4]  # three copies of four losses, not twelve of one
    mon.close()
    assert losses(mon) == pytest.approx([2.0 - s / 100 for s in range(12)])


def test_a_copy_is_read_only_once_it_is_done(monkeypatch):
    device = Device(monkeypatch)
    mon = Monitor(every=2, console=False, strict=True)
    mon.step(0, loss=torch.tensor(1.0))
    mon.step(1, loss=torch.tensor(0.9))  # two held: sent now, not done yet
    assert device.sent == [2] and losses(mon) == []
    mon.step(2, loss=torch.tensor(0.8))  # still not done: nothing read, nothing waited for
    assert losses(mon) == []
    device.done()
    mon.step(3, loss=torch.tensor(0.7))  # done: steps 0 and 1 read; 2 and 3 sent
    assert losses(mon) == pytest.approx([1.0, 0.9]) and device.sent == [2, 2]
    mon.close()
    assert losses(mon) == pytest.approx([1.0, 0.9, 0.8, 0.7])


def test_a_nan_loss_is_found_within_every_steps_and_stops_the_run(monkeypatch):
    device = Device(monkeypatch)
    mon = Monitor(every=5, console=False, strict=True)
    found_at = None
    for step in range(20):
        loss = torch.tensor(float("nan") if step == 6 else 1.0)
        new = mon.step(step, loss=loss)
        device.done()
        if any(f.symptom == "loss-nan" for f in new) and found_at is None:
            found_at = step
    assert found_at is not None and 6 <= found_at <= 6 + 5
    assert mon.should_stop
    finding = next(f for f in mon.findings if f.symptom == "loss-nan")
    assert finding.step == 6  # judged under its own step, just later
    mon.close()


def test_host_numbers_behind_held_steps_keep_their_order(monkeypatch):
    device = Device(monkeypatch)
    mon = Monitor(every=10, console=False, strict=True)
    mon.step(0, loss=torch.tensor(1.0))
    mon.step(1, loss=0.5)  # a plain float behind a held step: held too, not judged first
    mon.step(2, loss=torch.tensor(0.25), val_loss=0.75)
    device.done()
    mon.close()
    assert losses(mon) == pytest.approx([1.0, 0.5, 0.25])
    assert mon.history.values(None, "val_loss").tolist() == [0.75]
    assert mon.history.series(None, "loss").arrays()[0].tolist() == [0, 1, 2]


def test_a_sampled_step_sends_the_held_losses_in_its_own_transfer(monkeypatch):
    device = Device(monkeypatch)
    mon = Monitor(every=3, console=False, strict=True)
    x = torch.randn(8, 4)
    for step in range(7):
        if mon.sampled:
            mon.observe_activation("a", torch.relu(x + step), kind="relu")
        mon.step(step, loss=torch.tensor(1.0 / (step + 1)))
        device.done()
    # steps 0, 3, 6 are sampled: each sends the losses held since with its own, in one copy (on a GPU
    # its summaries are device tensors too and travel in that same copy; here they are host rows)
    assert device.sent == [1, 3, 3]
    mon.close()
    assert losses(mon) == pytest.approx([1.0 / (s + 1) for s in range(7)])
    assert len(mon.history.summaries("activation", "a")) == 3


def test_held_steps_are_bounded_and_flushed_at_close(monkeypatch):
    Device(monkeypatch)
    mon = Monitor(every=1000, console=False, strict=True)
    for step in range(5):
        mon.step(step, loss=torch.tensor(float(step)))
    assert len(mon._flight.held) == 5 and losses(mon) == []
    mon.close()
    assert losses(mon) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert not mon._flight and math.isfinite(losses(mon)[-1])


def test_a_sparse_every_holds_at_most_a_few_losses(monkeypatch):
    """every=1000 must not leave a NaN loss on the device for 1000 steps: at most MAX_HELD are held."""
    device = Device(monkeypatch)
    mon = Monitor(every=1000, console=False, strict=True)
    for step in range(2 * inflight.MAX_HELD + 1):
        mon.step(step, loss=torch.tensor(float("nan") if step == 1 else 2.0))
        device.done()
    assert device.sent == [inflight.MAX_HELD, inflight.MAX_HELD]  # not one copy of 1000 losses
    assert mon.should_stop and mon.findings[-1].symptom == "loss-nan" and mon.findings[-1].step == 1
    mon.close()


def test_held_scalar_losses_take_the_short_path_to_the_same_verdicts(monkeypatch):
    """0-d losses (the usual) are held by a short path of their own; a (1,)-shaped loss takes the general
    one. The same losses give the same history, findings and copies either way."""
    device = Device(monkeypatch)
    seen = {}
    for shape in ((), (1,)):
        device.sent = []
        mon = Monitor(every=4, console=False)
        for step in range(30):
            value = float("nan") if step == 13 else (2.0 - step / 100 if step < 20 else 50.0)
            mon.step(step, loss=torch.tensor(value).reshape(shape))
            device.done()
        mon.close()
        seen[shape] = (mon.history.values(None, "loss").tolist(), [(f.symptom, f.step) for f in mon.findings],
                       list(device.sent))
    assert seen[()][0] == pytest.approx(seen[(1,)][0], nan_ok=True)
    assert seen[()][1:] == seen[(1,)][1:]
    assert ("loss-nan", 13) in seen[()][1] and len(seen[()][0]) == 30
