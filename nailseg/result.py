"""``Nails``: the one result type that travels from the model to the overlay, crops, UI and files."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Nails:
    """Nails found in one photo, numbered in reading order (see :meth:`in_reading_order`).

    Attributes:
        boxes_xyxy: ``(N, 4) float32`` boxes ``[x0, y0, x1, y1]`` in pixels of the photo.
        masks: ``(N, H, W) bool`` one mask per nail, the photo's size.
        scores: ``(N,) float32`` confidence in ``[0, 1]``.
    """

    boxes_xyxy: np.ndarray
    masks: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.scores)
        if self.scores.ndim != 1:
            raise ValueError(f"scores must be (N,), got {self.scores.shape}")
        if self.boxes_xyxy.shape != (n, 4):
            raise ValueError(f"boxes_xyxy must be (N, 4) = ({n}, 4), got {self.boxes_xyxy.shape}")
        if self.masks.ndim != 3 or self.masks.shape[0] != n or self.masks.dtype != bool:
            raise ValueError(f"masks must be (N, H, W) = ({n}, H, W) bool, got {self.masks.shape} {self.masks.dtype}")

    @classmethod
    def empty(cls, height: int, width: int) -> Nails:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0, height, width), bool), np.zeros(0, np.float32))

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, index) -> Nails:
        """Select nails with a boolean mask or index array: ``nails[nails.scores > 0.5]``."""
        index = np.atleast_1d(np.asarray(index))
        return Nails(self.boxes_xyxy[index], self.masks[index], self.scores[index])

    def filter(self, score_thr: float) -> Nails:
        """Nails scoring at least ``score_thr``, order kept."""
        return self[self.scores >= score_thr]

    @property
    def image_size(self) -> tuple[int, int]:
        """``(height, width)`` of the photo."""
        return self.masks.shape[1], self.masks.shape[2]

    @property
    def areas(self) -> np.ndarray:
        """``(N,) int64`` mask pixel counts."""
        return self.masks.sum(axis=(1, 2))  # (N, H, W) -> (N,), also for N = 0

    def in_reading_order(self) -> Nails:
        """Nails sorted left to right by box centre, top to bottom where centres tie."""
        cx = (self.boxes_xyxy[:, 0] + self.boxes_xyxy[:, 2]) / 2
        cy = (self.boxes_xyxy[:, 1] + self.boxes_xyxy[:, 3]) / 2
        return self[np.lexsort((cy, cx))] if len(self) else self

    def to_coco_results(self, image_id: int, category_id: int = 1) -> list[dict]:
        """COCO results format, one dict per nail: xywh ``bbox``, ``score``, RLE ``segmentation``.

        RLE ``counts`` is a ``str`` so the list can go straight into ``json.dump``.
        """
        from pycocotools import mask as mask_utils

        results = []
        for box, mask, score in zip(self.boxes_xyxy, self.masks, self.scores):
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            x0, y0, x1, y1 = (float(v) for v in box)
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(category_id),
                    "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                    "score": round(float(score), 5),
                    "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
                }
            )
        return results

    def to_records(self) -> list[dict]:
        """One JSON-ready dict per nail: ``number`` (1-based), ``score``, ``box_xyxy``, ``area``."""
        return [
            {
                "number": k + 1,
                "score": round(float(score), 4),
                "box_xyxy": [round(float(v), 1) for v in box],
                "area": int(area),
            }
            for k, (score, box, area) in enumerate(zip(self.scores, self.boxes_xyxy, self.areas))
        ]
