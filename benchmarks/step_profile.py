"""Where a watched training step's host time goes: the profile that found this session's GPU costs.

The overhead benchmark gives ratios; this says what is behind them, on the CPU
or (where there is one) on a CUDA device:

- host time of each step by its place after the sampled one (``step % 10``:
  0 is sampled at the defaults), for the plain loop, nnhealth's defaults,
  every=1, and the defaults without files, with ``Monitor.step``'s share;
- on CUDA, the launches and copies of ten steps (``torch.profiler``) and the
  aten operations an every=1 step makes most often;
- with ``--cprofile``, the functions a sampled step spends its time in;
- with ``--parts``, on the CPU, where the extra time of ten steps goes: the forward and optimizer
  hooks (the C kernels they call counted apart from their Python), ``Monitor.step``, and the CPU of
  the TensorBoard writer thread, each as a share of the plain step measured in the same rounds;
- with ``--floor``, on the CPU, what watching would cost if its host side were free: the defaults and
  every=1 with their statistics computed and copied to the host but not recorded, judged or written
  (:data:`FLOORS`), next to the real ones, timed as the overhead benchmark times (interleaved rounds,
  runs rebuilt every round, process CPU time).

Host time is taken between steps without synchronising (a small model's GPU
step is the CPU launching kernels; the device keeps up), so it is what the
training thread pays. glibc's allocator is pinned as for the overhead
benchmark (``overhead_timing.pin_allocator``), so no step pays page faults the
others do not.

    python benchmarks/step_profile.py [--workload mlp|cnn|small|blocks] [--rounds 8] [--cprofile] [--parts] [--floor]
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

from benchmarks.overhead_timing import interleaved, median_ratio, pin_allocator  # noqa: E402
from benchmarks.overhead_workloads import CONTROL, WORKLOADS, _base, _nnhealth, make_run  # noqa: E402
from nnhealth import Monitor  # noqa: E402
from nnhealth.hooks._torch_forward import Capture, ForwardWatch  # noqa: E402
from nnhealth.hooks._torch_optim import GradientWatch  # noqa: E402
from nnhealth.stats import compiled  # noqa: E402

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


#: steps per round of ``--parts``: whole batches of dense steps (16, see Monitor._arrived) and whole
#: sampling periods of the defaults, so no step's work is left to the flush between rounds
PART_STEPS = 80


class Parts:
    """Time spent in each part of a watched step, by wrapping the functions that make it up: the hooks
    (with the compiled kernels they call counted apart, as ``kernels``) and ``Monitor.step``, on the
    training thread (``perf_counter``; nothing else runs there meanwhile)."""

    HOOKS = [(ForwardWatch, "_begin", "forward hooks"), (ForwardWatch, "_end", "forward hooks"),
             (Capture, "add", "forward hooks"), (GradientWatch, "_before", "optimizer hooks"),
             (GradientWatch, "_after", "optimizer hooks"), (Monitor, "step", "Monitor.step")]

    def __init__(self):
        self.seconds: dict = collections.defaultdict(float)
        self._current = None
        self._undo = []
        for owner, name, label in self.HOOKS:
            self._wrap(owner, name, label)
        kernels = compiled.kernels()
        if kernels is not None:
            self._undo.append((kernels, "_c", kernels._c))
            kernels._c = _Timed(kernels._c, self)

    def _wrap(self, owner, name: str, label: str) -> None:
        original = getattr(owner, name)
        parts = self

        def timed(*args, **kwargs):
            if parts._current is not None:  # called from inside another part: counted there
                return original(*args, **kwargs)
            parts._current = label
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                parts.seconds[label] += time.perf_counter() - start
                parts._current = None

        self._undo.append((owner, name, original))
        setattr(owner, name, timed)

    def close(self) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)


class _Timed:
    """The compiled kernels' module, each call timed into the part that made it."""

    def __init__(self, module, parts: Parts):
        self._module, self._parts = module, parts

    def __getattr__(self, name):
        fn, parts = getattr(self._module, name), self._parts

        def timed(*args):
            start = time.perf_counter()
            try:
                return fn(*args)
            finally:
                parts.seconds[(parts._current, "kernels")] += time.perf_counter() - start

        return timed


def _writer_threads(run) -> list:
    """The TensorBoard writer threads of a run's monitor (their CPU clocks are read from outside)."""
    mon = run.extra.get("monitor")
    return [sink._queue._thread for sink in getattr(mon, "_sinks", []) if hasattr(sink, "_queue")]


def parts_of_steps(workload: str, rounds: int, steps_per_round: int = PART_STEPS) -> tuple[dict, dict]:
    """(training-thread CPU seconds per variant, {variant: {part: seconds}}) over ``rounds`` blocks of
    ``steps_per_round`` steps each (a multiple of 10, starting on a sampled step), variants interleaved;
    parts are as :class:`Parts` names them, ``(part, "kernels")`` and ``"TensorBoard writer thread"``.
    CPU only: on a device the parts' host time says little of a step's."""
    timer = Parts()  # before the runs: the hooks are registered as the functions they are then
    runs: dict = {}
    try:
        for v in ("plain", "nnhealth (defaults)", "nnhealth every=1"):
            runs[v] = make_run(workload, v, torch.device("cpu"), tempfile.mkdtemp(prefix="step-parts-"))
        for run in runs.values():
            for _ in range(60):
                run.step()
            run.flush()
        cpu = {v: 0.0 for v in runs}
        parts = {v: collections.defaultdict(float) for v in runs}
        for _ in range(rounds):
            for v, run in runs.items():
                while run.steps % 10:
                    run.step()
                run.flush()
                clocks = [time.pthread_getcpuclockid(t.ident) for t in _writer_threads(run) if t.is_alive()]
                writer = sum(time.clock_gettime(c) for c in clocks)
                timer.seconds.clear()
                start = time.thread_time()
                for _ in range(steps_per_round):
                    run.step()
                cpu[v] += time.thread_time() - start
                run.flush()
                for key, seconds in timer.seconds.items():
                    parts[v][key] += seconds
                parts[v]["TensorBoard writer thread"] += sum(time.clock_gettime(c) for c in clocks) - writer
    finally:
        timer.close()
        for run in runs.values():
            run.close()
    return cpu, parts


