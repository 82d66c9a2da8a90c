"""A real ``tensorboard`` server serves what nnhealth wrote: scalars, histograms, text, the custom-scalars page.

The server is started on a free port of 127.0.0.1, read through its HTTP
data API (the routes its own frontend calls) and always stopped.
"""
from __future__ import annotations

import numpy as np
import pytest

from dashboards_runs import record_run
from nnhealth.dashboards.browser import TensorBoardServer
from nnhealth.dashboards.layout import CHARTS

DEAD = "<script>alert(1)</script>"
RUN = "faulty"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs")
    rec = record_run(root / RUN, steps=25, dead_layer=DEAD)
    with TensorBoardServer(root) as tb:
        tb.wait_for(lambda s: "loss/train" in s.get("/data/plugin/scalars/tags").get(RUN, {}), timeout=60)
        yield tb, rec


def test_scalars_route_serves_the_loss_and_per_layer_statistics(server):
    tb, rec = server
    tags = tb.get("/data/plugin/scalars/tags")[RUN]
    for tag in ("loss/train", "loss/val", "accuracy/train", "gap/loss", "update_ratio/layer0.W",
                f"activation_dead_fraction/{DEAD}", "activation_std/layer0", "gradient_norm/out.W"):
        assert tag in tags, tag
    points = tb.get("/data/plugin/scalars/scalars", run=RUN, tag="loss/train")
    assert [p[1] for p in points] == list(range(25))
    assert np.allclose([p[2] for p in points], rec.losses, rtol=1e-6)
    dead = tb.get("/data/plugin/scalars/scalars", run=RUN, tag=f"activation_dead_fraction/{DEAD}")
    assert dead[-1][2] > 0.5


def test_histograms_route_serves_each_layers_activations(server):
    tb, rec = server
    tags = tb.get("/data/plugin/histograms/tags")[RUN]
    assert {"activation_hist/layer0", f"activation_hist/{DEAD}", "input_hist/input"} <= set(tags)
    events = tb.get("/data/plugin/histograms/histograms", run=RUN, tag="activation_hist/layer0")
    assert [e[1] for e in events] == list(range(25))
    last = rec.monitor.history.latest_summary("activation", "layer0")
    buckets = np.array(events[-1][2])
    assert buckets[:, 2].sum() == pytest.approx(last.count)
    assert buckets[0, 0] == pytest.approx(last.min) and buckets[-1, 1] == pytest.approx(last.max)
    assert np.all(buckets[:, 1] >= buckets[:, 0])


def test_custom_scalars_page_has_the_nnhealth_layout_and_its_charts_match_tags(server):
    tb, _ = server
    layout = tb.get("/data/plugin/custom_scalars/layout")
    (category,) = layout["category"]
    assert category["title"] == "nnhealth"
    assert [c["title"] for c in category["chart"]] == [t for t, _ in CHARTS]
    for chart in category["chart"]:
        (regex,) = chart["multiline"]["tag"][:1]
        got = tb.get("/data/plugin/custom_scalars/scalars", run=RUN, tag=regex)
        assert got["regex_valid"] and got["tag_to_events"], chart["title"]
    ratios = tb.get("/data/plugin/custom_scalars/scalars", run=RUN, tag=r"^update_ratio_log10/")
    assert len(ratios["tag_to_events"]) == 6
    values = [p[2] for p in ratios["tag_to_events"]["update_ratio_log10/layer0.W"]]
    assert all(-8 < v < 1 for v in values)


def test_text_route_serves_the_findings_table_sanitised(server):
    tb, rec = server
    assert "nnhealth/findings" in tb.get("/data/plugin/text/tags")[RUN]
    entries = tb.get("/data/plugin/text/text", run=RUN, tag="nnhealth/findings")
    html = entries[-1]["text"]
    assert "<table>" in html and "dead-relu" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert html.count("<tr>") == 1 + len(rec.monitor.findings)
