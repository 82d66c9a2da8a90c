"""Detection benchmark: real faulty and healthy trainings, and what nnhealth says about them.

Each case is one real training run (numpy or PyTorch, synthetic data made
here, a few seconds on one core): a healthy recipe, or that recipe with one
classic fault injected. Every run is watched by a fresh ``Monitor`` and
checked independently (plain numpy/PyTorch) that its fault is real. The
report is a table per case and the summary: recall on fault runs,
false-alarm rate on healthy runs, median detection delay.

    python benchmarks/detection.py                      # every case, seeds 0 1 2
    python benchmarks/detection.py --cases 'torch/*' --seeds 0
    python benchmarks/detection.py --json results.json  # the runs and the summary as JSON
    python benchmarks/detection.py --list               # the cases, their twins and expected symptoms

Exit status: 0 when the targets are met, 1 when not, 2 on a usage error.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.cases import CASES, Case, Result, run  # noqa: E402
from benchmarks.detection_score import Score, score, summarize  # noqa: E402
from benchmarks.detection_table import summary, table  # noqa: E402


def select(patterns: list[str] | None, fast: bool = False) -> list[Case]:
    """Cases whose name matches a pattern (shell-style, or a plain substring), in catalogue order."""
    chosen = []
    for c in CASES.values():
        if fast and not c.fast:
            continue
        if patterns and not any(fnmatch.fnmatchcase(c.name, p) or p in c.name for p in patterns):
            continue
        chosen.append(c)
    return chosen


def _run_named(name: str, seed: int) -> Result:
    return run(CASES[name], seed)


def run_all(cases: list[Case], seeds: list[int], jobs: int = 1, progress=None) -> list[Result]:
    """Every case on every seed; ``jobs`` > 1 runs them in that many worker processes."""
    tasks = [(c.name, seed) for c in cases for seed in seeds]
    results: list[Result] = []

    def done(r: Result) -> None:
        results.append(r)
        if progress is not None:
            progress(r, len(results), len(tasks))

    if jobs <= 1:
        for name, seed in tasks:
            done(_run_named(name, seed))
    else:
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            for future in [pool.submit(_run_named, name, seed) for name, seed in tasks]:
                done(future.result())
    order = {task: i for i, task in enumerate(tasks)}
    return sorted(results, key=lambda r: order[(r.case.name, r.seed)])


def _number(x: float) -> float | None:
    """NaN (a rate over zero runs) as JSON null, which every reader accepts."""
    return None if x != x else x


def as_json(scores: list[Score], seeds: list[int], wall: float) -> dict:
    """Every run (its findings, its score, its independent check) and the summary, JSON-ready."""
    s = summarize(scores)
    runs = []
    for sc in scores:
        r, c = sc.result, sc.result.case
        runs.append({
            "case": c.name, "framework": c.framework, "about": c.about, "twin": c.twin, "seed": r.seed,
            "expected": list(c.expected), "also": list(c.also), "init_fault": c.init,
            "steps": c.steps, "ran": r.ran, "seconds": round(r.seconds, 3),
            "detected": sc.detected, "first_step": sc.first, "delay": sc.delay,
            "false_alarms": [f.to_dict() for f in sc.false_alarms],
            "findings": [f.to_dict() for f in r.findings],
            "check": {"ok": r.proof.ok, "detail": r.proof.detail},
        })
    return {"seeds": seeds, "wall_seconds": round(wall, 1), "runs": runs, "summary": {
        "fault_runs": s.fault_runs, "detected": s.detected, "recall": _number(s.recall),
        "healthy_runs": s.healthy_runs, "healthy_runs_with_false_alarm": s.noisy_healthy,
        "false_alarm_rate": _number(s.false_alarm_rate), "median_delay": _number(s.median_delay),
        "init_runs": s.init_runs, "init_found_in_time": s.init_in_time,
        "unexplained_alarms_on_fault_runs": s.fault_alarms, "checks_ok": s.proofs, "runs": s.runs,
        "symptoms_found_where_expected": s.covered, "symptoms_never_found": s.uncovered,
        "missed": s.missed, "late": s.late, "noisy_healthy": s.noisy, "targets_met": s.targets_met,
        "training_seconds": round(s.seconds, 1)}}


def listing(cases: list[Case]) -> str:
    """The catalogue: each case, what it is, its twin, and the symptoms that count as finding it."""
    lines = []
    for c in cases:
        kind = "healthy" if c.healthy else f"fault in {c.twin}"
        lines.append(f"{c.name:28} {c.framework:5} {c.steps:4} steps  {kind}")
        lines.append(f"{'':28} {c.about}")
        if not c.healthy:
            also = f"; also: {', '.join(c.also)}" if c.also else ""
            lines.append(f"{'':28} expected: {', '.join(c.expected)}{also}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/detection.py", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds to run every case with")
    parser.add_argument("--cases", nargs="+", metavar="PATTERN",
                        help="only cases matching one of these shell patterns or substrings (e.g. 'torch/*' init)")
    parser.add_argument("--fast", action="store_true", help="only the fast subset the test suite runs")
    parser.add_argument("--json", metavar="PATH",
                        help="also write every run and the summary as JSON ('-': to stdout, instead of the table)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (each run stays single-threaded)")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args(argv)
    cases = select(args.cases, args.fast)
    if not cases:
        parser.error(f"no case matches {args.cases}; see --list")
    if args.list:
        print(listing(cases))
        return 0

    def progress(r: Result, i: int, n: int) -> None:
        print(f"[{i}/{n}] {r.case.name} seed {r.seed}: {r.seconds:.1f} s", file=sys.stderr, flush=True)

    start = time.perf_counter()
    results = run_all(cases, args.seeds, jobs=args.jobs, progress=progress)
    wall = time.perf_counter() - start
    scores = [score(r) for r in results]
    totals = summarize(scores)
    if args.json:
        text = json.dumps(as_json(scores, args.seeds, wall), indent=1)
        if args.json == "-":
            print(text)
            return 0 if totals.targets_met else 1
        Path(args.json).write_text(text + "\n")
    print(table(scores))
    print()
    print(summary(totals, args.seeds, wall))
    return 0 if totals.targets_met else 1


if __name__ == "__main__":
    sys.exit(main())
