"""PyTorch Lightning: HealthCallback in Trainer(callbacks=[...]), catching the faults in real fits,
writing next to the run's own TensorBoard curves."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch", reason="Lightning is not installed (pip install 'nnhealth[lightning]')")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from torch import nn  # noqa: E402

from nnhealth import Monitor  # noqa: E402
from nnhealth.hooks.lightning import HealthCallback  # noqa: E402

from conftest import fired, warnings_of  # noqa: E402

#: Lightning's own chatter about tiny runs (few batches per logging interval, no workers)
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning:lightning"),
              pytest.mark.filterwarnings("ignore:.*LeafSpec"),
              pytest.mark.usefixtures("one_torch_thread")]


class Classifier(pl.LightningModule):
    """A small MLP whose training_step calls its submodules directly (as most Lightning code does)."""

    def __init__(self, lr=0.1, bias=0.0, call_self=False):
        super().__init__()
        self.lr, self.call_self = lr, call_self
        self.net = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3))
        with torch.no_grad():
            self.net[0].bias.fill_(bias)
            self.net[2].bias.fill_(bias)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x) if self.call_self else self.net(x)
        self.log("train_acc", (logits.argmax(1) == y).float().mean())
        return nn.functional.cross_entropy(logits, y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def loaders(n=1024, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 20, generator=g)
    y = (x @ torch.randn(20, 3, generator=g)).argmax(1)
    data = torch.utils.data.TensorDataset(x, y)
    return (torch.utils.data.DataLoader(data, batch_size=32, shuffle=True, generator=g),
            torch.utils.data.DataLoader(data, batch_size=256))


def fit(module, callback, tmp_path, epochs=3, **trainer_options):
    torch.manual_seed(0)
    trainer = pl.Trainer(max_epochs=epochs, callbacks=[callback], default_root_dir=tmp_path, accelerator="cpu",
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         log_every_n_steps=5, **trainer_options)
    trainer.fit(module, *loaders())
    return trainer


def test_healthy_fit_has_no_warnings_and_writes_into_the_tensorboard_folder(tmp_path, caplog):
    torch.manual_seed(0)
    callback = HealthCallback(every=5, num_classes=3, console=False)
    seen = {}
    callback.on_fit_end = lambda trainer, module, close=callback.on_fit_end: (seen.update(mon=callback.monitor),
                                                                              close(trainer, module))
    with caplog.at_level(logging.INFO, logger="nnhealth"):
        trainer = fit(Classifier(lr=0.1), callback, tmp_path)
    mon = seen["mon"]
    assert trainer.global_step == 96 and not trainer.should_stop
    assert warnings_of(mon) == []
    assert "no forward pass" not in caplog.text and "no gradient reached" not in caplog.text
    h = mon.history
    assert h.names("activation") == ["net.1", "net.3"]
    assert h.names("input") == ["input"] and h.latest_summary("input", "input").layout.units == 20
    assert set(h.names("gradient")) == {f"net.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")}
    ratio = h.values("net.2.weight", "update/ratio")
    assert len(ratio) >= 15 and (ratio > 1e-4).all() and (ratio < 0.1).all()
    assert len(h.values(None, "val_acc")) == 3 and h.values(None, "val_acc")[-1] > 0.7
    assert len(h.values(None, "loss")) == 96  # one per optimizer step
    # the trainer's own TensorBoard folder holds both runs' files, read back by TensorBoard's reader
    logdir = trainer.logger.log_dir
    assert str(mon.logdir) == logdir
    events = EventAccumulator(logdir, size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/train", "loss/val", "accuracy/val", "activation_std/net.1"} <= tags  # nnhealth's
    assert {"val_loss", "val_acc", "train_acc"} <= tags  # Lightning's own
    assert [e.step for e in events.Scalars("loss/train")][:3] == [0, 1, 2]


def test_learning_rate_far_too_high_stops_the_trainer(tmp_path):
    trainer = fit(Classifier(lr=20.0), HealthCallback(every=5, console=False), tmp_path)
    assert trainer.should_stop and trainer.global_step < 15
    findings = [json.loads(line) for line in (Path(trainer.logger.log_dir) / "findings.jsonl").read_text().splitlines()]
    assert findings[0]["severity"] == "critical" and findings[0]["symptom"] in ("loss-exploding", "loss-nan")


def test_dead_relu_initialisation(tmp_path):
    mon = Monitor(every=5, console=False)
    fit(Classifier(lr=0.1, bias=-3.0), HealthCallback(mon), tmp_path, epochs=1)
    mon.close()
    dead = fired(mon, "dead-relu")
    assert {f.where for f in dead} == {"net.1", "net.3"} and dead[0].evidence["dead_fraction"] > 0.9


def test_forward_called_inside_training_step_and_gradient_accumulation(tmp_path, caplog):
    mon = Monitor(every=2, console=False)
    with caplog.at_level(logging.INFO, logger="nnhealth"):
        trainer = fit(Classifier(lr=0.05, call_self=True), HealthCallback(mon), tmp_path, epochs=1,
                      accumulate_grad_batches=4, logger=False)
    mon.close()
    assert trainer.global_step == 8
    loss = mon.history.values(None, "loss")
    assert len(loss) == 8  # optimizer steps, not batches: each the mean of four batch losses
    assert mon.history.names("activation") == ["net.1", "net.3"]
    assert "no forward pass" not in caplog.text
    assert mon.logdir is None  # no logger: nothing to write next to


def test_user_monitor_stays_open_and_a_second_fit_is_watched_anew(tmp_path):
    mon = Monitor(every=4, console=False)
    callback = HealthCallback(mon)
    module = Classifier(lr=0.05)
    fit(module, callback, tmp_path, epochs=1, logger=False)
    assert not mon._closed and mon._watchers == []  # unhooked when the fit ended
    fit(module, callback, tmp_path, epochs=1, logger=False)  # new optimizer, watched anew
    steps = mon.history.series(None, "loss").first()[0]
    assert list(steps) == list(range(64))  # the second fit continues the count
    assert len(mon.history.values("net.0.weight", "update/ratio")) == 16
    mon.close()


def test_a_compiled_lightning_module_runs_its_compiled_graph_between_sampled_steps(tmp_path):
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    module = Classifier()
    module.net = torch.compile(module.net, backend="eager")  # the network compiled, its training_step not
    mon = Monitor(every=4, console=False)
    fit(module, HealthCallback(mon), tmp_path, epochs=1, logger=False)
    mon.close()
    h = mon.history
    assert h.names("activation") == ["net._orig_mod.1", "net._orig_mod.3"]
    steps = [s for s, _ in h.summaries("activation", "net._orig_mod.1")]
    assert len(steps) > 1 and steps == list(range(28 - 4 * (len(steps) - 1), 29, 4))  # the latest, none missed
    assert sum(counters["graph_break"].values()) == 0
    assert torch._dynamo.eval_frame._stance.stance == "default"
