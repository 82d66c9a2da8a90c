"""Time training steps side by side, and measure what a variant adds to peak memory.

Timing: every variant's run lives in the same process; a *round* runs a
block of steps of each variant in turn (the order rotates from round to
round), so a burst of load from a neighbour on a shared machine hits all
variants alike; the eager workloads' runs are built afresh every round, so
that where their tensors lie in memory changes too. Each block's time per
step is compared with the ``plain`` block of the same round; the reported
ratio is the median over rounds.

Two clocks are kept: the process's CPU time (all its threads, so the work of
nnhealth's writer thread is counted too; on a busy shared machine it does not
count the time other processes held the core), and wall time. On a CUDA device
only wall time means anything, measured between synchronisations.

Page faults: glibc's allocator maps a large block (above its mmap threshold)
fresh from the kernel and unmaps it when freed, and moves that threshold and
trims its heap as blocks come and go. A CNN's step then spends milliseconds
faulting its activations in again (4.5-10.5 ms of its 57 ms on the machine of
README's table), by an amount that depends on the order of every allocation
in the process and so differs from variant to variant by more than what
watching costs. :func:`pin_allocator` fixes both thresholds for the timing, so
every variant runs from a heap that stays mapped; the minor page faults of
each block are counted, and shown, either way.

Memory: each variant runs alone in a fresh process, and its peak resident set
is compared with that of the plain loop (on a GPU: peak allocated device
memory). The difference is what watching costs in memory.
"""
from __future__ import annotations

import ctypes
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

import torch

from benchmarks.overhead_workloads import make_run


@dataclass
class Timing:
    """Seconds per step of one variant in each round, on both clocks."""

    cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    #: minor page faults of the process per step (None where the platform does not count them)
    faults: list = field(default_factory=list)


#: glibc's mallopt parameters, and what the timing sets them to: blocks up to 32 MiB (the largest
#: threshold glibc takes) come from the heap, and the heap is not trimmed below 1 GiB of free memory
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
PINNED_MMAP_THRESHOLD, PINNED_TRIM_THRESHOLD = 32 << 20, 1 << 30


def pin_allocator() -> bool:
    """Fix glibc's mmap and trim thresholds for this process (see the module doc); False where the C
    library has no ``mallopt`` (not glibc) or refuses the values."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, PINNED_MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD,
                                                                                   PINNED_TRIM_THRESHOLD))


def _minor_faults() -> int | None:
    try:
        import resource
    except ImportError:  # not a Unix
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_block(run, steps: int, device: torch.device) -> tuple[float, float, float | None]:
    """(CPU seconds, wall seconds, minor page faults) per step over ``steps`` steps of ``run``, including
    the time its writer threads take to finish what the steps queued (their CPU time is the process's
    too: without the flush it would be counted in whichever block runs next)."""
    _sync(device)
    faults0 = _minor_faults()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(steps):
        run.step()
    run.flush()
    _sync(device)
    cpu, wall = (time.process_time() - cpu0) / steps, (time.perf_counter() - wall0) / steps
    faults = _minor_faults()
    return cpu, wall, None if faults is None else (faults - faults0) / steps


def _warm(run, steps: int, device: torch.device):
    for _ in range(steps):
        run.step()
    run.flush()
    _sync(device)
    return run


def interleaved(workload: str, variants: list[str], device: torch.device, *, rounds: int, block: int,
                warmup: int, root: str, progress=None, rebuild: bool = False, make=make_run) -> dict[str, Timing]:
    """Time ``variants`` of ``workload`` round by round; returns {variant: Timing}. ``make`` builds a run
    as :func:`make_run` does (a profile's own variants).

    With ``rebuild`` every round builds its runs afresh, in that round's order, after closing the last
    round's: each variant's model, optimizer state and batches then lie elsewhere in memory each
    round, and the median over rounds is not one placement's luck. Where a CNN's tensors lie moves its
    step by a percent or two: three instances of one variant, timed in the same rounds, measured
    1.010x, 1.013x and 1.028x of the plain loop's mean."""
    runs: dict = {}
    try:
        out = {v: Timing() for v in variants}
        for r in range(rounds):
            order = variants[r % len(variants):] + variants[:r % len(variants)]
            if rebuild or not runs:
                for run in runs.values():
                    run.close()
                runs = {}
                for v in order:  # each built and warmed in turn (a run's first steps are not its steady state)
                    runs[v] = _warm(make(workload, v, device, root), warmup, device)
            for v in order:
                cpu, wall, faults = time_block(runs[v], block, device)
                out[v].cpu.append(cpu)
                out[v].wall.append(wall)
                out[v].faults.append(faults)
            if progress:
                progress(r + 1, rounds)
        return out
    finally:
        for run in runs.values():
            run.close()


def median_ratio(times: Timing, plain: Timing, clock: str) -> float:
    """Median over rounds of (variant / plain) on ``clock`` ("cpu" or "wall")."""
    return statistics.median(a / b for a, b in zip(getattr(times, clock), getattr(plain, clock)))


# -- peak memory, one variant per process ---------------------------------------------


#: glibc's mmap threshold, fixed at its initial value: see :func:`peak_memory`
FIXED_MMAP_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def peak_memory(workload: str, variant: str, device: str, steps: int, root: str, fixed_threshold: bool = False
                ) -> float:
    """Peak memory in MiB of a fresh process running ``steps`` steps of ``variant`` (resident set on
    the CPU, allocated device memory on CUDA). ``fixed_threshold``: with glibc's mmap threshold fixed.
    By default glibc raises it to the size of the largest block freed (up to 32 MiB), so the 8 MiB
    activations a CNN frees every step then come from the heap, which fragments; how far the resident
    set grows then depends on the order of every allocation in the process and moves by tens of MiB
    from one change to another. With the threshold fixed, the figure is what the process holds."""
    cmd = [sys.executable, "-c", "from benchmarks.overhead_timing import _probe; _probe()",
           workload, variant, device, str(steps), root]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [_repo_root(), os.environ.get("PYTHONPATH")])),
               **(FIXED_MMAP_THRESHOLD if fixed_threshold else {}))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise RuntimeError(f"memory probe of {variant!r} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_mib"]


def _repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _probe() -> None:
    """Child process: run the variant, print as JSON the peak of what it added to memory: resident
    memory (sampled after every step, and after closing) above what the process held before the run
    was built (on CUDA: peak allocated device memory)."""
    from benchmarks.overhead_engine import resident_mib

    workload, variant, device, steps, root = sys.argv[1:6]
    torch.set_num_threads(1)
    dev = torch.device(device)
    torch.zeros(1, device=dev)  # the runtime's own memory is not the run's
    before = resident_mib()
    run = make_run(workload, variant, dev, root)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    peak = resident_mib()
    for _ in range(int(steps)):
        run.step()
        peak = max(peak, resident_mib())
    run.flush()
    peak = max(peak, resident_mib())
    run.close()
    if dev.type == "cuda":
        print(json.dumps({"peak_mib": torch.cuda.max_memory_allocated(dev) / 2**20}))
    else:
        print(json.dumps({"peak_mib": peak - before}))
