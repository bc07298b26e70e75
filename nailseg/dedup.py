"""One nail, one detection: mask-aware duplicate suppression (pure numpy, arrays in, indices out).

Box NMS inside mmdet lets two kinds of duplicates through, because their boxes differ while their
masks do not: two masks on one nail (different boxes, one mask inside the other) and a box spanning
two neighbouring nails reported beside the two separate ones (its box overlaps each nail's box by
less than half). Both are caught by comparing masks, not boxes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nailseg.result import Nails


@dataclass(frozen=True)
class MaskDedup:
    """Settings of :func:`suppress_duplicates`; the model config's ``test_cfg.rcnn.mask_dedup``.

    Attributes:
        iou_thr: two masks with IoU at least this are one nail.
        cover_thr: a mask covering at least this share of a smaller mask's area contains it.
        span_score_ratio: a mask containing two or more smaller ones that are not duplicates of
            each other, each scoring at least this times its own score, spans several nails and
            goes whatever its score; ``None``: only the score decides.
    """

    iou_thr: float = 0.5
    cover_thr: float = 0.7
    span_score_ratio: float | None = 0.8

    def __post_init__(self) -> None:
        for name in ("iou_thr", "cover_thr"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ValueError(f"mask_dedup {name} must be in (0, 1], got {value}")
        if self.span_score_ratio is not None and self.span_score_ratio < 0:
            raise ValueError(f"mask_dedup span_score_ratio must be >= 0 or None, got {self.span_score_ratio}")

    def keep(self, boxes_xyxy: np.ndarray, masks: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """:func:`suppress_duplicates` with these settings."""
        return suppress_duplicates(boxes_xyxy, masks, scores, self.iou_thr, self.cover_thr, self.span_score_ratio)


def shown_nails(detections: Nails, score_thr: float, dedup: MaskDedup | None) -> Nails:
    """What a user is shown of a model's ``detections``: the threshold first, then the duplicate
    suppression (none when ``dedup`` is None). ``NailSegmenter.predict_all`` and every evaluation
    apply it, so they see the same nails."""
    shown = detections.filter(score_thr)
    return shown[dedup.keep(shown.boxes_xyxy, shown.masks, shown.scores)] if dedup else shown


def mask_overlaps(boxes_xyxy: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise intersections and areas of masks, counted only where their boxes meet.

    Args:
        boxes_xyxy: ``(N, 4) float`` boxes ``[x0, y0, x1, y1]`` in pixels of ``masks``, each
            containing its mask (a mask pixel up to 1 px outside its box still counts).
        masks: ``(N, H, W) bool``.

    Returns:
        ``(inter, areas)``: ``(N, N) int64`` pixels in both masks (diagonal: the areas) and
        ``(N,) int64`` pixels in each mask.
    """
    n, height, width = masks.shape
    if len(boxes_xyxy) != n:
        raise ValueError(f"boxes_xyxy must be (N, 4) = ({n}, 4), got {boxes_xyxy.shape}")
    # Whole pixels holding any part of the box (mmdet pastes each mask inside its box), plus one
    # pixel so that a mask from elsewhere that strays a little is still counted.
    x0 = np.clip(np.floor(boxes_xyxy[:, 0]).astype(int) - 1, 0, width)
    y0 = np.clip(np.floor(boxes_xyxy[:, 1]).astype(int) - 1, 0, height)
    x1 = np.clip(np.ceil(boxes_xyxy[:, 2]).astype(int) + 1, 0, width)
    y1 = np.clip(np.ceil(boxes_xyxy[:, 3]).astype(int) + 1, 0, height)
    areas = np.array([np.count_nonzero(masks[i, y0[i] : y1[i], x0[i] : x1[i]]) for i in range(n)], np.int64)
    inter = np.diag(areas)
    for i in range(n):
        for j in range(i + 1, n):
            ax0, ay0, ax1, ay1 = max(x0[i], x0[j]), max(y0[i], y0[j]), min(x1[i], x1[j]), min(y1[i], y1[j])
            if ax0 >= ax1 or ay0 >= ay1:
                continue  # disjoint boxes: no common pixel to count
            both = masks[i, ay0:ay1, ax0:ax1] & masks[j, ay0:ay1, ax0:ax1]
            inter[i, j] = inter[j, i] = np.count_nonzero(both)
    return inter, areas


