"""``nnhealth report``: a self-contained, escaped HTML page (or PNG figures) from a log folder."""
from __future__ import annotations

import base64
import doctest
import importlib
import io
import re

import matplotlib.image
import numpy as np
import pytest
from dashboards_runs import record_run
from nnhealth.dashboards.figures import all_panels, label, number_ranges
from nnhealth.dashboards.rebin import quantiles, rebin
from nnhealth.dashboards.report import write_html
from nnhealth.dashboards.run_data import read_run

from nnhealth import Monitor
from nnhealth.cli import main

DEAD = "<script>alert(1)</script>"


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(io.BytesIO(data), format="png")
    return image.shape[1], image.shape[0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return record_run(tmp_path_factory.mktemp("run"), steps=30, dead_layer=DEAD)


def test_html_report_is_self_contained_with_every_figure_and_the_findings(run_dir, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["report", run_dir.logdir, "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    page = out.read_text(encoding="utf-8")
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)">', page)
    assert [alt for _, alt in images] == ["Loss and accuracy, with the findings",
                                          "Activation distributions, layer by layer", "Update ratio over time",
                                          "Dead and saturated units per layer"]
    for data, _ in images:
        width, height = png_size(base64.b64decode(data))
        assert width > 400 and height > 200
    # nothing to fetch, nothing to run
    assert not re.search(r"<script|<link|<iframe|src=\"(?!data:)|url\(", page, re.IGNORECASE)
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    # the findings table, one row per finding, with its advice
    rows = re.findall(r"<tr><td class=\"num\">(\d+)</td>", page)
    assert rows == [str(i) for i in range(1, len(run_dir.monitor.findings) + 1)]
    dead = next(f for f in run_dir.monitor.findings if f.symptom == "dead-relu")
    assert "<code>dead-relu</code>" in page
    assert "lower the learning rate" in dead.advice and "lower the learning rate" in page
    # the hostile layer name is shown, escaped, never as markup
    assert DEAD not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_png_format_writes_the_figures_alone(run_dir, tmp_path, capsys):
    folder = tmp_path / "figures"
    assert main(["report", run_dir.logdir, "--format", "png", "-o", str(folder)]) == 0
    written = capsys.readouterr().out.split()
    assert sorted(p.name for p in folder.iterdir()) == ["activations.png", "dead_saturated.png", "loss.png",
                                                        "update_ratio.png"]
    assert sorted(written) == sorted(str(p) for p in folder.iterdir())
    for path in folder.iterdir():
        width, height = png_size(path.read_bytes())
        assert width > 400 and height > 200


def test_chosen_steps_move_to_the_nearest_sampled_step(tmp_path, capsys):
    rec = record_run(tmp_path / "run", steps=20, every=4)
    out = tmp_path / "r.html"
    assert main(["report", rec.logdir, "-o", str(out), "--steps", "0,9", "1000"]) == 0
    err = capsys.readouterr().err
    assert "step 9 has no histograms; showing the nearest, step 8" in err
    assert "step 1000 has no histograms; showing the nearest, step 16" in err
    run = read_run(rec.logdir)
    (panel,) = [p for p in all_panels(run, [0, 9, 1000]) if p.key == "activations"]
    assert [ax.get_title() for ax in panel.figure.axes[:3]] == ["step 0", "step 8", "step 16"]


def test_names_that_look_like_math_are_drawn_as_written(tmp_path):
    name = r"$\frac{1}{0$_x"
    assert label(name) == r"\$\frac{1}{0\$_x"
    rec = record_run(tmp_path / "run", steps=8, dead_layer=name)
    out, _, panels = write_html(rec.logdir, tmp_path / "r.html")
    assert all(p.figure is not None for p in panels)
    assert "$\\frac{1}{0$_x" in out.read_text(encoding="utf-8")


def test_a_run_from_another_tool_shows_what_it_has_and_says_what_is_missing(tmp_path):
    torch = pytest.importorskip("torch")
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "torch_run"))
    for step in range(20):
        writer.add_scalar("Loss/train", 2.0 / (step + 1), step)
        if step % 5 == 0:
            writer.add_histogram("fc1.weight", torch.randn(1000) * (step + 1), step)
    writer.close()
    out, run, panels = write_html(tmp_path / "torch_run", tmp_path / "r.html")
    page = out.read_text(encoding="utf-8")
    by_key = {p.key: p for p in panels}
    assert by_key["loss"].figure is not None and run.train_loss_tag == "Loss/train"
    assert "No validation loss in this run" in page
    assert by_key["activations"].figure is not None
    assert "no activation_hist/&lt;layer&gt; tags; showing its other histograms" in page
    assert by_key["update_ratio"].figure is None and "no update_ratio/&lt;parameter&gt; scalars" in page
    assert by_key["dead_saturated"].figure is None
    assert "no activation_dead_fraction/&lt;layer&gt; scalars" in page
    assert "no findings.jsonl" in page and "not written by nnhealth" in page
    assert page.count("<img ") == 2


