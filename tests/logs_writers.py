"""Real trainings and real log writers for the tests of ``nnhealth check`` and ``nnhealth.load``.

The curves come from small PyTorch trainings whose fault is real (a learning
rate raised 60x mid-run, 60 training samples for a wide net), and are
written the way other tools write them: ``torch.utils.tensorboard`` with
the tag names of PyTorch's docs, Lightning and Hugging Face, and plain
TensorBoard protobufs shaped like Keras' TensorBoard callback (``train/`` and
``validation/`` folders, ``epoch_*`` tags, scalars as float tensors).
"""
from __future__ import annotations

import functools
import json
import struct
import time
from pathlib import Path

import numpy as np
import torch
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from nnhealth.sinks import Sink

# -- real trainings -------------------------------------------------------------

KINDS = ("healthy", "explode", "overfit")


def _data(n_train: int, n_val: int, dim: int = 20, classes: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes * 3, dim, generator=g)

    def sample(n):
        idx = torch.randint(0, classes * 3, (n,), generator=g)
        return centres[idx] + 0.8 * torch.randn(n, dim, generator=g), idx % classes

    return sample(n_train), sample(n_val)


@functools.lru_cache(maxsize=None)
def train(kind: str, steps: int = 300, val_every: int = 20) -> tuple[dict, ...]:
    """One row per step: loss and accuracy of the batch; val_loss and val_acc every ``val_every`` steps.

    healthy: SGD 0.05 + momentum on 4000 samples. explode: the same, with the learning rate raised to 3.0 at
    step 100: the loss spikes far above 3x its start, ReLUs die, and it settles near chance (ln 10).
    overfit: 60 training samples, a 512-wide net: training accuracy 1.0, validation stuck near 0.6.
    """
    assert kind in KINDS, kind
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        n_train = 60 if kind == "overfit" else 4000
        (Xt, yt), (Xv, yv) = _data(n_train, 1000)
        width = 512 if kind == "overfit" else 64
        model = nn.Sequential(nn.Linear(20, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                              nn.Linear(width, 10))
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        loss_fn = nn.CrossEntropyLoss()
        g = torch.Generator().manual_seed(1)
        rows = []
        for step in range(steps):
            if kind == "explode" and step == 100:
                for group in opt.param_groups:
                    group["lr"] = 3.0
            idx = torch.randint(0, n_train, (min(64, n_train),), generator=g)
            out = model(Xt[idx])
            loss = loss_fn(out, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            row = {"step": step, "loss": loss.item(), "acc": (out.argmax(1) == yt[idx]).float().mean().item()}
            if step % val_every == val_every - 1:
                with torch.no_grad():
                    o = model(Xv)
                row["val_loss"] = loss_fn(o, yv).item()
                row["val_acc"] = (o.argmax(1) == yv).float().mean().item()
            rows.append(row)
        return tuple(rows)
    finally:
        torch.set_num_threads(threads)


def per_epoch(rows, steps_per_epoch: int = 10) -> list[dict]:
    """Keras' view of a training: per epoch the mean batch loss/accuracy and the validation at its end."""
    out = []
    for start in range(0, len(rows), steps_per_epoch):
        chunk = rows[start:start + steps_per_epoch]
        out.append({"loss": float(np.mean([r["loss"] for r in chunk])),
                    "accuracy": float(np.mean([r["acc"] for r in chunk])),
                    "val_loss": chunk[-1]["val_loss"], "val_accuracy": chunk[-1]["val_acc"]})
    return out


# -- writers ----------------------------------------------------------------------

PYTORCH = {"loss": "Loss/train", "acc": "Accuracy/train", "val_loss": "Loss/val", "val_acc": "Accuracy/val"}
LIGHTNING = {"loss": "train_loss", "acc": "train_acc", "val_loss": "val_loss", "val_acc": "val_acc"}
HUGGING_FACE = {"loss": "train/loss", "val_loss": "eval/loss", "val_acc": "eval/accuracy"}


def write_torch(logdir, rows, names=PYTORCH, epoch_tag: str | None = None, steps_per_epoch: int = 50) -> Path:
    """With torch.utils.tensorboard.SummaryWriter, as a PyTorch / Lightning / HF training loop does."""
    with SummaryWriter(str(logdir)) as w:
        for r in rows:
            for key, tag in names.items():
                if key in r:
                    w.add_scalar(tag, r[key], r["step"])
            if epoch_tag:
                w.add_scalar(epoch_tag, r["step"] // steps_per_epoch, r["step"])
    return Path(logdir)


def scalar_tensor_value(tag: str, value: float, with_metadata: bool) -> summary_pb2.Summary.Value:
    """A scalar as TF2's tf.summary.scalar writes it: a DT_FLOAT scalar tensor, plugin "scalars"."""
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=tensor_shape_pb2.TensorShapeProto(),
                                    tensor_content=struct.pack("<f", value))
    v = summary_pb2.Summary.Value(tag=tag, tensor=tensor)
    if with_metadata:
        v.metadata.plugin_data.plugin_name = "scalars"
    return v


def write_keras(logdir, epochs: list[dict], start: float = 1.7e9) -> Path:
    """Files shaped like Keras' TensorBoard callback: train/ and validation/, epoch_* tensor summaries.

    Each writer puts a tag's metadata on its first value only, as TF's summary writer does.
    """
    logdir = Path(logdir)
    writers = {split: EventFileWriter(str(logdir / split)) for split in ("train", "validation")}
    seen: set = set()

    def write(split, step, tag, value):
        ev = event_pb2.Event(wall_time=start + step, step=step)
        ev.summary.value.append(scalar_tensor_value(tag, value, (split, tag) not in seen))
        seen.add((split, tag))
        writers[split].add_event(ev)

    graph = event_pb2.Event(wall_time=start, step=0)
    v = graph.summary.value.add(tag="keras")
    v.metadata.plugin_data.plugin_name = "graph_keras_model"
    v.tensor.CopyFrom(tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b'{"class_name": "Sequential"}']))
    writers["train"].add_event(graph)
    for epoch, h in enumerate(epochs):
        write("train", epoch, "epoch_loss", h["loss"])
        write("train", epoch, "epoch_accuracy", h["accuracy"])
        write("train", epoch, "epoch_learning_rate", 0.05)
        write("validation", epoch, "epoch_loss", h["val_loss"])
        write("validation", epoch, "epoch_accuracy", h["val_accuracy"])
        write("validation", (epoch + 1) * 10, "evaluation_loss_vs_iterations", h["val_loss"])
    for w in writers.values():
        w.close()
    return logdir


