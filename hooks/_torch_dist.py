"""torch.distributed: every rank's statistics of a step combined in one collective.

Installed as the monitor's ``before_fetch``: the packed vectors (and the loss
and metric tensors) of a step are concatenated, gathered from every rank with
one ``all_gather``, and reduced field by field on the device. Data seen by
each rank (activations, inputs) are summed, so counts, moments, histograms
and per-unit activity add up (a unit is dead only if it is dead on every
rank), with min and max taken across ranks. Gradients, parameters and
updates are the same on every rank of a data-parallel job, so they are
averaged, as are the loss and metrics, which makes every rank reach the same
findings and stop together. Only rank 0 writes files and prints.

Every rank must send the same statistics in the same order. Vectors are sorted
by name, and a fingerprint of their names and layouts travels with the data:
if ranks disagree, the step's statistics become NaN (no false finding) and
the mismatch is reported.
"""
from __future__ import annotations

import hashlib
import logging

import numpy as np
import torch

from nnhealth.stats.backend import ops_for, start_fetch
from nnhealth.stats.summary import HEADER, MAX, MIN

#: roles that hold the same tensor on every rank of a data-parallel job
REPLICATED = frozenset({"gradient", "parameter", "update", "update_base"})
SUM, MEAN, LOW, HIGH = 0, 1, 2, 3


def initialised() -> bool:
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized()


def _fingerprint(structure) -> tuple[float, float]:
    """Two floats (exact in float64) identifying ``structure`` the same way in every process."""
    digest = hashlib.blake2b(repr(structure).encode(), digest_size=8).digest()
    n = int.from_bytes(digest, "little")
    return float(n & ((1 << 26) - 1)), float(n >> 38)


def _codes(items, scalars) -> list[int]:
    """How each element of the packed vector is reduced across ranks."""
    codes: list[int] = []
    for (role, _), _, layout, _ in items:
        if role in REPLICATED:
            codes += [MEAN] * layout.size
        else:
            part = [SUM] * layout.size
            part[MIN], part[MAX] = LOW, HIGH
            codes += part
    codes += [MEAN] * len(scalars)
    return codes


class RankReducer:
    """The monitor's ``before_fetch`` under torch.distributed (one collective per step)."""

    def __init__(self, monitor, group=None):
        self.monitor = monitor
        self.group = group
        self.off = False
        self._plans: dict = {}
        self._check = None  # the previous step's "ranks agreed" flag, on its way to the host

    def __call__(self, items, scalars):
        if self.off:
            return items, scalars
        try:
            self._read_check()
            return self._reduce(items, scalars)
        except Exception as e:
            if self.monitor.strict:
                raise
            self.off = True
            self.monitor._say_once("ddp-reduce", f"nnhealth: combining statistics across ranks failed ({e}); "
                                   "from now on each rank judges its own data", logging.ERROR, exc_info=True)
            return items, scalars

    def _device(self, vectors):
        dist = torch.distributed
        if dist.get_backend(self.group) == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return vectors[0].device

    def _plan(self, structure, items, scalars, device):
        key = (structure, device)
        plan = self._plans.get(key)
        if plan is None:
            host = torch.tensor(_codes(items, scalars), dtype=torch.int8)
            head = torch.tensor(_fingerprint(structure), dtype=torch.float64)
            if device.type == "cuda":  # pinned + non_blocking: no host synchronisation
                host, head = host.pin_memory(), head.pin_memory()
            plan = (host.to(device, non_blocking=True), head.to(device, non_blocking=True))
            if len(self._plans) > 16:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def _reduce(self, items, scalars):
        dist = torch.distributed
        world = dist.get_world_size(self.group)
        if world == 1:
            return items, scalars
        given = items
        items = sorted(items, key=lambda it: it[0])  # the same order on every rank
        names = sorted(scalars)
        vectors = [torch.as_tensor(vec) for _, _, _, vec in items] + [
            torch.as_tensor(scalars[n][1]).reshape(-1)[:1] for n in names]
        device = self._device(vectors)
        structure = (tuple((key, layout.hist, layout.units, layout.moments) for key, _, layout, _ in items),
                     tuple(names), len(HEADER))
        codes, head = self._plan(structure, items, scalars, device)
        flat = torch.cat([head] + [v.to(device=device, dtype=torch.float64).reshape(-1) for v in vectors])
        gathered = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat, group=self.group)
        every = torch.stack(gathered)                       # [world, 2 + n]
        agreed = (every[:, :2] == every[:1, :2]).all()
        data = every[:, 2:]
        out = torch.where(codes == SUM, data.sum(0), data.mean(0))
        out = torch.where(codes == LOW, data.amin(0), out)
        out = torch.where(codes == HIGH, data.amax(0), out)
        out = torch.where(agreed, out, torch.full_like(out, float("nan")))
        self._check = start_fetch(ops_for(agreed), [agreed.to(torch.float64).reshape(1)])
        reduced, at = {}, 0
        for key, ops, layout, vec in items:
            reduced[key] = (key, ops, layout, _like(out[at:at + layout.size], vec))
            at += layout.size
        combined = {}
        for n in names:
            ops, vec = scalars[n]
            combined[n] = (ops, _like(out[at:at + 1], vec))
            at += 1
        # back in the order they came: first seen is depth order for the layer rules
        return [reduced[key] for key, _, _, _ in given], combined

    def _read_check(self) -> None:
        """Report, once, a step on which the ranks sent different statistics (read when it is ready)."""
        check = self._check
        if check is None or not check.ready():
            return
        self._check = None
        (flag,) = check.result()
        if flag[0] == 0:
            self.monitor._say_once("ddp-mismatch", "nnhealth: ranks sent different statistics on one step (a layer "
                                   "or branch that runs on some ranks only?); that step's layer statistics are left "
                                   "out", logging.WARNING)


def _like(reduced: torch.Tensor, vec):
    """The reduced piece where the rank's own vector was: host rows (numpy, from CPU tensors) stay
    numpy arrays, gloo reduces on the CPU."""
    if isinstance(vec, np.ndarray):
        return reduced.cpu().numpy()
    return reduced.to(vec.device)


def install(monitor) -> RankReducer | None:
    """Make ``monitor`` combine ranks and write from rank 0 only, when torch.distributed is up."""
    if not initialised():
        return None
    monitor.is_writer = torch.distributed.get_rank() == 0
    current = monitor.before_fetch
    if isinstance(current, RankReducer):
        return current  # a second watched model shares the one collective
    reducer = RankReducer(monitor)
    monitor.before_fetch = reducer
    return reducer
