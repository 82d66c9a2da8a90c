"""What watching does to a compiled model: its graphs, its graph breaks, and its time per step.

A compiled model should run the graph it has unwatched on the steps nnhealth
does not sample: no graph break, no extra graph. This trains the small MLP of
the overhead benchmark's compiled part (:mod:`overhead_workloads`), compiled
with inductor after ``mon.watch``, once unwatched and once per sampling
interval, each in a compiler state of its own (``torch._dynamo.reset()``),
and prints the time per step, the graphs compiled and the graph breaks seen.
``every=10**9`` samples step 0 alone: its time per step is what an unsampled
step costs. Variants run one after the other (not interleaved), the plain
loop first and again last, so the two plain rows show the drift of the run.

    python benchmarks/compiled_graphs.py            # about a minute on 2 CPU cores
    python benchmarks/compiled_graphs.py --steps 1000
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.overhead_workloads import WORKLOADS, _base, _compiled, _nnhealth  # noqa: E402

#: row label -> the Monitor's ``every`` (None: not watched)
ROWS = {"plain": None, "every=10**9": 10**9, "every=10": 10, "every=1": 1, "plain, again": None}


def measure(workload: str, every: int | None, steps: int, warmup: int) -> dict:
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    run = _base(WORKLOADS[workload], torch.device("cpu"), f"every={every}")
    if every is not None:
        run = _nnhealth(run, tempfile.mkdtemp(prefix="compiled-graphs-"), every=every)
    run = _compiled(run)
    for _ in range(warmup):
        run.step()
    run.flush()
    t0 = time.perf_counter()
    for _ in range(steps):
        run.step()
    run.flush()
    ms = (time.perf_counter() - t0) / steps * 1e3
    out = {"ms_per_step": ms, "graphs": counters["stats"].get("unique_graphs", 0),
           "breaks": sum(counters["graph_break"].values()), "seen": ""}
    mon = run.extra.get("monitor")
    if mon is not None:  # the activations of the latest sampled step were seen
        last = (run.steps - 1) // every * every
        names = mon.history.names("activation")
        latest = mon.history.summaries("activation", names[0])[-1][0] if names else None
        out["seen"] = "yes" if latest == last else f"no (latest: {latest})"
    run.close()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="small", choices=sorted(WORKLOADS))
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=30)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"{WORKLOADS[args.workload].name}, compiled (inductor) after watch(); torch {torch.__version__}, "
          f"{args.steps} steps after {args.warmup}")
    print(f"  {'':<14} {'ms/step':>8} {'graphs':>7} {'breaks':>7}  latest sampled step seen")
    for label, every in ROWS.items():
        r = measure(args.workload, every, args.steps, args.warmup)
        print(f"  {label:<14} {r['ms_per_step']:>8.3f} {r['graphs']:>7} {r['breaks']:>7}  {r['seen']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
