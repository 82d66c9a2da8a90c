"""nnhealth demo: train a small network with one classic mistake and watch nnhealth diagnose it."""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

NAME = "demo"
HELP = "train a small network (plain numpy) with one classic mistake and watch the diagnosis"
DESCRIPTION = """Train a small fully-connected network on synthetic data, with one classic mistake
from the "Training Neural Networks" lecture injected, while nnhealth watches it.
Warnings appear as training runs; a summary table closes the run. The records
(TensorBoard events and findings.jsonl) are written under --logdir, ready for
'nnhealth check', 'nnhealth report' and 'tensorboard --logdir'."""


def _faults():
    from ..demo.network import FAULTS

    return FAULTS


def add_arguments(p):
    from ..demo.network import FAULTS

    lines = "\n".join(f"  {name:20} {spec.description}" for name, spec in FAULTS.items())
    p.epilog = f"faults:\n{lines}"
    p.add_argument("--fault", default="small-init", choices=list(FAULTS),
                   help="the mistake to inject (default: small-init, the lecture's deep tanh network "
                        "with 0.01*randn weights); 'none' trains the healthy network")
    p.add_argument("--framework", default="numpy", choices=["numpy", "torch"],
                   help="train the numpy network (default) or the same model in PyTorch")
    p.add_argument("--logdir", default=None,
                   help="where to write the records (default: runs/demo, or runs/search with --search; a previous "
                        "demo's files there are replaced)")
    p.add_argument("--every", type=int, default=5, help="layer statistics every N steps (default: 5)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: per fault)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--search", action="store_true",
                   help="instead of one run: a coarse-to-fine learning-rate search in log space with Optuna, "
                        "diverging trials pruned early (needs nnhealth[tune]; records under runs/search)")


def _fresh_logdir(path: Path) -> Path:
    """A previous demo's files would mix with this run's in TensorBoard: clear them, nothing else."""
    if path.is_dir():
        ours = {"findings.jsonl"}
        entries = list(path.iterdir())
        if all(e.name in ours or e.name.startswith("events.out.tfevents") for e in entries):
            for e in entries:
                e.unlink() if e.is_file() else shutil.rmtree(e)
    return path


def _single_threaded_blas():
    """The demo's matrices are small: one BLAS thread is several times faster than two competing."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def run(args) -> int:
    if args.search:
        if args.logdir is None:
            args.logdir = "runs/search"
        from ..demo.search import run_search

        with _single_threaded_blas():
            return run_search(args)
    if args.logdir is None:
        args.logdir = "runs/demo"
    with _single_threaded_blas():
        return _run(args)


def _run(args) -> int:
    from .. import Monitor

    faults = _faults()
    spec = faults[args.fault]
    if args.framework == "torch":
        try:
            from ..demo import torch_network as network
        except ImportError as e:
            print(f"nnhealth demo: --framework torch needs PyTorch ({e}); pip install 'nnhealth[torch]'",
                  file=sys.stderr)
            return 2
    else:
        from ..demo import network
    logdir = _fresh_logdir(Path(args.logdir))
    expected = ", ".join(spec.symptoms) or "no warning"
    print(f"nnhealth demo: fault '{spec.name}' ({args.framework}) - {spec.description}")
    print(f"expected: {expected}\n", flush=True)
    start = time.perf_counter()
    with Monitor(logdir=logdir, every=args.every, num_classes=spec.fault.num_classes) as mon:
        result = network.train(spec, observer=mon, seed=args.seed, steps=args.steps)
    sys.stderr.flush()
    if not any(f.severity != "info" for f in mon.findings):
        print("nnhealth: no warnings - this run looks healthy.")
    stop = f", stopped early ({result.stopped})" if result.stopped else ""
    print(f"\ntrained {result.steps} steps in {time.perf_counter() - start:.1f}s{stop}: "
          f"train accuracy {result.train_acc:.2f}, validation accuracy {result.val_acc:.2f}")
    print(f"records in {logdir}/ - next: nnhealth check {logdir}  |  nnhealth report {logdir}  |  "
          f"tensorboard --logdir {logdir}")
    return 0