# -- damage ----------------------------------------------------------------------------

def event_file(folder) -> Path:
    (path,) = sorted(Path(folder).glob("events.out.tfevents.*"))
    return path


def record_offsets(path) -> list[int]:
    """Where each record of a TFRecord file starts."""
    data = Path(path).read_bytes()
    out, at = [], 0
    while at < len(data):
        out.append(at)
        (length,) = struct.unpack("<Q", data[at:at + 8])
        at += 16 + length
    return out


def truncate_mid_record(path, keep_records: int) -> int:
    """Cut the file in the middle of record ``keep_records`` (as a killed writer leaves it); returns the cut."""
    offsets = record_offsets(path)
    cut = offsets[keep_records] + 20
    with open(path, "r+b") as fh:
        fh.truncate(cut)
    return cut


def flip_byte(path, offset: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0xFF]))


# -- nnhealth's own log folder, by the contract -------------------------------------------------

class ContractSink(Sink):
    """Writes a Monitor's steps as the log-folder contract says (the tags ``nnhealth check`` replays).

    Stands in for ``nnhealth.dashboards.tensorboard.TensorBoardSink`` where the tests need the
    contract's tags and nothing else.
    """

    def __init__(self, logdir, every: int, num_classes=None):
        self.w = EventFileWriter(str(logdir))
        text = event_pb2.Event(wall_time=time.time(), step=0)
        v = text.summary.value.add(tag="nnhealth/run")
        v.metadata.plugin_data.plugin_name = "text"
        v.tensor.CopyFrom(tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING, string_val=[json.dumps({"version": 1, "every": every,
                                                               "num_classes": num_classes}).encode()]))
        self.w.add_event(text)

    def write_step(self, record) -> None:
        ev = event_pb2.Event(wall_time=time.time(), step=record.step)
        names = {"loss": "loss/train", "val_loss": "loss/val", "train_acc": "accuracy/train",
                 "val_acc": "accuracy/val", "gradient/total_norm": "gradient/total_norm"}
        for (where, stat), value in record.scalars.items():
            if where is None:
                tag = names.get(stat, f"metrics/{stat}")
            else:
                role, _, name = stat.partition("/")
                tag = f"{role}_{name}/{where}"
            ev.summary.value.add(tag=tag, simple_value=float(value))
        for (role, where), s in record.summaries.items():
            v = ev.summary.value.add(tag=f"nnhealth_state/{role}/{where}")
            v.metadata.plugin_data.plugin_name = "nnhealth"
            v.metadata.plugin_data.content = json.dumps(
                {"version": 1, "role": role, "where": where, "layout": s.layout.to_json(),
                 "meta": record.meta.get(where, {})}).encode()
            v.tensor.CopyFrom(tensor_pb2.TensorProto(
                dtype=types_pb2.DT_DOUBLE,
                tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(
                    size=s.v.size)]),
                tensor_content=np.asarray(s.v, dtype="<f8").tobytes()))
        self.w.add_event(ev)

    def flush(self) -> None:
        self.w.flush()

    def close(self) -> None:
        self.w.close()
