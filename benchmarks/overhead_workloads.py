"""The training loops the overhead benchmark times, and the ways of watching them it compares.

Two workloads, as the issue states them: an MLP (784-512-512-512-10, ReLU,
batch 128, SGD) and a small CNN with BatchNorm (3x32x32 inputs, batch 64,
Adam). Each variant is a :class:`Run`: a model, its optimizer, a few fixed
batches and whatever watches it, advanced one training step at a time by
:meth:`Run.step`, so the benchmark can interleave variants block by block.

The variants:

- ``plain``: the loop alone;
- ``plain, second copy``: the same loop again, built the same way: what its ratio to ``plain`` is
  other than 1.000x is the noise of the run (a shared machine, where the two instances' memory
  lands), the resolution of every other ratio in the table;
- ``nnhealth``: ``Monitor(logdir)`` with its defaults, ``mon.watch(model, opt)``;
- ``nnhealth every=1``: every step sampled, histograms included;
- ``add_histogram every=1`` / ``every=10``: what users write by hand today,
  ``SummaryWriter.add_histogram`` of every parameter and gradient plus scalars;
- ``naive hooks``: forward hooks on every activation computing mean, std and
  zero fraction with ``.item()`` on every step;
- ``..., compiled``: the plain loop and nnhealth with the model compiled
  (``torch.compile`` after ``mon.watch``, the order README recommends), timed
  against each other in a part of their own (:data:`COMPILED`), on two
  workloads where compiling pays: a small MLP whose step is mostly the time
  between its many small operations (as on a GPU), and a stack of residual
  blocks with many small element-wise operations for the compiler to fuse.
"""
from __future__ import annotations

import logging
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

#: fixed batches cycled through (the data pipeline is not what is measured)
BATCHES = 4


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                         nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))


def cnn() -> nn.Module:
    """conv-BN-ReLU-pool twice, then a hidden dense layer: a small CIFAR-style network."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, 10))


class Residual(nn.Module):
    """A pre-norm residual MLP block, as in transformers and MLP-Mixers: small element-wise operations
    (norm, GELU, the residual sum) that the compiler fuses."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, 2 * width)
        self.act = nn.GELU()
        self.down = nn.Linear(2 * width, width)

    def forward(self, x):
        return x + self.down(self.act(self.up(self.norm(x))))


def small_mlp() -> nn.Module:
    layers = [nn.Linear(32, 64), nn.ReLU()]
    for _ in range(6):
        layers += [nn.Linear(64, 64), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(64, 10))


def deep_mlp() -> nn.Module:
    """50 narrow Linear-ReLU blocks: a hundred small parameter tensors and fifty activations, where what a
    sampled step costs per tensor and per layer shows (``benchmarks/step_profile.py --workload deep``)."""
    layers = []
    for _ in range(50):
        layers += [nn.Linear(32, 32), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(32, 10))


def residual_blocks() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), *(Residual(128) for _ in range(8)), nn.LayerNorm(128),
                         nn.Linear(128, 10))


@dataclass(frozen=True)
class Workload:
    name: str
    build: Callable[[], nn.Module]
    optimizer: Callable
    input_shape: tuple
    batch: int
    classes: int = 10


WORKLOADS = {
    "mlp": Workload("MLP 784-512-512-512-10, batch 128, SGD", mlp,
                    lambda params: torch.optim.SGD(params, lr=0.01), (784,), 128),
    "cnn": Workload("CNN 2x(conv-BN-ReLU-pool)+FC, 3x32x32, batch 64, Adam", cnn,
                    lambda params: torch.optim.Adam(params, lr=1e-3), (3, 32, 32), 64),
    # where compiling pays (the compiled part of the benchmark): a step made of many small operations,
    # whose cost is the time between them (as on a GPU), and many small element-wise operations
    "small": Workload("small MLP 32-(64 x 7)-10, ReLU, batch 128, SGD", small_mlp,
                      lambda params: torch.optim.SGD(params, lr=0.01), (32,), 128),
    "blocks": Workload("8 residual blocks (LayerNorm-Linear-GELU-Linear), width 128, batch 256, AdamW",
                       residual_blocks, lambda params: torch.optim.AdamW(params, lr=1e-3), (64,), 256),
    # many small layers: the per-tensor and per-layer costs of a sampled step (step_profile.py only)
    "deep": Workload("50 Linear(32)-ReLU blocks, batch 32, SGD", deep_mlp,
                     lambda params: torch.optim.SGD(params, lr=0.01), (32,), 32),
}
#: the workloads of the main table, and of the compiled part
EAGER_WORKLOADS = ["mlp", "cnn"]
COMPILED_WORKLOADS = ["small", "blocks"]


