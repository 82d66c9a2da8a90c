"""Tag names of the nnhealth log folder, in one place for the writer and every reader.

TensorBoard groups tags by their first path component, so each statistic is
one group (``activation_std``) with one chart per layer
(``activation_std/layer1``), and the model-level numbers sit in ``loss``,
``accuracy``, ``gap`` and ``metrics``. docs/logdir.md describes the folder.
"""
from __future__ import annotations

#: model-level values (``StepRecord.scalars`` entries whose ``where`` is None) and their tags
MODEL_TAGS = {
    "loss": "loss/train",
    "val_loss": "loss/val",
    "train_acc": "accuracy/train",
    "val_acc": "accuracy/val",
    "gradient/total_norm": "gradient/total_norm",
}
#: derived on the steps that have both values: validation minus training loss,
#: training minus validation accuracy (both grow as a model overfits)
LOSS_GAP = "gap/loss"
ACCURACY_GAP = "gap/accuracy"
#: log10 of each ``update_ratio/<param>``: the custom-scalars chart cannot be set to a log axis, and
#: the healthy ratio (about 1e-3, within a decade) reads best as -4..-2
UPDATE_RATIO_LOG10 = "update_ratio_log10"

FINDINGS = "nnhealth/findings"
RUN = "nnhealth/run"
STATE_PREFIX = "nnhealth_state/"
#: what ``nnhealth_state`` tensors and the run description carry in their plugin_data
STATE_PLUGIN = "nnhealth"
FORMAT_VERSION = 2  # 2: state histograms trimmed to their non-empty buckets (1 is read too)
#: written when the disk could not keep up and steps were dropped (see BackgroundWriter)
DROPPED_PREFIX = "nnhealth/dropped_"

#: the roles whose summaries carry a histogram, and the tag group it is written under
HISTOGRAM_ROLES = {"activation": "activation_hist", "input": "input_hist"}


def model_tag(name: str) -> str:
    """``loss`` -> ``loss/train``; any other metric ``m`` -> ``metrics/m``."""
    return MODEL_TAGS.get(name) or f"metrics/{name}"


def layer_tag(where: str, stat: str) -> str:
    """``("layer1", "activation/std")`` -> ``activation_std/layer1``."""
    role, _, name = stat.partition("/")
    group = f"{role}_{name}" if name else role
    return f"{group}/{where}"


def scalar_tag(where: str | None, stat: str) -> str:
    return model_tag(stat) if where is None else layer_tag(where, stat)


def histogram_tag(role: str, where: str) -> str:
    return f"{HISTOGRAM_ROLES[role]}/{where}"


def state_tag(role: str, where: str) -> str:
    return f"{STATE_PREFIX}{role}/{where}"


def split(tag: str) -> tuple[str, str]:
    """(group, rest): ``update_ratio/fc1.W`` -> ``("update_ratio", "fc1.W")``."""
    group, _, rest = tag.partition("/")
    return group, rest
