"""Overhead benchmark: what watching a training with nnhealth costs, next to what users do today.

Each workload (an MLP and a small CNN, see :mod:`overhead_workloads`) is
trained under every variant in one process, variants interleaved block by
block and repeated (:mod:`overhead_timing`); the table shows the median
ratio of each variant's time per step to the plain loop measured in the same
rounds, on the process's CPU time (all threads: nnhealth's writer thread
counts) and on wall time, and the peak memory of a process running the
variant alone. A part of its own times workloads compiled (``torch.compile``,
inductor) with and without nnhealth. Then the host side alone
(:mod:`overhead_engine`): the rule engine's time per ``step()`` for 10, 100
and 1000 watched layers, and resident memory after 10k and 200k steps with
100 layers.

PyTorch runs on one thread (``torch.set_num_threads(1)``): stable numbers on
a shared machine, and the ratio a single-core budget sees. glibc's allocator
is pinned for the timing (:func:`~overhead_timing.pin_allocator`): left to
itself it faults a CNN's activations in afresh on many steps, by amounts that
differ between variants by more than watching costs; ``--native-malloc``
leaves it be. Each table says how many page faults a step took. The eager
workloads' runs are built afresh every round (where a CNN's tensors lie moves
its step by a percent or two); the compiled ones once (a build compiles).
Where a CUDA device exists the workloads also run there (wall time between
synchronisations).

    python benchmarks/overhead.py                 # everything (about 15 minutes on 2 CPU cores)
    python benchmarks/overhead.py --quick         # fewer rounds and steps, a first look
    python benchmarks/overhead.py --only engine   # one part: timing, compiled, memory, engine, long-run
    python benchmarks/overhead.py --json out.json # the numbers as JSON too
    python benchmarks/overhead.py --native-malloc # glibc's allocator as it comes (noisier on the CNN)

Exit status: 0 when every target holds, 1 when one does not.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.overhead_engine import engine_ms_per_step, long_run_memory  # noqa: E402
from benchmarks.overhead_timing import interleaved, median_ratio, peak_memory, pin_allocator  # noqa: E402
from benchmarks.overhead_workloads import (COMPILED, COMPILED_WORKLOADS, CONTROL, EAGER,  # noqa: E402
                                           EAGER_WORKLOADS, WORKLOADS)

#: variant -> the most it may cost, as a ratio to the plain loop (None: measured for comparison)
TARGETS = {"nnhealth (defaults)": 1.02, "nnhealth every=1": 1.2}
#: the rule engine's budget per step() with 100 layers (ms), and the long run's memory growth (MiB)
ENGINE_TARGET_MS, MEMORY_TARGET_MIB = 0.3, 50.0


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f"; GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "; no CUDA device"
    return (f"{cpu}, {os.cpu_count()} logical CPUs{gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__}, numpy {np.__version__}; torch threads: {torch.get_num_threads()}")


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def timing_section(devices, args, root, compiled: bool = False) -> dict:
    """Every variant timed against the first (the plain loop), interleaved, per workload and device: the
    main table's, or with ``compiled`` the compiled part's."""
    variants, workloads = (COMPILED, COMPILED_WORKLOADS) if compiled else (EAGER, EAGER_WORKLOADS)
    results = {}
    for device in devices:
        for workload in workloads:
            key = f"{workload}/{device}" + ("/compiled" if compiled else "")
            _say(f"timing {key}: {args.rounds} rounds x {len(variants)} variants x {args.block} steps")
            times = interleaved(workload, variants, torch.device(device), rounds=args.rounds, block=args.block,
                                warmup=args.warmup, root=root, rebuild=not compiled,
                                progress=lambda r, n: _say(f"  round {r}/{n}"))
            plain = times[variants[0]]
            clocks = ["wall"] if device.startswith("cuda") else ["cpu", "wall"]
            rows = {}
            for v in variants:
                t = times[v]
                rows[v] = {"ms_per_step": 1e3 * float(np.median(getattr(t, clocks[0]))),
                           **{f"ratio_{c}": median_ratio(t, plain, c) for c in clocks}}
                if None not in t.faults:
                    rows[v]["faults_per_step"] = float(np.median(t.faults))
            results[key] = {"workload": WORKLOADS[workload].name + (", compiled" if compiled else ""),
                            "device": device, "clock": clocks[0], "rows": rows}
    return results


def memory_section(devices, args, root, timing: dict) -> None:
    for device in devices:
        for workload in EAGER_WORKLOADS:
            key = f"{workload}/{device}"
            rows = timing.setdefault(key, {"workload": WORKLOADS[workload].name, "device": device,
                                           "clock": "cpu", "rows": {}})["rows"]
            _say(f"peak memory {key}: one process per variant, {args.memory_steps} steps")
            for v in EAGER:
                if v == CONTROL:  # the same loop as plain: its timing is the point, not its memory
                    continue
                row = rows.setdefault(v, {})
                row["peak_mib"] = peak_memory(workload, v, device, args.memory_steps, root)
                if device == "cpu":
                    row["held_mib"] = peak_memory(workload, v, device, args.memory_steps, root, fixed_threshold=True)


def engine_section(args) -> dict:
    out = {}
    for layouts in ("adapter", "full"):
        for layers in (10, 100, 1000):
            _say(f"rule engine: {layers} layers, {layouts} layouts")
            steps = args.engine_steps if layers < 1000 else max(args.engine_steps // 3, 50)
            out[f"{layouts}/{layers}"] = engine_ms_per_step(layers, layouts, steps=steps)
    return out


def long_run_section(args) -> dict:
    checkpoints = (10_000, args.long_steps)
    return long_run_memory(100, checkpoints, progress=lambda s, n: _say(f"long run: {s}/{n} steps")
                           if s % 50_000 == 0 else None)


# -- the table ---------------------------------------------------------------------------


def _verdict(value, target) -> str:
    if target is None:
        return ""
    return "ok" if value <= target else "MISSED"


def _memory(value, plain, variant: str) -> str:
    if value is None:
        return ""
    return f"{value:.1f}" if variant == "plain" or plain is None else f"{value:.1f} ({value - plain:+.1f})"


def render(results: dict) -> tuple[str, bool]:
    lines, ok = [], True
    lines.append(f"Machine: {results['machine']}")
    lines.append("")
    for section in results.get("timing", {}).values():
        clock = section["clock"]
        lines.append(f"{section['workload']} on {section['device']} "
                     f"(median over rounds of time per step / plain loop's, same rounds)")
        head = (f"  {'variant':<30} {'ms/step':>8} {'x plain (cpu)':>14} {'x plain (wall)':>15} "
                f"{'peak MiB':>14} {'held MiB':>14}  target")
        lines.append(head)
        plain_peak = section["rows"].get("plain", {}).get("peak_mib")
        plain_held = section["rows"].get("plain", {}).get("held_mib")
        for variant, row in section["rows"].items():
            ratio = row.get(f"ratio_{clock}")
            target = TARGETS.get(variant)
            verdict = _verdict(ratio, target) if ratio is not None else ""
            ok &= verdict != "MISSED"
            peak_text = _memory(row.get("peak_mib"), plain_peak, variant)
            held_text = _memory(row.get("held_mib"), plain_held, variant)
            cpu = f"{row['ratio_cpu']:.3f}x" if "ratio_cpu" in row else "-"
            wall = f"{row['ratio_wall']:.3f}x" if "ratio_wall" in row else "-"
            ms = f"{row['ms_per_step']:.2f}" if "ms_per_step" in row else "-"
            goal = f"<= {target:.2f}x {verdict}" if target and ratio is not None else ""
            lines.append(f"  {variant:<30} {ms:>8} {cpu:>14} {wall:>15} {peak_text:>14} {held_text:>14}  {goal}")
        faults = {v: row["faults_per_step"] for v, row in section["rows"].items() if "faults_per_step" in row}
        if faults:
            lines.append(f"  page faults per step ({results.get('allocator', 'glibc as it comes')}): "
                         + ", ".join(f"{v} {n:.1f}" for v, n in faults.items()))
        control = section["rows"].get(CONTROL, {}).get(f"ratio_{clock}")
        if control is not None:
            lines.append(f"  {CONTROL}: the plain loop again; {control:.3f}x is this run's noise floor "
                         f"(about {100 * abs(control - 1):.1f}% either way)")
        if plain_peak is not None:
            lines.append("  peak MiB: the most memory a process running only that variant added while training "
                         "(resident set; device memory on CUDA); in brackets, the difference to plain")
        if plain_held is not None:
            lines.append("  held MiB: the same with glibc's mmap threshold fixed (MALLOC_MMAP_THRESHOLD_=131072): "
                         "what the process holds, without the heap fragmentation glibc's moving threshold causes")
        lines.append("")
    engine = results.get("engine")
    if engine:
        lines.append("Rule engine alone: Monitor.ingest per step() (Summary objects, history, derived numbers, rules), "
                     "every=10, CPU ms per step")
        lines.append(f"  {'layers':>7} {'adapter layouts':>16} {'full layouts':>13}")
        for layers in (10, 100, 1000):
            a, f = engine[f"adapter/{layers}"], engine[f"full/{layers}"]
            lines.append(f"  {layers:>7} {a:>16.3f} {f:>13.3f}")
        a100 = engine["adapter/100"]
        verdict = _verdict(a100, ENGINE_TARGET_MS)
        ok &= verdict == "ok"
        lines.append(f"  100 layers: {a100:.3f} ms <= {ENGINE_TARGET_MS} ms {verdict}; growth 100 -> 1000 layers: "
                     f"{engine['adapter/1000'] / a100:.1f}x (linear: 10x)")
        lines.append("")
    long = results.get("long_run")
    if long:
        (s0, m0), (s1, m1) = long["points"][0], long["points"][-1]
        verdict = _verdict(m1 - m0, MEMORY_TARGET_MIB)
        ok &= verdict == "ok"
        lines.append(f"Long run, 100 layers: resident {m0:.0f} MiB after {s0:,} steps, {m1:.0f} MiB after {s1:,} "
                     f"steps: growth {m1 - m0:+.1f} MiB <= {MEMORY_TARGET_MIB:.0f} MiB {verdict} "
                     f"({long['series']} series, the longest keeps {long['longest']} points)")
    return "\n".join(lines), ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and steps (a first look)")
    parser.add_argument("--only", choices=["timing", "compiled", "memory", "engine", "long-run"], action="append",
                        help="run only these parts (repeatable)")
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all",
                        help="where the workloads run (all: the CPU, and CUDA when there is a device)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--native-malloc", action="store_true",
                        help="time with glibc's allocator as it comes, not pinned (see the module doc)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.rounds, args.block, args.warmup = (3, 20, 10) if quick else (7, 40, 20)
    args.memory_steps = 30 if quick else 120
    args.engine_steps = 100 if quick else 300
    args.long_steps = 50_000 if quick else 200_000
    torch.set_num_threads(1)
    devices = ["cpu"] if args.device == "cpu" else []
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        devices.append("cuda")
    if args.device == "all":
        devices.insert(0, "cpu")
    devices = list(dict.fromkeys(devices))
    if not devices:
        _say("no CUDA device: nothing to time on it")
    parts = set(args.only or ["timing", "compiled", "memory", "engine", "long-run"])
    results: dict = {"machine": machine(), "command": "python benchmarks/overhead.py" + (" --quick" if quick else "")
                     + (" --native-malloc" if args.native_malloc else "")}
    if not args.native_malloc and pin_allocator():
        results["allocator"] = "glibc's thresholds pinned"
    with tempfile.TemporaryDirectory(prefix="nnhealth-overhead-") as root:
        if "timing" in parts:
            results["timing"] = timing_section(devices, args, root)
        if "compiled" in parts:
            results.setdefault("timing", {}).update(timing_section(devices, args, root, compiled=True))
        if "memory" in parts:
            memory_section(devices, args, root, results.setdefault("timing", {}))
        if "engine" in parts:
            results["engine"] = engine_section(args)
        if "long-run" in parts:
            results["long_run"] = long_run_section(args)
    text, ok = render(results)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
