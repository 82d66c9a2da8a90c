"""The Monitor: what a training loop talks to.

Observations (``observe_*``) are summarised on the array's own device and
kept pending until :meth:`Monitor.step`, which copies everything of that step
to the host in one transfer, records it in the :class:`History`, runs the
rules and hands findings and numbers to the sinks. On an asynchronous device
the copy is consumed a step later, so the training loop never waits for it,
and unsampled steps' losses are fetched several at a time (:mod:`.inflight`).
"""
from __future__ import annotations

import logging
import math
import numbers
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from . import config, lifecycle
from .derived import derive_step
from .engine import Engine
from .finding import Finding, TrainingHealthWarning
from .history import History
from .inflight import MAX_HELD, InFlight, Outgoing
from .rules import RULES
from .sinks import ConsoleSink, FindingsFile, StepRecord, summary_table
from .sinks.console import install_default_handler
from .stats import Layout, Summary, get_kind, summarize
from .stats.backend import NUMPY, ops_for
from .stats.summary import merge_vectors

log = logging.getLogger("nnhealth")

#: other names users give the metrics the rules read
METRIC_ALIASES = {
    "acc": "train_acc", "accuracy": "train_acc", "train_accuracy": "train_acc",
    "val_accuracy": "val_acc", "valid_acc": "val_acc", "validation_accuracy": "val_acc",
    "valid_loss": "val_loss", "validation_loss": "val_loss",
}


class InputError(ValueError):
    """Bad input to the monitor's API: reported with its message, without a traceback."""


def _check_logdir(logdir) -> Path:
    if not isinstance(logdir, (str, os.PathLike)) or not str(logdir):
        raise ValueError(f"logdir must be a folder path (or None: no files), got {logdir!r}")
    path = Path(logdir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"logdir {str(path)!r} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".nnhealth-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"logdir {str(path)!r} is not writable: {e.strerror or e}") from None
    return path


def _check_sinks(sinks) -> None:
    if sinks is None:
        return
    if isinstance(sinks, (str, bytes)) or not isinstance(sinks, (list, tuple)):
        raise ValueError(f"sinks must be a list of sinks (nnhealth.sinks.Sink subclasses), got {sinks!r}")
    for i, sink in enumerate(sinks):
        missing = [m for m in ("write_step", "write_findings", "flush", "close") if not callable(getattr(sink, m, None))]
        if missing:
            raise ValueError(f"sinks[{i}] ({sink!r}) is not a sink: it has no {', '.join(missing)} "
                             "(subclass nnhealth.sinks.Sink, whose methods do nothing by default)")


def _is_number(value) -> bool:
    """A Python or numpy number (not a bool). Arrays and tensors are told apart by their shape before
    the ABC check, which costs microseconds on every step when the caches are cold."""
    kind = type(value)
    if kind is float or kind is int or isinstance(value, np.generic):
        return True
    return not hasattr(value, "shape") and isinstance(value, numbers.Number) and kind is not bool


def _plain_scalar(value) -> float | None:
    """``value`` as a float when it is a Python float or int, or a 0-d PyTorch tensor on the CPU (one
    call reads it: no detach, no numpy view); None for anything else (the general path reads it)."""
    kind = type(value)
    if kind is float or kind is int:
        return float(value)
    torch = sys.modules.get("torch")
    if torch is not None and kind is torch.Tensor and value.is_cpu and value.ndim == 0:
        number = value.tolist()
        return float(number) if not isinstance(number, complex) else None
    return None


def _device_scalar(value):
    """``(ops, value detached)`` when ``value`` is a 0-d floating-point PyTorch tensor on an accelerator
    (an unsampled step's loss, kept as it is: its copy to the host widens it with the others); None
    otherwise."""
    torch = sys.modules.get("torch")
    if torch is None or type(value) is not torch.Tensor or value.ndim or not value.is_floating_point():
        return None
    ops = ops_for(value)
    return (ops, value.detach()) if ops.is_async else None


