"""Keras 3: HealthCallback in model.fit, on the torch backend (and, in a subprocess, on every
other backend installed), catching the faults in real training runs."""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

if "keras" not in sys.modules:
    os.environ["KERAS_BACKEND"] = "torch"
keras = pytest.importorskip("keras", reason="Keras 3 is not installed (pip install 'nnhealth[keras]')")
if keras.backend.backend() != "torch":
    pytest.skip(f"keras was imported earlier with the {keras.backend.backend()} backend", allow_module_level=True)

from nnhealth import Monitor  # noqa: E402
from nnhealth.hooks.keras import HealthCallback  # noqa: E402

from conftest import fired, warnings_of  # noqa: E402

#: Keras' own torch backend converts its logs with np.array(tensor), which numpy 2 warns about
pytestmark = [pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept:DeprecationWarning"),
              pytest.mark.usefixtures("one_torch_thread")]


def data(n=1024, d=20, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    return x, (x @ rng.normal(size=(d, classes))).argmax(1)


def mlp(lr, bias=0.0, d=20):
    keras.utils.set_random_seed(0)
    init = keras.initializers.Constant(bias)
    model = keras.Sequential([
        keras.Input((d,)),
        keras.layers.Dense(64, activation="relu", bias_initializer=init, name="hidden1"),
        keras.layers.Dense(64, activation="relu", bias_initializer=init, name="hidden2"),
        keras.layers.Dense(3, name="logits"),
    ], name="mlp")
    model.compile(optimizer=keras.optimizers.SGD(lr), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def fit(model, callback, epochs=3, batch_size=32):
    x, y = data()
    return model.fit(x, y, batch_size=batch_size, epochs=epochs, validation_split=0.2, verbose=0,
                     callbacks=[callback])


def test_healthy_run_has_no_warnings():
    x, _ = data()
    mon = Monitor(every=5, num_classes=3, console=False)
    history = fit(mlp(0.05), HealthCallback(mon, sample=x[:256]))
    mon.close()
    assert len(history.history["loss"]) == 3 and not mon.should_stop
    assert warnings_of(mon) == []
    h = mon.history
    assert h.names("activation") == ["hidden1", "hidden2"]  # the output layer is the loss's business
    assert h.meta["hidden1"]["kind"] == "relu"
    assert h.latest_summary("activation", "hidden1").samples == 256
    assert {"mlp/hidden1/kernel", "mlp/logits/bias"} <= set(h.names("update"))
    ratio = h.values("mlp/hidden2/kernel", "update/ratio")
    assert len(ratio) > 5 and np.all((ratio > 1e-5) & (ratio < 0.1))
    assert len(h.values(None, "val_loss")) == 3 and len(h.values(None, "val_acc")) == 3
    assert h.values(None, "train_acc")[-1] > 0.6
    assert h.names("input") == ["input"]


def test_learning_rate_far_too_high_stops_training(tmp_path):
    history = fit(mlp(10.0), HealthCallback(sample=data()[0][:256], logdir=tmp_path, every=5, console=False))
    assert len(history.history["loss"]) == 1  # stopped inside the first epoch
    findings = [json.loads(line) for line in (tmp_path / "findings.jsonl").read_text().splitlines()]
    critical = [f for f in findings if f["severity"] == "critical"]
    assert critical and critical[0]["symptom"] in ("loss-exploding", "loss-nan")
    assert critical[0]["step"] < 10


def test_dead_relu_initialisation():
    mon = Monitor(every=5, console=False)
    fit(mlp(0.05, bias=-3.0), HealthCallback(mon, sample=data()[0][:256]), epochs=1)
    mon.close()
    dead = fired(mon, "dead-relu")
    assert {f.where for f in dead} == {"hidden1", "hidden2"}
    assert dead[0].evidence["dead_fraction"] > 0.9


def test_batch_loss_is_recovered_from_running_means():
    callback = HealthCallback(Monitor(console=False))
    losses = [4.0, 1.0, 2.5, 0.5]
    means = np.cumsum(losses) / np.arange(1, 5)
    assert [callback._batch_loss(b, float(m)) for b, m in enumerate(means)] == pytest.approx(losses)
    callback.on_epoch_begin(1)
    assert callback._batch_loss(0, 7.0) == 7.0


def test_functional_convnet_channels_last_units():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    h = keras.layers.Activation("tanh", name="act")(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(8, name="hidden")(h)
    h = keras.layers.LeakyReLU(name="leaky")(h)
    model = keras.Model(inputs, keras.layers.Dense(2)(h), name="convnet")
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 3)).astype("float32")
    mon = Monitor(every=1, console=False)
    model.fit(x, rng.integers(0, 2, 64), batch_size=16, epochs=1, verbose=0,
              callbacks=[HealthCallback(mon, sample=x[:16])])
    mon.close()
    h = mon.history
    assert h.names("activation") == ["act", "leaky"]
    assert (h.meta["act"]["kind"], h.meta["leaky"]["kind"]) == ("tanh", "leaky_relu")
    assert h.latest_summary("activation", "act").layout.units == 4  # channels, not rows
    assert h.latest_summary("input", "input").layout.units == 3
    assert h.meta["conv/kernel"]["fan_in"] == 3 * 3 * 3


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(16, activation="relu")
        self.out = keras.layers.Dense(3)

    def call(self, x):
        return self.out(self.hidden(x))


def test_subclassed_model_keeps_weights_and_says_why_no_activations(caplog):
    model = _Subclassed()
    model.compile(optimizer=keras.optimizers.SGD(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = data(n=128)
    mon = Monitor(every=2, console=False)
    with caplog.at_level(logging.INFO, logger="nnhealth"):
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[HealthCallback(mon, sample=x[:32])])
    mon.close()
    assert "subclassed models have no layer outputs" in caplog.text
    assert mon.history.names("activation") == [] and len(mon.history.names("update")) == 4


def test_a_broken_sample_never_stops_training(caplog):
    model = mlp(0.05)
    mon = Monitor(every=1, console=False)
    history = fit(model, HealthCallback(mon, sample=np.ones((4, 7), "float32")), epochs=1)
    mon.close()
    assert len(history.history["loss"]) == 1
    assert "keras:activations" in caplog.text
    assert len(mon.history.values(None, "loss")) > 10 and mon.history.names("update")


OTHER_BACKEND = textwrap.dedent("""
    import json, sys
    import keras, numpy as np
    from nnhealth import Monitor
    from nnhealth.hooks.keras import HealthCallback
    assert keras.backend.backend() == sys.argv[1]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(768, 20)).astype("float32"); y = (x @ rng.normal(size=(20, 3))).argmax(1)
    out = {}
    for name, lr, bias in (("healthy", 0.05, 0.0), ("lr", 10.0, 0.0), ("dead", 0.05, -3.0)):
        keras.utils.set_random_seed(0)
        init = keras.initializers.Constant(bias)
        model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(32, activation="relu", bias_initializer=init,
                                                                    name="hidden"), keras.layers.Dense(3)])
        model.compile(optimizer=keras.optimizers.SGD(lr),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        mon = Monitor(every=5, console=False)
        hist = model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[HealthCallback(mon, sample=x[:128])])
        mon.close()
        out[name] = {"epochs": len(hist.history["loss"]), "stopped": mon.should_stop,
                     "findings": sorted({(f.severity, f.symptom, f.where or "") for f in mon.findings}),
                     "activations": mon.history.names("activation")}
    print(json.dumps(out))
""")


@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_other_keras_backends(backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"the {backend} backend is not installed on this machine")
    env = dict(os.environ, KERAS_BACKEND=backend)
    proc = subprocess.run([sys.executable, "-c", OTHER_BACKEND, backend], env=env, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["healthy"]["epochs"] == 2 and not [f for f in out["healthy"]["findings"] if f[0] != "info"]
    assert out["healthy"]["activations"] == ["hidden"]
    assert out["lr"]["stopped"] and out["lr"]["epochs"] == 1
    assert {f[1] for f in out["lr"]["findings"] if f[0] == "critical"} & {"loss-exploding", "loss-nan"}
    assert ["warning", "dead-relu", "hidden"] in out["dead"]["findings"]
