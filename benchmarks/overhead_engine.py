"""The host side on its own: the rule engine's time per step, and memory over a long run.

Each ``step()`` of a watched training ends in :meth:`nnhealth.Monitor.ingest`:
the step's packed vectors become :class:`~nnhealth.stats.Summary` objects,
derived numbers are recorded in the history, and the rules run. Here that
path is fed prebuilt vectors for ``layers`` layers, each with an activation,
a gradient, a parameter and an update (the layouts the PyTorch adapter
produces: activations with histogram and per-unit counts, the rest header
rows; parameters with per-unit sums at watch time), sampled every 10 steps
like the default. ``layouts="full"`` instead gives every sampled step
parameters with per-unit sums and moments (what the manual API computes for
numpy weights), the heavier case.
"""
from __future__ import annotations

import gc
import time

import numpy as np

from nnhealth import Monitor
from nnhealth.stats import Summary, summarize

#: units per layer, samples per batch
UNITS, BATCH = 256, 64
#: distinct vectors per role cycled through (fresh Summary objects are made every step regardless)
POOL = 4


def _vectors(rng, layouts: str) -> dict:
    """Packed host vectors per role, POOL of each: {role: [(layout, vector)]}."""
    out: dict = {"activation": [], "gradient": [], "parameter": [], "parameter_units": [], "update": []}
    for _ in range(POOL):
        w = rng.standard_normal((UNITS, UNITS)) / np.sqrt(UNITS)
        out["activation"].append(summarize(np.maximum(rng.standard_normal((BATCH, UNITS)), 0), "relu",
                                           hist=True, units=True))
        out["gradient"].append(summarize(w * 1e-2))
        out["parameter"].append(summarize(w))
        out["parameter_units"].append(summarize(w, units=True, moments=True, unit_axis=0))
        out["update"].append(summarize(w * 1e-3))
    if layouts == "full":
        out["parameter"] = out["parameter_units"]
    return out


class EngineFeed:
    """Steps a Monitor's host path as a watched training of ``layers`` layers would."""

    def __init__(self, layers: int, layouts: str = "adapter", every: int = 10, seed: int = 0):
        self.layers, self.every = layers, every
        self.vectors = _vectors(np.random.default_rng(seed), layouts)
        self.monitor = Monitor(every=every, console=False, num_classes=10)
        self.names = [(f"layer{i}", f"layer{i}.weight") for i in range(layers)]
        meta = self.monitor.history.meta
        for act, weight in self.names:
            meta[act] = {"kind": "relu"}
            meta[weight] = {"ndim": 2, "fan_in": UNITS}
        self.step = 0

    def _summaries(self) -> dict:
        k = (self.step // self.every) % POOL
        v = self.vectors
        out = {}
        parameter = v["parameter_units"] if self.step == 0 else v["parameter"]
        for act, weight in self.names:
            out[("activation", act)] = Summary(*v["activation"][k])
            out[("gradient", weight)] = Summary(*v["gradient"][k])
            out[("parameter", weight)] = Summary(*parameter[k])
            out[("update", weight)] = Summary(*v["update"][k])
            out[("update_base", weight)] = Summary(*parameter[k])
        return out

    def advance(self, steps: int) -> None:
        mon = self.monitor
        for _ in range(steps):
            s = self.step
            sampled = s % self.every == 0
            loss = 2.3 * 0.999 ** s
            mon.ingest(s, {"loss": loss, "train_acc": 0.5}, self._summaries() if sampled else {}, sampled=sampled)
            self.step += 1

    def close(self) -> None:
        self.monitor.close()


def engine_ms_per_step(layers: int, layouts: str = "adapter", steps: int = 300, warmup: int = 100,
                       repeats: int = 3) -> float:
    """Best of ``repeats`` (CPU time, ms per ``step()``) over ``steps`` steps, after ``warmup`` steps.

    The CPU time of this thread, which runs every ``step()`` from start to end (the engine starts no
    thread): the process's CPU time would also count the BLAS worker threads spinning for a tenth of
    a second after the matrix products that build the vectors, which belongs to no step and, in the
    short ``--quick`` runs, doubled the figure for 100 layers.
    """
    feed = EngineFeed(layers, layouts)
    feed.advance(warmup)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.thread_time()
        feed.advance(steps)
        best = min(best, (time.thread_time() - t0) / steps * 1e3)
    feed.close()
    return best


def resident_mib() -> float:
    """Current resident set of this process in MiB (Linux /proc; the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def long_run_memory(layers: int = 100, checkpoints=(10_000, 200_000), progress=None) -> dict:
    """Resident memory of one Monitor stepped through ``checkpoints`` steps with ``layers`` layers:
    {"points": [(steps, MiB)], "series": series kept, "longest": points in the longest series}."""
    feed = EngineFeed(layers)
    out = []
    for target in checkpoints:
        while feed.step < target:
            feed.advance(min(5000, target - feed.step))
            if progress:
                progress(feed.step, checkpoints[-1])
        gc.collect()
        out.append((feed.step, resident_mib()))
    history = feed.monitor.history
    lengths = [len(history.series(where, stat)) for where, stat in history.keys()]
    feed.close()
    return {"points": out, "series": len(lengths), "longest": max(lengths)}