def print_parts(cpu: dict, parts: dict, rounds: int, steps_per_round: int = PART_STEPS) -> None:
    """Each part's time per step as a share of the plain step measured in the same rounds (2.0% is 1.02x)."""
    steps = rounds * steps_per_round
    plain = cpu["plain"] / steps

    def share(seconds: float) -> str:  # per step, as a share of the plain step: 2.0% is 1.02x
        return f"{100 * seconds / steps / plain:5.1f}%"

    print(f"where the extra time of a step goes, as a share of the plain step ({plain * 1e3:.2f} ms of CPU), "
          f"over {rounds} rounds of {steps_per_round} steps (at the defaults one in ten is sampled)")
    for v in ("nnhealth (defaults)", "nnhealth every=1"):
        print(f"  {v}: the training thread {share(cpu[v] - cpu['plain'])}")
        named = 0.0
        for label in ("forward hooks", "optimizer hooks", "Monitor.step"):
            total, kernels = parts[v][label], parts[v][(label, "kernels")]
            named += total
            print(f"    {label:26s} {share(total)}   C kernels {share(kernels)}, Python and the rest "
                  f"{share(total - kernels)}")
        print(f"    {'elsewhere on that thread':26s} {share(cpu[v] - cpu['plain'] - named)}   PyTorch calling the "
              "hooks, weights the passes evicted, noise")
        print(f"    {'TensorBoard writer thread':26s} {share(parts[v]['TensorBoard writer thread'])}   its own "
              "thread's CPU")


def _unrecorded(every: int):
    """A variant whose monitor computes its statistics and copies them to the host, where ``ingest``
    (recording, the rules, the files) is replaced by a count of the sampled steps that reached it."""
    def make(workload, device, logdir):
        run = _nnhealth(_base(workload, device, f"every={every}, not recorded"), None, every=every)
        mon, arrived = run.extra["monitor"], run.extra.setdefault("arrived", [])
        mon.ingest = lambda step, values, summaries, **_: arrived.extend([step] if summaries else []) or []
        return run
    return make


#: the floors of ``--floor``: variant -> how to set it up, as ``overhead_workloads.VARIANTS`` has them
FLOORS = {
    "nnhealth, never sampled": lambda w, d, logdir: _nnhealth(_base(w, d, "nnhealth, never sampled"), None,
                                                              every=10 ** 9),
    "defaults, not recorded": _unrecorded(10),
    "every=1, not recorded": _unrecorded(1),
}
#: what ``--floor`` times, in this order, against ``plain``
FLOOR_TABLE = ["plain", CONTROL, "nnhealth, never sampled", "defaults, not recorded", "nnhealth (defaults)",
               "every=1, not recorded", "nnhealth every=1"]


def _make_floor(workload: str, variant: str, device, root: str | None = None):
    """A run of one of :data:`FLOOR_TABLE`'s variants (the floors here, the others the benchmark's)."""
    if variant in FLOORS:
        return FLOORS[variant](WORKLOADS[workload], device, None)
    return make_run(workload, variant, device, root)


def floors(workload: str, rounds: int, block: int = 40) -> dict:
    """{variant: median ratio of CPU time to the plain loop's} for :data:`FLOOR_TABLE`, timed as the
    overhead benchmark times its eager table."""
    times = interleaved(workload, FLOOR_TABLE, torch.device("cpu"), rounds=rounds, block=block, warmup=20,
                        root=tempfile.mkdtemp(prefix="step-floor-"), rebuild=True, make=_make_floor)
    return {v: median_ratio(times[v], times["plain"], "cpu") for v in FLOOR_TABLE}


def print_floors(ratios: dict, workload: str, rounds: int) -> None:
    print(f"{WORKLOADS[workload].name}: process CPU time per step against the plain loop, median of {rounds} "
          "rounds")
    notes = {CONTROL: "the noise floor",
             "nnhealth, never sampled": "what every step pays: the loss, the unsampled-step path",
             "defaults, not recorded": "statistics computed and copied, then dropped: the hooks and kernels",
             "every=1, not recorded": "the same at every=1"}
    for v, ratio in ratios.items():
        print(f"  {v:26s} {ratio:6.3f}x  {notes.get(v, '')}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="mlp")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--cprofile", action="store_true", help="also the functions of every=1 steps")
    parser.add_argument("--parts", action="store_true", help="only where the time of ten steps goes, on the CPU")
    parser.add_argument("--floor", action="store_true",
                        help="only what watching costs on the CPU with and without recording, judging and files")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if not pin_allocator():
        print("(glibc's allocator could not be pinned: page faults may move the numbers)")
    if args.parts:
        return print_parts(*parts_of_steps(args.workload, args.rounds), args.rounds)
    if args.floor:
        return print_floors(floors(args.workload, args.rounds), args.workload, args.rounds)
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