def test_non_finite_losses_are_reported_not_fatal(tmp_path):
    with Monitor(logdir=tmp_path, every=1, console=False) as mon:
        for step, loss in enumerate([2.3, 2.2, 2.1, float("nan"), float("inf")]):
            mon.observe_activation("fc1", np.full((4, 3), loss), kind="tanh")
            mon.step(step, loss=loss)
    out, _, _ = write_html(tmp_path, tmp_path / "r.html")
    page = out.read_text(encoding="utf-8")
    assert "loss-nan" in page and "Some loss values are NaN or infinite" in page


def test_folders_without_one_clear_run_are_usage_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such log folder" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "no TensorBoard event files" in capsys.readouterr().err
    for name in ("a", "b"):
        with Monitor(logdir=tmp_path / name, console=False) as mon:
            mon.step(0, loss=1.0)
    assert main(["report", str(tmp_path), "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert "holds 2 runs" in err and str(tmp_path / "a") in err
    assert main(["report", str(tmp_path / "a"), "-o", str(tmp_path / "r.html")]) == 0


def test_rebinning_keeps_the_counts_and_the_shape_of_the_data():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(20000)
    edges = np.linspace(-4, 4, 41)
    truth, _ = np.histogram(np.clip(x, -4, 4), edges)
    coarse_edges = np.linspace(-5, 5, 201)
    coarse, _ = np.histogram(x, coarse_edges)
    buckets = np.stack([coarse_edges[:-1], coarse_edges[1:], coarse], axis=1)
    got = rebin(buckets, edges)
    assert got.sum() == pytest.approx(x.size)
    assert np.abs(got - truth).sum() / x.size < 0.02
    assert quantiles(buckets, [0.5])[0] == pytest.approx(np.median(x), abs=0.03)
    # a point mass (every value equal) lands in the one bin holding it
    assert list(rebin(np.array([[0.5, 0.5, 7.0]]), np.array([0.0, 0.25, 0.75, 1.0]))) == [0.0, 7.0, 0.0]


def test_findings_sharing_a_step_get_short_labels():
    assert number_ranges([1, 3, 4, 5, 7]) == "1,3-5,7"
    assert number_ranges(list(range(3, 12))) == "3-11"
    assert number_ranges([2]) == "2"


@pytest.mark.parametrize("module", ["background", "markdown", "rebin"])
def test_docstring_examples_run(module):
    mod = importlib.import_module(f"nnhealth.dashboards.{module}")
    result = doctest.testmod(mod)
    assert result.attempted > 0 and result.failed == 0


def test_keras_train_and_validation_folders_are_one_run(tmp_path, capsys):
    pytest.importorskip("torch")
    from logs_writers import per_epoch, train, write_keras

    write_keras(tmp_path / "fit", per_epoch(train("overfit", val_every=10)))
    assert sorted(p.name for p in (tmp_path / "fit").iterdir()) == ["train", "validation"]
    run = read_run(tmp_path / "fit")
    assert run.train_loss_tag == "train/epoch_loss" and run.val_loss_tag == "validation/epoch_loss"
    assert len(run.scalars["validation/epoch_loss"][0]) == 30
    assert main(["report", str(tmp_path / "fit"), "-o", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "No validation loss in this run" not in page
