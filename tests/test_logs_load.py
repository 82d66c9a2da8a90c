"""nnhealth.load: every curve under a log folder as one tidy frame, named as the Monitor's history names them."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import nnhealth
from logs_writers import event_file, per_epoch, record_offsets, train, truncate_mid_record, write_keras, write_torch
from nnhealth import Monitor
from nnhealth.demo.network import train as train_demo, with_changes
from nnhealth.logs import LogReadWarning


def test_pytorch_runs_load_as_tidy_rows(tmp_path):
    rows = train("overfit")
    write_torch(tmp_path / "a", rows)
    write_torch(tmp_path / "b", rows[:10])
    df = nnhealth.load(tmp_path)
    assert list(df.columns) == ["run", "step", "where", "stat", "value", "wall_time", "tag"]
    assert df.dtypes["step"] == np.int64 and df.dtypes["value"] == np.float64
    assert sorted(df["run"].unique()) == [str(tmp_path / "a"), str(tmp_path / "b")]
    a = df[df["run"] == str(tmp_path / "a")]
    loss = a[a["stat"] == "loss"]
    assert loss["tag"].unique().tolist() == ["Loss/train"]
    assert loss["step"].tolist() == list(range(300))
    np.testing.assert_allclose(loss["value"], [r["loss"] for r in rows], rtol=1e-6)
    assert set(a["stat"]) == {"loss", "train_acc", "val_loss", "val_acc"}
    assert a["where"].isna().all() and (a["wall_time"] > 1e9).all()
    assert df.equals(df.sort_values(["run", "step", "stat"], kind="stable", ignore_index=True))


def test_keras_folders_load_as_one_run_with_their_split_in_the_tag(tmp_path):
    write_keras(tmp_path / "fit", per_epoch(train("healthy", val_every=10)))
    df = nnhealth.load(tmp_path)
    assert df["run"].unique().tolist() == [str(tmp_path / "fit")]
    loss = df[df["stat"] == "val_loss"]
    assert loss["tag"].unique().tolist() == ["validation/epoch_loss"] and len(loss) == 30
    assert "train/epoch_learning_rate" in set(df["stat"])


def test_tags_option_names_an_unknown_curve(tmp_path):
    write_torch(tmp_path / "run", train("healthy")[:5], names={"loss": "objective"})
    assert nnhealth.load(tmp_path)["stat"].unique().tolist() == ["objective"]
    assert nnhealth.load(tmp_path, tags={"loss": "objective"})["stat"].unique().tolist() == ["loss"]


def test_an_nnhealth_run_names_layers_and_stats_like_the_monitors_history(tmp_path):
    mon = Monitor(logdir=tmp_path / "run", console=False, every=10)
    train_demo(with_changes("none", steps=30), mon)
    mon.close()
    df = nnhealth.load(tmp_path)
    history = mon.history.to_dataframe()
    for (where, stat), expected in history.groupby(["where", "stat"], dropna=False):
        got = df[(df["stat"] == stat) & ((df["where"] == where) if isinstance(where, str) else df["where"].isna())]
        assert got["step"].tolist() == expected["step"].tolist(), (where, stat)
        np.testing.assert_allclose(got["value"], expected["value"], rtol=1e-6, err_msg=f"{where} {stat}")
    layer = df[df["where"] == "layer0"]
    assert {"activation/std", "activation/dead_fraction"} <= set(layer["stat"])


def test_damaged_files_load_what_is_readable_and_warn(tmp_path):
    write_torch(tmp_path / "run", train("healthy"))
    path = event_file(tmp_path / "run")
    truncate_mid_record(path, len(record_offsets(path)) // 2)
    with pytest.warns(LogReadWarning, match="truncated last record") as caught:
        df = nnhealth.load(tmp_path)
    assert str(path) in str(caught[0].message)
    assert 0 < len(df) < 600


def test_a_missing_folder_raises_and_an_empty_one_is_an_empty_frame(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        nnhealth.load(tmp_path / "nope")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = nnhealth.load(tmp_path)
    assert df.empty and list(df.columns) == ["run", "step", "where", "stat", "value", "wall_time", "tag"]
    assert isinstance(df, pd.DataFrame) and df.dtypes["step"] == np.int64
