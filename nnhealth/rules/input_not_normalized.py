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
        window = _window(h, name)
        if window is None:
            continue
        samples, count, means, stds = window
        if samples < th.min_samples or count == 0:
            continue
        judged = True
        off_centre = _off_centre(means, stds, th.max_mean_over_std)
        live = stds[stds > 0]
        scale = float(live[live.argmax()] / live[live.argmin()]) if live.size >= 2 else 1.0
        if off_centre > th.max_off_centre_fraction or scale > th.max_scale_ratio:
            parts = []
            if off_centre > th.max_off_centre_fraction:
                parts.append(f"{100 * off_centre:.0f}% of features are off-centre")
            if scale > th.max_scale_ratio:
                parts.append(f"feature scales differ {scale:.0f}x")
            out.append(Detection(name, ", ".join(parts),
                                 {"off_centre_fraction": off_centre,
                                  "median_mean_over_std": float(np.median(_scores(means, stds))),
                                  "scale_ratio": scale, "features": int(means.size)}))
    return out if judged else None


def _window(h, name: str):
    """(samples, count, per-feature means, per-feature stds) of the input ``name`` over the window (one
    "feature", the whole tensor, when the window has no per-feature moments), or None before any.
    Computed from the window's added moments where it can (the common case: no merged summary made)."""
    moments = h.window_moments("input", name)
    if moments is not None:  # Summary.unit_means and unit_stds' arithmetic
        samples, count, sums, squares = moments
        means = sums / samples
        stds = squares / samples
        stds -= means * means
        return samples, count, means, np.sqrt(np.maximum(stds, 0.0, out=stds), out=stds)
    s = h.window_summary("input", name)
    if s is None:
        return None
    means, stds = s.unit_means(), s.unit_stds()
    if means is None:
        means, stds = np.array([s.mean]), np.array([s.std])
    return s.samples, s.count, means, stds


def _scores(means: np.ndarray, stds: np.ndarray) -> np.ndarray:
    """|mean| / std per feature; a feature without spread scores inf unless its mean is 0."""
    varied = stds > 0
    return np.where(varied, np.abs(means) / np.where(varied, stds, 1.0), np.where(means != 0, np.inf, 0.0))


def _off_centre(means: np.ndarray, stds: np.ndarray, limit: float) -> float:
    """The fraction of features whose :func:`_scores` exceed ``limit`` (finite), in fewer passes than the
    scores take: |mean / std| is the score where the std is positive, and inf (off-centre) where the std
    is 0 and the mean is not. It is NaN where the std is 0 and the mean too (not off-centre), or where the
    sums were not finite (std NaN): off-centre then exactly when the mean is not 0, NaN included."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.abs(means / stds)
    return int(np.count_nonzero(ratio > limit) + np.count_nonzero(means[np.isnan(ratio)])) / means.size
