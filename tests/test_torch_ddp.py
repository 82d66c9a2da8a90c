"""Two ranks on gloo see what one process sees on the same data, and only rank 0 writes.

A real DistributedDataParallel job (two processes, CPU, gloo) trains an MLP
with a dead-ReLU fault on the two halves of every batch; a single process
trains the same model on the whole batches. The monitor of every rank must
reach the findings of the single process (statistics summed or averaged
across ranks in one collective per step), and only rank 0 may write files.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from nnhealth import Monitor  # noqa: E402

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="this torch build has no torch.distributed")

STEPS, EVERY, BATCH = 24, 2, 64


def make_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    with torch.no_grad():
        model[0].bias.fill_(-1.6)  # most first-layer units never fire, a few still carry gradients
    return model


def batches():
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(BATCH, 16, generator=g), torch.randint(0, 4, (BATCH,), generator=g)) for _ in range(STEPS)]


def train(model, monitor, data, rank=0, world=1, compiled=False):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    monitor.watch(model, opt)
    if compiled:  # after watch(), as README recommends; the eager backend: Dynamo's part without a C++ build
        model = torch.compile(model, backend="eager")
    for step, (x, y) in enumerate(data):
        part = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
        loss = F.cross_entropy(model(x[part]), y[part])
        opt.zero_grad()
        loss.backward()
        opt.step()
        monitor.step(step, loss=loss)
    monitor.close()


def summary(monitor) -> dict:
    h = monitor.history
    return {
        "findings": sorted((f.symptom, f.where, f.step) for f in monitor.findings),
        "depth_order": h.names("activation") + h.names("gradient"),
        "dead": h.values("1", "activation/dead_fraction").tolist(),
        "grad_norm": h.values("0.weight", "gradient/norm").tolist(),
        "ratio": h.values("2.weight", "update/ratio").tolist(),
        "loss": h.values(None, "loss").tolist(),
        "input_mean": h.values("input", "input/mean").tolist(),
    }


def _rank(rank: int, world: int, store: str, logdir: str, out: str, compiled: bool = False) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        model = nn.parallel.DistributedDataParallel(make_model())
        monitor = Monitor(logdir=logdir, every=EVERY, console=False)
        train(model, monitor, batches(), rank, world, compiled)
        monitor.close()
        result = {"is_writer": monitor.is_writer, **summary(monitor)}
        if compiled:
            from torch._dynamo.utils import counters

            # DDP breaks the graph itself (its Logger); what is counted is the breaks nnhealth's code causes
            ours = ("nnhealth", "TorchWatcher", "ForwardWatch", "Capture", "GradientWatch")
            result["graph_breaks"] = sum(n for why, n in counters["graph_break"].items() if any(o in why for o in ours))
        Path(out, f"rank{rank}.json").write_text(json.dumps(result))
        dist.barrier()  # neither rank tears its connections down while the other still uses them
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    logdir = tmp / "run"
    mp.spawn(_rank, args=(2, str(tmp / "store"), str(logdir), str(tmp)), nprocs=2, join=True)
    return tmp, logdir, [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.fixture(scope="module")
def compiled_ranks(tmp_path_factory):
    pytest.importorskip("torch._dynamo")
    tmp = tmp_path_factory.mktemp("ddp-compiled")
    mp.spawn(_rank, args=(2, str(tmp / "store"), str(tmp / "run"), str(tmp), True), nprocs=2, join=True)
    return [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.fixture(scope="module")
def single():
    monitor = Monitor(every=EVERY, console=False)
    train(make_model(), monitor, batches())
    return summary(monitor)


def test_every_rank_reaches_the_single_process_findings(ranks, single):
    _, _, results = ranks
    assert {symptom for symptom, _, _ in single["findings"]} >= {"dead-relu"}
    for r in results:
        assert [tuple(f) for f in r["findings"]] == single["findings"]


def test_statistics_are_combined_across_ranks(ranks, single):
    _, _, results = ranks
    for r in results:
        assert r["depth_order"] == single["depth_order"]
        for key in ("dead", "grad_norm", "ratio", "loss", "input_mean"):
            assert r[key] == pytest.approx(single[key], rel=1e-4, abs=1e-6), key


def test_only_rank_zero_writes(ranks):
    _, logdir, results = ranks
    assert [r["is_writer"] for r in results] == [True, False]
    files = sorted(p.name for p in logdir.iterdir())
    events = [f for f in files if f.startswith("events.out.tfevents")]
    assert len(events) == 1, files
    assert str(os.getpid()) not in events[0]  # written by a spawned rank, not by this process
    findings = (logdir / "findings.jsonl").read_text().splitlines()
    assert len(findings) == len(results[0]["findings"])


def test_a_compiled_ddp_model_is_watched_as_the_eager_one_without_graph_breaks(compiled_ranks, single):
    for r in compiled_ranks:
        assert r["graph_breaks"] == 0
        assert [tuple(f) for f in r["findings"]] == single["findings"]
        assert r["depth_order"] == single["depth_order"]
        for key in ("dead", "grad_norm", "ratio", "loss", "input_mean"):
            assert r[key] == pytest.approx(single[key], rel=1e-4, abs=1e-6), key