class Sampling:
    """Whether the step under way is sampled, as one plain attribute that the hooks read on every call.
    An adapter that prepares sampled steps (the PyTorch one has compiled code run eagerly on them) listens:
    ``listeners`` are called with True as each sampled step begins, with False when sampling stops."""

    def __init__(self):
        self.on = True  # step 0 is sampled
        self.listeners: list = []

    def set(self, on: bool) -> None:
        if on or self.on:
            self.on = on
            self._tell(on)

    def let_go(self) -> None:
        """An error left the step: listeners let go of what they prepared (a training loop that stops
        there must not leave compiled code running eagerly); the step stays sampled."""
        self._tell(False)

    def _tell(self, on: bool) -> None:
        for listener in self.listeners:
            listener(on)


#: where sampled steps come at most this many steps apart, host steps are processed in batches (see
#: Monitor._arrived); sparser, a batch would hold unsampled steps back for little
HOST_BATCH_EVERY = 4
#: and while the vectors they hold stay under this many bytes (a large model's steps: smaller batches)
HOST_BATCH_BYTES = 16 << 20


class Monitor:
    """Watches one training run. See DESIGN.md for the API.

    >>> import numpy as np
    >>> mon = Monitor(every=1, console=False)
    >>> mon.observe_activation("fc1", np.zeros((64, 32)), kind="relu")
    >>> new = mon.step(0, loss=2.3)
    >>> mon.history.latest_summary("activation", "fc1").positive
    0.0
    >>> mon.close()
    """

    def __init__(self, logdir: str | os.PathLike | None = None, every: int = 10,
                 num_classes: int | None = None, *, thresholds: dict | None = None,
                 rules: list[str] | None = None, disable: list[str] | tuple = (),
                 window: int = 5, history_capacity: int = 1024, console: bool = True,
                 tensorboard: bool = True, strict: bool = False, sinks: list | None = None):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a whole number of steps >= 1, got {every!r}")
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                        or num_classes < 2):
            raise ValueError(f"num_classes must be a whole number >= 2 (or None), got {num_classes!r}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a whole number of sampled steps >= 1, got {window!r}")
        if isinstance(history_capacity, bool) or not isinstance(history_capacity, int) or history_capacity < window:
            raise ValueError(f"history_capacity must be a whole number of steps >= window ({window}), "
                             f"got {history_capacity!r}")
        _check_sinks(sinks)
        self.every = every
        self.num_classes = num_classes
        self.strict = strict
        self.thresholds = config.resolve_thresholds(thresholds)
        enabled = config.check_rule_ids(rules if rules is not None else list(RULES), "rules")
        disabled = set(config.check_rule_ids(disable, "disable"))
        self.logdir = _check_logdir(logdir) if logdir is not None else None
        self._history = History(capacity=history_capacity, window=window)
        self.engine = Engine(self.thresholds, [r for r in enabled if r not in disabled], strict=strict)
        self._findings: list[Finding] = []
        self.should_stop = False
        #: whether this process writes files and prints (False on non-zero ranks of a distributed job)
        self.is_writer = _is_rank_zero()
        #: ``before_fetch(items, scalars) -> (items, scalars)``: called with a step's packed device
        #: vectors ``[(key, ops, layout, vector)]`` and device scalars ``{name: (ops, vector)}`` (loss,
        #: metrics) before they are copied to the host (the distributed adapter reduces them here)
        self.before_fetch = None
        self._next = 0
        self.sampling = Sampling()
        #: unsampled steps whose loss is recorded and judged with the next step that does work (see _defer)
        self._deferred: list[tuple[int, dict]] = []
        self._first_loss: float | None = None
        self._pending: dict[tuple[str, str], list] = {}
        #: steps whose device values are on their way to the host (or held back on the device)
        self._flight = InFlight(every)
        #: steps whose numbers are all in host memory wait for this many to be processed together (0:
        #: each at once); see _arrived
        self._host_batch = MAX_HELD if every <= HOST_BATCH_EVERY else 0
        self._snapshots: dict[str, tuple[int, Any]] = {}
        self._said: set[str] = set()
        self._broken: set[tuple] = set()
        self._watchers: list = []
        self._closed = False
        if console:
            install_default_handler()
        self._sinks = list(sinks or [])
        if self.logdir is not None and self.is_writer:
            self._sinks.append(FindingsFile(self.logdir))
            if tensorboard:
                self._sinks.extend(self._tensorboard_sink())
        #: the sinks writing into logdir: a full disk or a deleted folder stops them all, said once
        self._file_sinks = self._sinks[len(sinks or []):]
        if console:  # last: files hold a finding before a warnings filter may turn it into an error
            self._sinks.append(ConsoleSink())
        lifecycle.register(self)

    def _tensorboard_sink(self) -> list:
        try:
            from .dashboards.tensorboard import TensorBoardSink
        except ImportError as e:  # tensorboard is a dependency; a broken install only loses the dashboard
            self._say_once("tb-import", f"nnhealth: TensorBoard files disabled ({e})")
            return []
        return [TensorBoardSink(self.logdir, every=self.every, num_classes=self.num_classes)]

    # -- sampling ------------------------------------------------------------
    def wants_layer_stats(self, step: int | None = None) -> bool:
        """True on the steps whose layer statistics are collected (every ``every`` steps)."""
        return ((self._next if step is None else step) % self.every) == 0

    @property
    def sampled(self) -> bool:
        """Whether the step under way (the one the next ``step()`` call closes) is sampled."""
        return self.sampling.on

    def _advance(self, step: int) -> None:
        self._next = step + 1
        self.sampling.set(not self._closed and self._next % self.every == 0)

    # -- failure handling ----------------------------------------------------
    def _say_once(self, key: str, message: str, level=logging.WARNING, exc_info=False) -> None:
        if key not in self._said:
            self._said.add(key)
            log.log(level, message, exc_info=exc_info)

    def _failed(self, part: tuple, error: Exception) -> None:
        """Report a failure once and disable only the part that failed (fail-open)."""
        if self.strict:
            raise error
        what = ":".join(str(p) for p in part)
        if part in (("step",), ("close",)):  # nothing to switch off: the next call is tried afresh
            self._say_once(what, f"nnhealth: {what} failed: {error}; its statistics are skipped (reported "
                           "once; later steps are still tried)", logging.ERROR, exc_info=True)
            return
        self._broken.add(part)
        # the manual API's bad input is the caller's to fix: its message says enough; an adapter's
        # hooks get no input from the user, so whatever they raise is a bug, shown with its traceback
        if isinstance(error, (InputError, ValueError, TypeError)) and part[0] not in ("hook", "watch"):
            self._say_once(what, f"nnhealth: {what}: {error}; this observation is skipped from now on",
                           logging.ERROR)
        else:
            self._say_once(what, f"nnhealth: {what} failed and is disabled for this run", logging.ERROR,
                           exc_info=True)

    # -- observing -----------------------------------------------------------
    def _add(self, role: str, where: str, ops, layout: Layout, vector) -> None:
        if getattr(vector, "is_meta", False):  # a torch meta tensor has a shape but no values
            return self._say_once(f"meta:{role}:{where}", f"nnhealth: {role} {where!r} is on the meta device "
                                  "(no values); skipped", logging.INFO)
        if ops.name == "torch" and ops.device.type == "cpu" and vector.dtype == ops.t.float64:
            # host memory already: kept as a numpy view, the step's end copies nothing
            ops, vector = NUMPY, vector.detach().numpy()
        key = (role, where)
        have = self._pending.get(key)
        if have is None:
            self._pending[key] = [ops, layout, vector]
        else:
            have[1], have[2] = merge_vectors(ops, have[2], have[1], vector, layout)

    @staticmethod
    def _name(name) -> str:
        if not isinstance(name, str) or not name:
            raise InputError(f"name must be a non-empty string, got {name!r}")
        return name

    @staticmethod
    def _array(x, what: str):
        ops = ops_for(x)
        if ops is NUMPY:
            try:
                x = np.asarray(x)
            except Exception as e:
                raise InputError(f"{what} is not an array: {e}") from None
            if x.dtype == object or x.dtype.kind not in "biufc":
                raise InputError(f"{what} has dtype {x.dtype}, expected numbers")
        return ops, x

    @staticmethod
    def _size(x) -> int:
        n = x.numel() if callable(getattr(x, "numel", None)) else x.size
        return int(n)

    def _observe(self, part: tuple, fn, *args, **kwargs) -> None:
        if self._closed or part in self._broken:
            return
        try:
            fn(*args, **kwargs)
        except Exception as e:  # fail-open: the training loop never sees our errors
            self._failed(part, e)

    def observe_activation(self, name: str, x, kind: str = "linear", unit_axis: int | None = None) -> None:
        """Output of an activation layer (kind: relu, leaky_relu, elu, tanh, sigmoid, linear, ...)."""
        self._observe(("activation", name), self._activation, name, x, kind, unit_axis)

    def _activation(self, name, x, kind, unit_axis):
        name = self._name(name)
        k = get_kind(kind)
        if not self.sampled:
            return
        ops, x = self._array(x, f"activation {name!r}")
        if self._size(x) == 0:
            return self._say_once(f"empty:{name}", f"nnhealth: activation {name!r} is empty; skipped", logging.INFO)
        self._history.meta.setdefault(name, {})["kind"] = k.name
        layout, vec = summarize(x, k, hist=True, units=True, unit_axis=unit_axis, ops=ops)
        self._add("activation", name, ops, layout, vec)

    def observe_gradient(self, name: str, grad) -> None:
        """Gradient of one parameter tensor, after backward."""
        self._observe(("gradient", name), self._tensor, "gradient", name, grad)

    def _tensor(self, role, name, x, **options):
        name = self._name(name)
        if not self.sampled:
            return
        ops, x = self._array(x, f"{role} {name!r}")
        if self._size(x) == 0:
            return self._say_once(f"empty:{role}:{name}", f"nnhealth: {role} {name!r} is empty; skipped", logging.INFO)
        self._history.meta.setdefault(name, {}).setdefault("ndim", int(x.ndim))
        layout, vec = summarize(x, "linear", ops=ops, **options)
        self._add(role, name, ops, layout, vec)
        return ops, x

    def observe_parameter(self, name: str, param, fan_in: int | None = None, unit_axis: int | None = None) -> None:
        """Value of a parameter now: initialisation checks, and the update ratio between two
        consecutive steps when :meth:`observe_update` is not used. ``unit_axis`` is the output-unit
        axis (numpy convention ``W[fan_in, fan_out]``: -1; PyTorch ``weight[out, in]``: 0)."""
        self._observe(("parameter", name), self._parameter, name, param, fan_in, unit_axis)

    def _parameter(self, name, param, fan_in, unit_axis):
        name = self._name(name)
        snap = self._snapshots.pop(name, None)
        if snap is not None and snap[0] == self._next - 1 and ("update", name) not in self._pending:
            _, x = self._array(param, f"parameter {name!r}")
            if tuple(x.shape) == tuple(snap[1].shape):
                self._force("update", name, x - snap[1])
                self._force("update_base", name, snap[1])
        if not self.sampled:
            return
        ops, x = self._array(param, f"parameter {name!r}")
        is_weight = x.ndim >= 2
        got = self._tensor("parameter", name, x, units=is_weight, moments=is_weight,
                           unit_axis=-1 if unit_axis is None else unit_axis)
        if got is None:
            return
        if fan_in is not None:
            self._history.meta[name]["fan_in"] = int(fan_in)
        if ("update", name) not in self._pending:
            # numpy and torch arrays change in place under the optimizer; jax arrays are immutable
            self._snapshots[name] = (self._next, x.copy() if ops is NUMPY else x if ops.name == "jax"
                                     else x.detach().clone())

    def _force(self, role, name, x):
        """Summarise on a step that is not sampled (the step right after one, for update ratios)."""
        ops, x = self._array(x, f"{role} {name!r}")
        layout, vec = summarize(x, "linear", ops=ops)
        self._add(role, name, ops, layout, vec)

    def observe_update(self, name: str, update, param=None) -> None:
        """The step actually applied to a parameter (``param`` is its value before the step)."""
        self._observe(("update", name), self._update, name, update, param)

    def _update(self, name, update, param):
        name = self._name(name)
        if not self.sampled:
            return
        got = self._tensor("update", name, update)
        if got is None or param is None:
            return
        _, u = got
        ops, p = self._array(param, f"parameter {name!r}")
        if tuple(p.shape) != tuple(u.shape):
            del self._pending[("update", name)]
            raise InputError(f"update {name!r} has shape {tuple(u.shape)} but its parameter has {tuple(p.shape)}")
        self._force("update_base", name, p)

    def observe_input(self, x, name: str = "input", unit_axis: int | None = None) -> None:
        """A batch of model inputs, for the preprocessing checks."""
        self._observe(("input", name), self._input, x, name, unit_axis)

    def _input(self, x, name, unit_axis):
        name = self._name(name)
        if not self.sampled:
            return
        ops, x = self._array(x, f"input {name!r}")
        dtype = str(x.dtype)
        if "int" in dtype or "bool" in dtype:
            return self._say_once(f"int-input:{name}", f"nnhealth: input {name!r} holds {dtype} values (ids or "
                                  "labels, not features); preprocessing checks skip it", logging.INFO)
        if self._size(x) == 0:
            return self._say_once(f"empty:input:{name}", f"nnhealth: input {name!r} is empty; skipped", logging.INFO)
        layout, vec = summarize(x, "linear", hist=True, units=True, moments=True, unit_axis=unit_axis, ops=ops,
                                host_vector=True)
        self._add("input", name, NUMPY if type(vec) is np.ndarray else ops, layout, vec)

    # -- stepping ------------------------------------------------------------
    def step(self, step: int, loss=None, **metrics) -> list[Finding]:
        """Close the step: record loss and metrics, run the rules; returns the findings new now.

        Those may be of earlier steps, judged now under their own step numbers: a device's steps
        once their copies arrive, unsampled losses with the next step that does work, and dense host
        steps (``every`` up to 4) 16 at a time; a non-finite or rising loss is judged at once.
        Reading ``findings`` or ``history`` judges the host steps that wait; :meth:`flush` and
        :meth:`close` judge every step."""
        if self._closed:
            return []
        try:
            return self._step(step, loss, metrics)
        except TrainingHealthWarning:
            self.sampling.let_go()
            raise  # the user turned findings into errors with the warnings module
        except Exception as e:
            if self.strict:
                self.sampling.let_go()
                raise
            self._failed(("step",), e)
            self._pending.clear()
            return []

    def _step(self, step, loss, metrics) -> list[Finding]:
        if type(step) is not int:
            if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
                raise InputError(f"step must be a whole number >= 0, got {step!r}")
            step = int(step)
        if step < 0:
            raise InputError(f"step must be a whole number >= 0, got {step!r}")
        if not metrics and self._next % self.every and not self._pending and self.before_fetch is None:
            # an unsampled step with its loss alone, the usual case: a host number (see _unsampled), or
            # a tensor on an accelerator (see _hold)
            value = _plain_scalar(loss) if not self._flight else None
            if value is not None:
                return self._unsampled(step, {"loss": value})
            if not self._deferred:
                held = _device_scalar(loss)
                if held is not None:
                    return self._hold(step, held)
        sampled = self.sampled
        values = {}
        if loss is not None:
            values["loss"] = loss
        for key, value in metrics.items():
            if value is None:
                continue
            values[METRIC_ALIASES.get(key, key)] = value
        if "loss" not in values and "train_loss" in values:
            values["loss"] = values.pop("train_loss")
        numbers_now, device = {}, {}
        for key, value in values.items():
            if _is_number(value):
                numbers_now[key] = float(value)
            else:
                ops = ops_for(value)
                if ops is NUMPY:
                    arr = np.asarray(value, dtype=np.float64)
                    if arr.size != 1:
                        raise InputError(f"{key} must be a single number, got an array of shape {arr.shape}")
                    numbers_now[key] = float(arr.reshape(-1)[0])
                elif getattr(value, "is_meta", False):
                    self._say_once(f"meta:{key}", f"nnhealth: {key} is on the meta device (no value); skipped",
                                   logging.INFO)
                elif ops.name == "torch" and not ops.is_async and self.before_fetch is None:
                    # a CPU tensor holds its value already: reading it waits for nothing
                    numbers_now[key] = _cpu_scalar(ops, value)
                else:
                    device[key] = (ops, ops.as_float(value).reshape(-1)[:1])  # detached, on its device
        pending, self._pending = self._pending, {}
        flight = self._flight
        if not pending and not device and not flight:  # an unsampled step: nothing to copy
            if not sampled:
                return self._unsampled(step, numbers_now)
            self._advance(step)
            return self._settle() + self.ingest(step, numbers_now, {}, sampled=sampled)
        settled = self._settle()
        items = [(key, ops, layout, vec) for key, (ops, layout, vec) in pending.items()]
        if (items or device) and self.before_fetch is not None:
            items, device = self.before_fetch(items, device)
        out = Outgoing(step, sampled, numbers_now, items, device)
        self._advance(step)
        if (not items and self.before_fetch is None and (device or flight.held)
                and all(ops.is_async for ops, _ in device.values())):
            # scalars on an accelerator alone (an unsampled step's loss), or host numbers behind such
            # steps: left on the device, fetched with the next copy (see inflight)
            if flight.hold(out):
                flight.send()
        else:
            flight.send(out)  # one transfer per array library: the held steps' scalars and this step's
        return settled + self._arrived(wait=False, hold=not self._urgent(numbers_now))

    def _arrived(self, wait: bool, hold: bool = False) -> list[Finding]:
        """Process the steps whose copies are done (all of them when ``wait``), oldest first.

        With ``hold``, where sampled steps are dense (``every`` up to :data:`HOST_BATCH_EVERY`) and every
        queued step's numbers are in host memory, they wait until :data:`~.inflight.MAX_HELD` are queued
        (or their vectors reach :data:`HOST_BATCH_BYTES`), then are processed one after the other: one
        step at a time, between the training's own kernels, the history and the rules run with the
        interpreter's caches cold, and cost a third more than in a batch. Their findings are the same,
        judged up to that many steps later (as those of a device's steps are, whose copies arrive
        later)."""
        flight = self._flight
        if (hold and not wait and self._host_batch and not flight.copying and len(flight.queue) < self._host_batch
                and flight.host_bytes < HOST_BATCH_BYTES):
            return []
        new = []
        for entry in flight.arrived(wait=wait):
            new.extend(self._process(*entry))
        return new

    def _urgent(self, values: dict) -> bool:
        """Whether host numbers must be judged at once, not held (see _defer, _arrived): a value that is
        not finite (loss-nan), a loss above the first one (loss-exploding's reference), or the first loss."""
        first = self._first_loss
        if first is None:
            return True
        for name, value in values.items():
            if not math.isfinite(value) or (name == "loss" and value > first):
                return True
        return False

    def _release(self) -> None:
        """Process the host steps held for a batch (see _arrived) and the deferred losses: what the
        history and the findings show includes every step stepped (fail-open, like :meth:`step`)."""
        self._settle()
        if self._host_batch and self._flight.queue and not self._flight.copying:
            self._fail_open(lambda: self._arrived(wait=True))

    def _fail_open(self, work) -> None:
        """Run ``work()`` as :meth:`step` runs a step: the user's warnings-as-errors go up, any other error
        is reported (raised under ``strict``) and the training goes on."""
        try:
            work()
        except TrainingHealthWarning:
            raise
        except Exception as e:
            if self.strict:
                raise
            self._failed(("step",), e)

    def _unsampled(self, step: int, values: dict) -> list[Finding]:
        """A step with host numbers alone and nothing in flight. Every unsampled step takes this path,
        between the training's own kernels, with the interpreter's caches cold: each call here costs
        several microseconds, so it makes few (the loss of a small model's step is read in one)."""
        self._advance(step)
        if self._defer(step, values):
            return []
        return self._settle() + self.ingest(step, values, {}, sampled=False)

    def _hold(self, step: int, loss: tuple) -> list[Finding]:
        """An unsampled step with nothing to do but its loss (``(ops, tensor)``), on an accelerator: left
        there and fetched with the next copy (see inflight), as the general path of :meth:`_step` does,
        in a few calls (on a GPU host each costs more than a small step's launches do)."""
        self._advance(step)
        flight = self._flight
        if flight.hold(Outgoing(step, False, {}, [], {"loss": loss})):
            flight.send()
        return self._arrived(wait=False)

    def _defer(self, step: int, values: dict) -> bool:
        """Keep an unsampled step's numbers for the next step that does work, when they cannot make a
        rule say anything that matters now. Judged at once: a value that is not finite (loss-nan), a
        loss above the first one (loss-exploding's reference; healthy losses stay below it), and
        the steps before the first loss. Deferred steps are ingested in order, under their own step
        numbers, so findings are the same; they are just judged a few steps later (at most ``every``
        and :data:`~.inflight.MAX_HELD`), in one batch,
        while the interpreter's caches are warm (one step at a time, between the training's own
        kernels, each costs several times more)."""
        if len(self._deferred) >= self._flight.limit or self._urgent(values):  # limit: min(every, MAX_HELD)
            return False
        self._deferred.append((step, values))
        return True

    def _settle(self) -> list[Finding]:
        """Ingest the deferred steps, oldest first (fail-open, like :meth:`step`)."""
        if not self._deferred:
            return []
        deferred, self._deferred = self._deferred, []
        new = []

        def ingest_all():
            for step, values in deferred:
                new.extend(self.ingest(step, values, {}, sampled=False))

        self._fail_open(ingest_all)
        return new

    @property
    def history(self) -> History:
        """Everything recorded so far (deferred losses and held host steps included: reading it
        processes them)."""
        self._release()
        return self._history

    @property
    def findings(self) -> list[Finding]:
        """Every finding so far, in order (deferred losses and held host steps are judged first)."""
        self._release()
        return self._findings

    def _process(self, step, sampled, values, transfers) -> list[Finding]:
        summaries: dict[tuple[str, str], Summary] = {}
        for keys, scalars, transfer in transfers:
            host = transfer.result()
            for (key, layout, _), vec in zip(keys, host):
                summaries[key] = Summary(layout, vec)
            for (name, _), vec in zip(scalars, host[len(keys):]):
                values[name] = float(vec[0])
        return self.ingest(step, values, summaries, sampled=sampled)

    def ingest(self, step: int, values: dict, summaries: dict, sampled: bool = True,
               meta: dict | None = None) -> list[Finding]:
        """Record one step's host-side numbers and run the rules: the path every step takes.

        ``values``: {name: float} (loss, metrics); ``summaries``: {(role, where): Summary}
        (``update_base`` entries are the parameter before an update). ``nnhealth check`` replays
        a recorded run through this same method, so thresholds can be changed after the fact.
        """
        for name, facts in (meta or {}).items():
            self._history.meta.setdefault(name, {}).update(facts)
        h = self._history
        if self._first_loss is None and "loss" in values:
            self._first_loss = values["loss"]
        scalars: dict[tuple[str | None, str], float] = {}
        for name, value in values.items():
            scalars[(None, name)] = value
        if summaries:
            h.record_summaries(step, summaries)
            scalars.update(derive_step(summaries, h.meta))
        h.record_many(step, scalars)
        h.last_step = step
        new = self.engine.evaluate(h, step, self.num_classes, sampled=sampled)
        record = StepRecord(step=step, scalars=scalars, summaries=dict(summaries),
                            meta={w: h.meta.get(w, {}) for _, w in summaries})
        for f in new:
            self._findings.append(f)
            if f.severity == "critical":
                self.should_stop = True
        if self.is_writer:
            for sink in list(self._sinks):
                self._to_sink(sink, "write_step", record)
                if new:
                    self._to_sink(sink, "write_findings", new)
        return new

    def _to_sink(self, sink, method: str, *args) -> None:
        try:
            getattr(sink, method)(*args)
        except TrainingHealthWarning:
            raise
        except Exception as e:
            if self.strict:
                raise
            self._sinks.remove(sink)
            name = type(sink).__name__
            if isinstance(e, OSError) and sink in self._file_sinks:
                self._say_once("files", f"nnhealth: writing files stopped ({self.logdir}: {e.strerror or e}); "
                               "console warnings continue", logging.ERROR)
            elif isinstance(e, OSError):
                self._say_once(f"sink:{name}", f"nnhealth: writing files stopped ({name}: {e}); "
                               "console warnings continue", logging.ERROR)
            else:
                self._say_once(f"sink:{name}", f"nnhealth: {name} failed and is disabled", logging.ERROR,
                               exc_info=True)
            if method != "close":  # release its files and threads; it was said once, the rest is noise
                try:
                    sink.close()
                except Exception:
                    log.debug("nnhealth: closing the failed %s failed too", name, exc_info=True)

    # -- frameworks ----------------------------------------------------------
    def watch(self, model, optimizer=None) -> "Monitor":
        """Attach to a PyTorch module (and optionally its optimizer); returns the monitor."""
        from .hooks import torch as torch_hooks

        self._watchers.append(torch_hooks.attach(self, model, optimizer))
        return self

    # -- closing -------------------------------------------------------------
    def flush(self) -> list[Finding]:
        """Process every step still in flight (asynchronous copies, deferred losses) and flush the files."""
        new = self._settle()
        self._flight.send()
        new += self._arrived(wait=True)
        for sink in list(self._sinks):
            self._to_sink(sink, "flush")
        return new

    def close(self) -> None:
        """Flush files, print the summary, remove every hook. Safe to call twice."""
        if self._closed:
            return
        lifecycle.unregister(self)
        try:
            self.flush()
        except Exception as e:
            if self.strict:
                raise
            self._failed(("close",), e)
        self._closed = True
        self.sampling.set(False)
        for w in self._watchers:
            try:
                w.close()
            except Exception:
                log.error("nnhealth: removing hooks failed", exc_info=True)
        self._watchers.clear()
        self._snapshots.clear()
        if self.is_writer:
            for sink in list(self._sinks):
                if isinstance(sink, ConsoleSink):
                    level = logging.WARNING if any(f.severity != "info" for f in self._findings) else logging.INFO
                    log.log(level, summary_table(self._findings))
                self._to_sink(sink, "close")

    def __enter__(self) -> "Monitor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Monitor(logdir={str(self.logdir) if self.logdir else None!r}, every={self.every}, "
                f"findings={len(self._findings)}, should_stop={self.should_stop})")


def _cpu_scalar(ops, value) -> float:
    """The first value of a CPU tensor, read through numpy (not ``.item()``, which on a device would be
    a synchronisation, and which the tests that guard against one would flag)."""
    t = value.detach()
    if t.dtype not in (ops.t.float32, ops.t.float64):
        t = ops.as_float(t)
    return float(t.numpy().reshape(-1)[0])


def _is_rank_zero() -> bool:
    """False on the non-zero ranks of an initialised torch.distributed job (torch is not imported)."""
    dist = getattr(sys.modules.get("torch"), "distributed", None)
    try:
        return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
    except Exception:  # no torch, or a half-initialised group: write, as a single process would
        return True
