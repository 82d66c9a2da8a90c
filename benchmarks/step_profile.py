"""Where a watched training step's host time goes: the profile that found this session's GPU costs.

The overhead benchmark gives ratios; this says what is behind them, on the CPU
or (where there is one) on a CUDA device:

- host time of each step by its place after the sampled one (``step % 10``:
  0 is sampled at the defaults), for the plain loop, nnhealth's defaults,
  every=1, and the defaults without files, with ``Monitor.step``'s share;
- on CUDA, the launches and copies of ten steps (``torch.profiler``) and the
  aten operations an every=1 step makes most often;
- with ``--cprofile``, the functions a sampled step spends its time in.

Host time is taken between steps without synchronising (a small model's GPU
step is the CPU launching kernels; the device keeps up), so it is what the
training thread pays.

    python benchmarks/step_profile.py [--workload mlp|cnn|small|blocks] [--rounds 8] [--cprofile]
"""
from __future__ import annotations

import argparse
import collections
import cProfile
import io
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.overhead_workloads import WORKLOADS, _base, _nnhealth, make_run  # noqa: E402
from nnhealth import Monitor  # noqa: E402

#: what ``torch.profiler`` calls a launch or a copy on CUDA
CALLS = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cudaMemcpyAsync", "cudaMemsetAsync",
         "cudaEventQuery", "cudaStreamSynchronize")


class StepClock:
    """``Monitor.step``'s host time per (variant, place after the sampled step), by wrapping it."""

    def __init__(self):
        self.times: dict = collections.defaultdict(list)
        self.at = None
        self._step = Monitor.step
        clock = self

        def timed(mon, *args, **kwargs):
            start = time.perf_counter()
            try:
                return clock._step(mon, *args, **kwargs)
            finally:
                clock.times[clock.at].append(time.perf_counter() - start)

        Monitor.step = timed

    def close(self) -> None:
        Monitor.step = self._step


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def runs_of(workload: str, device) -> dict:
    root = tempfile.mkdtemp(prefix="step-profile-")
    runs = {v: make_run(workload, v, device, root) for v in ("plain", "nnhealth (defaults)", "nnhealth every=1")}
    runs["defaults, no files"] = _nnhealth(_base(WORKLOADS[workload], device, "defaults, no files"),
                                           tempfile.mkdtemp(dir=root), tensorboard=False)
    return runs


def host_times(runs: dict, device, rounds: int, clock: StepClock) -> None:
    for run in runs.values():
        for _ in range(60):
            run.step()
        run.flush()
        _sync(device)
    clock.times.clear()
    by_place = {v: [[] for _ in range(10)] for v in runs}
    for _ in range(rounds):
        for v, run in runs.items():
            while run.steps % 10:  # blocks start on a sampled step
                run.step()
            run.flush()
            _sync(device)
            for i in range(100):
                clock.at = (v, i % 10)
                start = time.perf_counter()
                run.step()
                by_place[v][i % 10].append(time.perf_counter() - start)
            run.flush()
            _sync(device)
    print("host ms per step, by step % 10 (0: sampled at the defaults); median over rounds")
    for v in runs:
        print(f"  {v:22s}", " ".join(f"{statistics.median(t) * 1e3:6.3f}" for t in by_place[v]))
        if (v, 0) in clock.times:
            print(f"  {'  Monitor.step':22s}",
                  " ".join(f"{statistics.median(clock.times[(v, i)]) * 1e3:6.3f}" for i in range(10)))


def launches(runs: dict, device) -> None:
    from torch.profiler import ProfilerActivity, profile

    print("CUDA calls in ten steps (the first sampled at the defaults)")
    for v, run in runs.items():
        while run.steps % 10:
            run.step()
        _sync(device)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
            for _ in range(10):
                run.step()
            run.flush()
            _sync(device)
        calls = collections.Counter(e.name for e in p.events() if e.name in CALLS)
        print(f"  {v:22s}", dict(calls))
        if v == "nnhealth every=1":
            ops = sorted((k for k in p.key_averages() if k.key.startswith("aten::")), key=lambda k: -k.count)[:25]
            print("  aten ops of ten every=1 steps:", ", ".join(f"{k.key[6:]}={k.count}" for k in ops))


def functions(run, device, steps: int = 200) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        run.step()
    run.flush()
    _sync(device)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(35)
    print(f"cProfile of {steps} every=1 steps (training thread)")
    print(out.getvalue())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="mlp")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--cprofile", action="store_true", help="also the functions of every=1 steps")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"{WORKLOADS[args.workload].name} on {device}")
    runs = runs_of(args.workload, device)
    clock = StepClock()
    try:
        host_times(runs, device, args.rounds, clock)
    finally:
        clock.close()
    if device.type == "cuda":
        launches(runs, device)
    if args.cprofile:
        functions(runs["nnhealth every=1"], device)
    for run in runs.values():
        run.close()


if __name__ == "__main__":
    main()
