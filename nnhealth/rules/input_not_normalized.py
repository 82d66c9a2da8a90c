"""input-not-normalized: inputs not zero-centred, or features on very different scales."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Detection, rule


@dataclass(frozen=True)
class Thresholds:
    #: |mean| / std of a feature above which it is not zero-centred
    max_mean_over_std: float = 1.0
    #: fraction of features that may be off-centre before the input is flagged
    max_off_centre_fraction: float = 0.5
    #: ratio between the largest and smallest feature std
    max_scale_ratio: float = 100.0
    #: samples needed before judging
    min_samples: int = 32


@rule(
    "input-not-normalized", severity="warning", needs={"input"}, thresholds=Thresholds,
    summary="Inputs are not zero-centred, or their features live on very different scales.",
    advice="Standardise the inputs: subtract the per-feature mean and divide by the per-feature std computed "
           "on the training set (for images, subtracting the per-channel mean is usually enough).",
    detects="Input features whose mean is large compared to their spread (e.g. all positive), or whose "
            "scales differ by orders of magnitude.",
    why="The lecture's preprocessing step: zero-centre and normalise so every feature contributes on the "
        "same scale. Inputs that are all positive make the gradients on a layer's weights share one sign, "
        "so updates zig-zag; features on wildly different scales make the loss surface badly conditioned.",
    how="Per feature (last axis of 2-D inputs, channel axis of images) mean and std over the window; fires "
        "when more than `max_off_centre_fraction` of features have |mean|/std > `max_mean_over_std`, or when "
        "the largest feature std exceeds `max_scale_ratio` x the smallest non-zero one. Integer inputs "
        "(token ids, class indices) are not features and are skipped. Judged once `min_samples` samples were seen.",
    example="nnhealth warning input-not-normalized at step 20 [input]: 100% of features are off-centre, scales "
            "differ 1000x (off_centre_fraction=1, median_mean_over_std=50, scale_ratio=1000)",
)
def check(ctx, th: Thresholds):
    h = ctx.history
    out, judged = [], False
    for name in h.names("input"):
        s = h.window_summary("input", name)
        if s is None or s.samples < th.min_samples or s.count == 0:
            continue
        judged = True
        means, stds = s.unit_means(), s.unit_stds()
        if means is None:
            means, stds = np.array([s.mean]), np.array([s.std])
        varied = stds > 0
        score = np.where(varied, np.abs(means) / np.where(varied, stds, 1.0), np.where(means != 0, np.inf, 0.0))
        off_centre = float(np.mean(score > th.max_mean_over_std))
        live = stds[varied]
        scale = float(live.max() / live.min()) if live.size >= 2 else 1.0
        if off_centre > th.max_off_centre_fraction or scale > th.max_scale_ratio:
            parts = []
            if off_centre > th.max_off_centre_fraction:
                parts.append(f"{100 * off_centre:.0f}% of features are off-centre")
            if scale > th.max_scale_ratio:
                parts.append(f"feature scales differ {scale:.0f}x")
            out.append(Detection(name, ", ".join(parts),
                                 {"off_centre_fraction": off_centre, "median_mean_over_std": float(np.median(score)),
                                  "scale_ratio": scale, "features": int(means.size)}))
    return out if judged else None
