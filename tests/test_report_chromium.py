"""report.html in a real browser: headless Chromium loads it, decodes every image, runs nothing.

Skipped only where Chromium is not installed (Debian: ``apt-get install chromium``).
"""
from __future__ import annotations

import re

import matplotlib.image
import numpy as np
import pytest

from dashboards_runs import record_run
from nnhealth.dashboards.browser import dump_dom, find_chromium, screenshot
from nnhealth.dashboards.report import CSP, write_html

pytestmark = pytest.mark.skipif(find_chromium() is None,
                                reason="chromium is not installed (Debian: apt-get install chromium)")

DEAD = "<script>alert(1)</script>"
PLOT_BLUE = np.array([0x4C, 0x78, 0xA8]) / 255  # the report's line and bar colour

IMAGE_PROBE = """<script>
window.addEventListener("load", () => {
  document.body.setAttribute("data-images", Array.from(document.images).map(
    (i) => i.complete && i.naturalWidth > 0 ? i.naturalWidth + "x" + i.naturalHeight : "broken").join(" "));
});
</script>"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    rec = record_run(folder / "run", steps=30, dead_layer=DEAD)
    out, _, _ = write_html(rec.logdir, folder / "report.html")
    return out


def test_chromium_decodes_every_embedded_image(report, tmp_path):
    # the same page with a probe that lists each image's decoded size once the page has loaded
    page = report.read_text(encoding="utf-8")
    probed = page.replace(CSP, CSP + "; script-src 'unsafe-inline'").replace("</body>", IMAGE_PROBE + "</body>")
    copy = tmp_path / "probed.html"
    copy.write_text(probed, encoding="utf-8")
    dom = dump_dom(copy.as_uri())
    sizes = re.search(r'data-images="([^"]*)"', dom).group(1).split()
    assert len(sizes) == 4 and "broken" not in sizes, sizes
    for size in sizes:
        width, height = map(int, size.split("x"))
        assert width > 400 and height > 200


def test_the_page_runs_no_script_and_shows_the_hostile_name_as_text(report):
    dom = dump_dom(report.as_uri())
    assert "<script" not in dom.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert dom.count("<img ") == 4 and "<h2>Findings</h2>" in dom


def test_a_screenshot_of_the_page_shows_the_plots(report, tmp_path):
    shot = screenshot(report.as_uri(), tmp_path / "report.png", size=(1200, 2400), wait_ms=2000)
    pixels = matplotlib.image.imread(shot)[:, :, :3]
    assert pixels.shape[:2] == (2400, 1200)
    blue = np.all(np.abs(pixels - PLOT_BLUE) < 0.06, axis=2).sum()
    assert blue > 2000, f"only {blue} pixels of the plot colour: the images did not render"