@dataclass
class Run:
    """One variant of one workload, ready to be stepped."""

    variant: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    batches: list
    before_step: Callable[[int], None] = lambda step: None
    after_step: Callable[[int, torch.Tensor], None] = lambda step, loss: None
    #: waits until the variant's background writing is done (so its cost is counted in its own block)
    flush: Callable[[], None] = lambda: None
    close: Callable[[], None] = lambda: None
    steps: int = 0
    extra: dict = field(default_factory=dict)

    def step(self) -> None:
        x, y = self.batches[self.steps % len(self.batches)]
        self.before_step(self.steps)
        self.optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model(x), y)
        loss.backward()
        self.optimizer.step()
        self.after_step(self.steps, loss)
        self.steps += 1


def _base(workload: Workload, device: torch.device, variant: str) -> Run:
    torch.manual_seed(0)
    model = workload.build().to(device)
    optimizer = workload.optimizer(model.parameters())
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn((workload.batch, *workload.input_shape), generator=g).to(device),
                torch.randint(0, workload.classes, (workload.batch,), generator=g).to(device))
               for _ in range(BATCHES)]
    return Run(variant, model, optimizer, batches)


def _nnhealth(run: Run, logdir: str, **options) -> Run:
    from nnhealth import Monitor, TrainingHealthWarning

    # findings about a synthetic run (random labels) are not what is measured: they stay off the table
    logging.getLogger("nnhealth").setLevel(logging.ERROR)
    warnings.simplefilter("ignore", TrainingHealthWarning)
    mon = Monitor(logdir=logdir, **options).watch(run.model, run.optimizer)
    run.after_step = lambda step, loss: mon.step(step, loss=loss)
    run.flush = mon.flush
    run.close = mon.close
    run.extra["monitor"] = mon
    return run


def _add_histogram(run: Run, logdir: str, every: int) -> Run:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(logdir)
    named = list(run.model.named_parameters())

    def after(step: int, loss: torch.Tensor) -> None:
        writer.add_scalar("loss", loss.item(), step)
        if step % every:
            return
        for name, p in named:
            writer.add_histogram(f"param/{name}", p, step)
            if p.grad is not None:
                writer.add_histogram(f"grad/{name}", p.grad, step)
            writer.add_scalar(f"norm/{name}", p.norm().item(), step)

    run.after_step = after
    run.flush = writer.flush
    run.close = writer.close
    return run


def _naive_hooks(run: Run) -> Run:
    """What a user writes in five minutes: a forward hook per activation, reading numbers with .item()."""
    from nnhealth.hooks._torch_kinds import module_kind

    stats: dict = {}

    def hook(name):
        def record(module, args, out):
            if module.training:
                stats[name] = (out.mean().item(), out.std().item(), (out == 0).float().mean().item())
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in run.model.named_modules() if module_kind(m)]
    run.close = lambda: [h.remove() for h in handles]
    run.extra["stats"] = stats
    return run


def _compiled(run: Run) -> Run:
    """The model compiled (inductor), after nnhealth watched it; compiled on its first steps (warm-up)."""
    run.model = torch.compile(run.model)
    return run


#: a second plain loop: the noise floor of the comparison
CONTROL = "plain, second copy"
#: variant name -> how to set it up (workload, device, logdir) -> Run
VARIANTS: dict[str, Callable] = {
    "plain": lambda w, d, logdir: _base(w, d, "plain"),
    CONTROL: lambda w, d, logdir: _base(w, d, CONTROL),
    "nnhealth (defaults)": lambda w, d, logdir: _nnhealth(_base(w, d, "nnhealth (defaults)"), logdir),
    "nnhealth every=1": lambda w, d, logdir: _nnhealth(_base(w, d, "nnhealth every=1"), logdir, every=1),
    "add_histogram every=1": lambda w, d, logdir: _add_histogram(_base(w, d, "add_histogram every=1"), logdir, 1),
    "add_histogram every=10": lambda w, d, logdir: _add_histogram(_base(w, d, "add_histogram every=10"), logdir,
                                                                  10),
    "naive .item() hooks": lambda w, d, logdir: _naive_hooks(_base(w, d, "naive .item() hooks")),
    "plain, compiled": lambda w, d, logdir: _compiled(_base(w, d, "plain, compiled")),
    "nnhealth (defaults), compiled": lambda w, d, logdir: _compiled(
        _nnhealth(_base(w, d, "nnhealth (defaults), compiled"), logdir)),
    "nnhealth every=1, compiled": lambda w, d, logdir: _compiled(
        _nnhealth(_base(w, d, "nnhealth every=1, compiled"), logdir, every=1)),
}
#: the compiled variants, timed against the first of them in a part of their own
COMPILED = ["plain, compiled", "nnhealth (defaults), compiled", "nnhealth every=1, compiled"]
#: the main table's variants, timed against ``plain``
EAGER = [v for v in VARIANTS if v not in COMPILED]


def make_run(workload: str, variant: str, device: torch.device, root: str | None = None) -> Run:
    """A fresh run of ``variant`` on ``workload``; files (if any) go under ``root`` (a temporary folder)."""
    logdir = tempfile.mkdtemp(prefix=f"{workload}-", dir=root)
    return VARIANTS[variant](WORKLOADS[workload], device, logdir)
