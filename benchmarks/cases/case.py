"""What a benchmark case is, and how one run of it is made.

A case is one real training run: a healthy recipe, or that recipe with one
fault injected (its ``twin`` names the healthy case it came from). Its train
function trains under a :class:`nnhealth.Monitor` and returns a
:class:`Proof`: a few lines of plain numpy or PyTorch, never nnhealth, that
measure in that very run that the fault is real (or, for a healthy case,
that it really learned), so that a detection is never credited on a run
where the fault did not bite, and silence is never credited on a dead run.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import torch
from threadpoolctl import threadpool_limits

from nnhealth import Finding, Monitor

#: layer statistics every 5 steps: the runs are 100-300 steps long (real runs use every=10 or more)
EVERY = 5


@dataclass(frozen=True)
class Proof:
    """The independent check's verdict on one run, with the numbers it measured."""

    ok: bool
    detail: str

    def __post_init__(self):
        object.__setattr__(self, "ok", bool(self.ok))  # numpy and torch comparisons give their own bools


@dataclass(frozen=True)
class Case:
    name: str
    framework: str                       # "numpy" | "torch"
    about: str                           # what the run is, and what is wrong with it
    steps: int                           # steps planned
    classes: int                         # passed to the monitor: enables the initial-loss check
    train: Callable = field(repr=False)  # (monitor, seed, steps) -> Proof
    expected: tuple[str, ...] = ()       # a fault case is detected when one of these is found
    also: tuple[str, ...] = ()           # symptoms the fault really causes too: not false alarms
    twin: str | None = None              # the healthy case this fault was injected into
    init: bool = False                   # an initialisation fault: held to the 10%-of-the-run target
    fast: bool = False                   # in the test suite's fast subset

    @property
    def healthy(self) -> bool:
        return not self.expected


@dataclass
class Result:
    """One run of one case: everything the scoring and the table need."""

    case: Case
    seed: int
    findings: list[Finding]
    ran: int                             # steps actually run (a critical finding stops the loop)
    seconds: float
    proof: Proof


CASES: dict[str, Case] = {}


def case(name: str, *, framework: str, about: str, steps: int, classes: int, **options):
    """Register ``train(mon, seed, steps) -> Proof`` as the case ``name``."""
    def register(train):
        if name in CASES:
            raise ValueError(f"case {name!r} is registered twice")
        CASES[name] = Case(name=name, framework=framework, about=about, steps=steps, classes=classes,
                           train=train, **options)
        return train
    return register


@contextmanager
def single_threaded():
    """One BLAS and one PyTorch thread, subnormal floats flushed: runs are timed alike on any machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    flushed = torch.set_flush_denormal(True)  # vanishing activations are subnormal floats: slow on a CPU
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(threads)
        if flushed:
            torch.set_flush_denormal(False)


def run(c: Case, seed: int) -> Result:
    """Train case ``c`` with ``seed`` under a fresh monitor (no files, no console)."""
    torch.manual_seed(seed)  # model initialisation of the PyTorch cases
    mon = Monitor(every=EVERY, num_classes=c.classes, console=False)
    start = time.perf_counter()
    with single_threaded():
        try:
            proof = c.train(mon, seed, c.steps)
        finally:
            mon.close()
    seconds = time.perf_counter() - start
    last = mon.history.last_step
    return Result(case=c, seed=seed, findings=list(mon.findings), ran=0 if last is None else last + 1,
                  seconds=seconds, proof=proof)