def overlap_iou(inter: np.ndarray, areas_a: np.ndarray, areas_b: np.ndarray) -> np.ndarray:
    """``(N, M)`` IoU from pixel counts: ``inter`` ``(N, M)`` in both, ``areas_a`` ``(N,)`` and
    ``areas_b`` ``(M,)`` in each; 0 where both masks are empty. The one IoU of masks in NailSeg."""
    union = areas_a[:, None] + areas_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0).astype(np.float32)


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(N, M) float32`` IoU between ``(N, H, W)`` and ``(M, H, W)`` bool masks (0 where both are empty)."""
    a2, b2 = a.reshape(len(a), -1).astype(np.float32), b.reshape(len(b), -1).astype(np.float32)
    return overlap_iou(a2 @ b2.T, a2.sum(1), b2.sum(1))


def duplicate_matrix(inter: np.ndarray, areas: np.ndarray, iou_thr: float, cover_thr: float) -> np.ndarray:
    """``(N, N) bool``: pairs whose mask IoU >= ``iou_thr`` or whose smaller mask is covered >= ``cover_thr``.

    Args:
        inter, areas: from :func:`mask_overlaps`. The diagonal is False; empty masks duplicate nothing.
    """
    smaller = np.minimum(areas[:, None], areas[None, :])
    iou = overlap_iou(inter, areas, areas)
    with np.errstate(divide="ignore", invalid="ignore"):
        cover = np.where(smaller > 0, inter / np.maximum(smaller, 1), 0.0)
    dup = (iou >= iou_thr) | (cover >= cover_thr)
    np.fill_diagonal(dup, False)
    return dup


def suppress_duplicates(
    boxes_xyxy: np.ndarray,
    masks: np.ndarray,
    scores: np.ndarray,
    iou_thr: float = 0.5,
    cover_thr: float = 0.7,
    span_score_ratio: float | None = 0.8,
) -> np.ndarray:
    """Indices of the detections to keep so that each nail is reported once.

    Two detections are duplicates when their masks have IoU >= ``iou_thr`` or one mask covers
    >= ``cover_thr`` of the smaller one's area; of a duplicate pair the higher-scoring one is kept
    (greedy, highest score first, like NMS). Before that, a detection spanning nails goes: one
    that covers (>= ``cover_thr``) two or more smaller detections that are not duplicates of
    each other and each score >= ``span_score_ratio`` times its own score. The ratio keeps a
    true nail that scores well above two fragments inside it, and removes a spanning box that
    outscores the nails it spans (which the score order alone would keep, losing both nails).

    Args:
        boxes_xyxy: ``(N, 4) float`` boxes ``[x0, y0, x1, y1]`` in pixels of ``masks``, used only to
            skip pairs whose masks cannot meet.
        masks: ``(N, H, W) bool`` masks at the model's output size.
        scores: ``(N,) float`` confidences; ties keep the earlier detection.
        iou_thr, cover_thr: in ``(0, 1]``.
        span_score_ratio: ``>= 0``, or ``None`` to let the score order decide spanning boxes too.

    Returns:
        ``(K,) int64`` indices into the inputs, ascending (input order kept), ``K <= N``.
    """
    n = len(scores)
    if scores.shape != (n,) or masks.shape[:1] != (n,):
        raise ValueError(f"scores (N,) and masks (N, H, W) must agree, got {scores.shape} and {masks.shape}")
    if n < 2:
        return np.arange(n, dtype=np.int64)
    inter, areas = mask_overlaps(boxes_xyxy, masks)
    dup = duplicate_matrix(inter, areas, iou_thr, cover_thr)
    suppressed = np.zeros(n, bool)
    if span_score_ratio is not None:
        # covers[i, j]: j is smaller than i, lies inside it and scores well enough to be a nail
        covers = (inter >= cover_thr * areas[None, :]) & (areas[None, :] > 0) & (areas[None, :] < areas[:, None])
        covers &= scores[None, :] >= span_score_ratio * scores[:, None]
        for i in np.flatnonzero(covers.sum(axis=1) >= 2):
            parts = np.flatnonzero(covers[i])
            suppressed[i] = not dup[np.ix_(parts, parts)][np.triu_indices(len(parts), k=1)].all()
    for i in np.argsort(-scores, kind="stable"):
        if not suppressed[i]:
            suppressed |= dup[i]  # a kept i has no kept duplicate above it, so this marks only lower ones
    return np.flatnonzero(~suppressed).astype(np.int64)
