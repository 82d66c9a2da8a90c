"""Hugging Face Transformers: HealthCallback in Trainer(callbacks=[...]), catching the faults in
real Trainer runs (a small PreTrainedModel and a tiny BERT built from its config, no downloads)."""
from __future__ import annotations

import logging
import math

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers", reason="Transformers is not installed "
                                   "(pip install 'nnhealth[transformers]')")
pytest.importorskip("accelerate", reason="Trainer needs accelerate (pip install 'nnhealth[transformers]')")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from torch import nn  # noqa: E402
from transformers import (BertConfig, BertForSequenceClassification, PretrainedConfig, PreTrainedModel,  # noqa: E402
                          Trainer, TrainingArguments)
from transformers.modeling_outputs import SequenceClassifierOutput  # noqa: E402

from nnhealth import Monitor  # noqa: E402
from nnhealth.hooks.transformers import HealthCallback  # noqa: E402

from conftest import fired, warnings_of  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class MLPConfig(PretrainedConfig):
    model_type = "nnhealth-test-mlp"

    def __init__(self, d_in=20, hidden=64, classes=3, bias=0.0, **kwargs):
        super().__init__(**kwargs)
        self.d_in, self.hidden, self.classes, self.bias = d_in, hidden, classes, bias


class MLPClassifier(PreTrainedModel):
    config_class = MLPConfig

    def __init__(self, config):
        super().__init__(config)
        self.fc1, self.act1 = nn.Linear(config.d_in, config.hidden), nn.ReLU()
        self.fc2, self.act2 = nn.Linear(config.hidden, config.hidden), nn.ReLU()
        self.out = nn.Linear(config.hidden, config.classes)
        with torch.no_grad():
            self.fc1.bias.fill_(config.bias)
            self.fc2.bias.fill_(config.bias)

    def forward(self, x, labels=None):
        logits = self.out(self.act2(self.fc2(self.act1(self.fc1(x)))))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


class Rows(torch.utils.data.Dataset):
    def __init__(self, columns: dict):
        self.columns = columns

    def __len__(self):
        return len(next(iter(self.columns.values())))

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.columns.items()}


def features(n=1024, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 20, generator=g)
    return x, (x @ torch.randn(20, 3, generator=g)).argmax(1)


def accuracy(pred):
    return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}


def train(model, callback, tmp_path, x=None, y=None, **options):
    x, y = (x, y) if x is not None else features()
    args = dict(output_dir=str(tmp_path), per_device_train_batch_size=32, per_device_eval_batch_size=256,
                num_train_epochs=3, learning_rate=1e-3, lr_scheduler_type="constant", logging_steps=10,
                eval_strategy="epoch", save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
                seed=0)
    args.update(options)
    trainer = Trainer(model=model, args=TrainingArguments(**args),
                      train_dataset=Rows({"x": x[:800], "labels": y[:800]}),
                      eval_dataset=Rows({"x": x[800:], "labels": y[800:]}), compute_metrics=accuracy,
                      callbacks=[callback])
    trainer.train()
    return trainer


def test_healthy_run_has_no_warnings(tmp_path):
    torch.manual_seed(0)
    mon = Monitor(every=5, num_classes=3, console=False)
    trainer = train(MLPClassifier(MLPConfig()), HealthCallback(mon), tmp_path)
    mon.close()
    assert trainer.state.global_step == 75 and not mon.should_stop
    assert warnings_of(mon) == []
    h = mon.history
    assert len(h.values(None, "loss")) == 75  # every optimizer step, not every logging_steps
    assert h.names("activation") == ["act1", "act2"]
    assert {"fc1.weight", "out.bias"} <= set(h.names("gradient"))
    ratio = h.values("fc2.weight", "update/ratio")
    assert len(ratio) == 15 and (ratio > 1e-4).all() and (ratio < 0.1).all()
    assert len(h.values(None, "val_loss")) == 3 and h.values(None, "val_acc")[-1] > 0.7
    assert len(h.values(None, "grad_norm")) == 7  # other logged numbers are kept as series


