"""The ready-made "nnhealth" page of TensorBoard's Custom Scalars tab.

Each chart is a multi-line chart whose lines are the tags matching a regular
expression (TensorBoard matches them from the start of the tag), so one chart
holds every layer - whatever the layers are called and however many there
are - and the layout can be written before the first step is seen.
"""
from __future__ import annotations

import re

from tensorboard.plugins.custom_scalar import layout_pb2

CATEGORY = "nnhealth"

#: (chart title, tag regexes), in the order the page shows them
CHARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("loss: train vs validation", (r"^loss/(train|val)$",)),
    ("accuracy: train vs validation", (r"^accuracy/(train|val)$",)),
    ("train-validation gap (val - train loss, train - val accuracy)", (r"^gap/",)),
    ("update ratio, log10 of ||dW|| / ||W|| (healthy: -4 to -2, best near -3)", (r"^update_ratio_log10/",)),
    ("dead units: fraction of a layer's units that never fire", (r"^activation_dead_fraction/",)),
    ("saturated activations: fraction of values where the slope is < 5% of its maximum",
     (r"^activation_saturated_fraction/",)),
    ("activation std by depth", (r"^activation_std/",)),
    ("gradient norm by depth", (r"^gradient_norm/", r"^gradient/total_norm$")),
)


def nnhealth_layout() -> layout_pb2.Layout:
    """The custom-scalars layout nnhealth writes with every run."""
    category = layout_pb2.Category(title=CATEGORY, closed=False)
    for title, regexes in CHARTS:
        category.chart.add(title=title, multiline=layout_pb2.MultilineChartContent(tag=list(regexes)))
    return layout_pb2.Layout(category=[category])


def chart_tags(regexes: tuple[str, ...], available) -> list[str]:
    """The tags of ``available`` one chart would plot (as TensorBoard matches them)."""
    compiled = [re.compile(r) for r in regexes]
    return sorted(t for t in available if any(c.match(t) for c in compiled))
