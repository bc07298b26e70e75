"""COCO evaluation of a model on a ground-truth file (bbox and segm AP with pycocotools)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np

from nailseg.images import load_image_rgb

MAX_DETECTIONS = 100  # per photo, as COCO's evaluator counts them


def nail_category_id(gt: dict) -> int:
    """The id the ground truth gives to ``nail`` (case-insensitive), or its only category's id."""
    categories = gt.get("categories", [])
    for cat in categories:
        if cat["name"].lower() == "nail":
            return int(cat["id"])
    if len(categories) == 1:
        return int(categories[0]["id"])
    raise ValueError(f"no 'nail' category among {[c['name'] for c in categories]}")


def predict_dataset(segmenter, gt: dict, img_dir: str | Path, progress: bool = False) -> list[dict]:
    """Every detection of the model (no score threshold) on each photo of ``gt``, COCO results format.

    Photos are read from ``img_dir / file_name``; ids are those of ``gt``.
    """
    from tqdm.auto import tqdm

    category_id = nail_category_id(gt)
    results = []
    for image in tqdm(gt["images"], unit="photo", disable=not progress):
        rgb = load_image_rgb(Path(img_dir) / image["file_name"])
        nails = segmenter.predict_all(rgb)
        top = nails[np.argsort(-nails.scores, kind="stable")[:MAX_DETECTIONS]]
        results += top.to_coco_results(image["id"], category_id)
    return results


def coco_ap(gt: dict, results: list[dict]) -> dict:
    """``{"bbox": {"AP", "AP50", "AP75"}, "segm": {...}}`` from pycocotools' COCOeval.

    Args:
        gt: COCO instances dict (the ground truth).
        results: COCO results (``image_id``, ``category_id``, ``bbox`` xywh, ``score``, RLE
            ``segmentation``).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = json.loads(json.dumps(gt))
        coco_gt.createIndex()
        scores = {}
        for iou_type in ("bbox", "segm"):
            if not results:
                scores[iou_type] = {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
                continue
            coco_dt = coco_gt.loadRes(json.loads(json.dumps(results)))
            ev = COCOeval(coco_gt, coco_dt, iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            scores[iou_type] = {k: round(max(float(ev.stats[i]), 0.0), 4) for i, k in enumerate(("AP", "AP50", "AP75"))}
    return scores