def test_learning_rate_far_too_high_stops_training(tmp_path):
    torch.manual_seed(0)
    mon = Monitor(every=5, console=False)
    trainer = train(MLPClassifier(MLPConfig()), HealthCallback(mon), tmp_path, optim="sgd", learning_rate=10.0,
                    max_grad_norm=0.0)
    mon.close()
    critical = [f for f in mon.findings if f.severity == "critical"]
    assert critical and critical[0].symptom in ("loss-exploding", "loss-nan")
    assert trainer.state.global_step < 10


def test_nan_loss_the_trainer_filters_out_is_still_caught(tmp_path):
    """Trainer replaces a NaN step loss by the running average in what it logs
    (logging_nan_inf_filter); nnhealth reads the model's own loss and stops."""
    torch.manual_seed(0)
    x, y = features()
    x[40:72] = float("nan")  # one whole batch of corrupt rows (no shuffling below)
    mon = Monitor(every=5, console=False)
    logged = []
    callback = HealthCallback(mon)
    callback.on_log = lambda args, state, control, logs=None, _log=callback.on_log, **kw: (
        logged.append(dict(logs or {})), _log(args, state, control, logs=logs, **kw))[1]
    trainer = train(MLPClassifier(MLPConfig()), callback, tmp_path, x=x, y=y, logging_steps=1,
                    train_sampling_strategy="sequential")
    mon.close()
    nan = fired(mon, "loss-nan")
    assert nan and nan[0].step == 1 and mon.should_stop and trainer.state.global_step == 2
    assert all(math.isfinite(float(entry["loss"])) for entry in logged if "loss" in entry)  # what Trainer logged


def test_dead_relu_initialisation(tmp_path):
    torch.manual_seed(0)
    mon = Monitor(every=5, console=False)
    train(MLPClassifier(MLPConfig(bias=-3.0)), HealthCallback(mon), tmp_path, num_train_epochs=1)
    mon.close()
    dead = fired(mon, "dead-relu")
    assert {f.where for f in dead} == {"act1", "act2"} and dead[0].evidence["dead_fraction"] > 0.9


def tokens(n=512, length=8, vocab=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (n, length), generator=g)
    return ids, (ids == 5).any(1).long()


def test_tiny_bert_dead_relu_in_the_feed_forward_block(tmp_path):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, hidden_act="relu", max_position_embeddings=16, num_labels=2)
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        model.bert.encoder.layer[0].intermediate.dense.bias.fill_(-10.0)
    ids, labels = tokens()
    mon = Monitor(every=2, console=False)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=32, num_train_epochs=1,
                             learning_rate=1e-3, report_to="none", use_cpu=True, disable_tqdm=True, save_strategy="no")
    Trainer(model=model, args=args, train_dataset=Rows({"input_ids": ids, "labels": labels}),
            callbacks=[HealthCallback(mon)]).train()
    mon.close()
    where = "bert.encoder.layer.0.intermediate.intermediate_act_fn"
    assert where in mon.history.names("activation")
    assert [f.where for f in fired(mon, "dead-relu")] == [where]
    assert mon.history.names("input") == []  # token ids, not features (and not num_items_in_batch)


def test_writes_next_to_the_trainers_tensorboard_run(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    torch.manual_seed(0)
    with caplog.at_level(logging.INFO, logger="nnhealth"):
        train(MLPClassifier(MLPConfig()), HealthCallback(every=5, console=False), tmp_path, num_train_epochs=1,
              report_to=["tensorboard"])
    runs = sorted(p for p in (tmp_path / "runs").iterdir())
    ours = [p for p in runs if p.name.endswith("_nnhealth")]
    assert len(runs) == 2 and len(ours) == 1  # the Trainer's run and nnhealth's, side by side
    assert (ours[0] / "findings.jsonl").exists()
    events = EventAccumulator(str(ours[0]))
    events.Reload()
    assert {"loss/train", "loss/val", "accuracy/val", "activation_std/act1"} <= set(events.Tags()["scalars"])
