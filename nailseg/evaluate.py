"""Evaluation of a model on a ground-truth file: COCO AP (pycocotools), what a user sees at a score
threshold (one-to-one matches, duplicate pairs, exact counts), and the threshold chosen by F1.

``nailseg evaluate`` and ``bench/user_view.py`` run through here (:func:`detect_photos` is the one
loop of the model over a ground truth's photos). Crowd regions (``iscrowd`` 1) are places where
nothing counts, for AP as for what a user sees; :func:`apply_label_fixes` makes them from a list of
checked label errors, so that a figure can be reported both ways.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from nailseg.dedup import duplicate_matrix, mask_iou, mask_overlaps, shown_nails
from nailseg.images import load_image_rgb
from nailseg.result import Nails

MAX_DETECTIONS = 100  # per photo, as COCO's evaluator counts them
SWEEP = tuple(round(0.3 + 0.05 * k, 2) for k in range(14))  # the thresholds tried: 0.30 ... 0.95
IGNORE_COVER = 0.5  # a shown nail this much inside a crowd region is not counted (COCO's rule)
# What a checked label error may be (apply_label_fixes): a nail without a label, or a label that
# is no nail, or whose outline is not the nail's (cut in two, shifted, half the nail).
LABEL_FIXES = ("unlabelled nail", "not a nail", "bad outline")


@dataclasses.dataclass
class Tally:
    """What a user sees on photos with instance labels, at one threshold, summed over photos."""

    photos: int = 0
    reported: int = 0
    there: int = 0
    pairs: int = 0
    photos_with_pairs: int = 0
    exact: int = 0
    matched: int = 0

    def add(self, shown: Nails, truth: Nails, ignore: np.ndarray | None = None) -> None:
        """One photo: ``shown`` nails against the ``truth``; shown nails lying mostly (as COCO
        has it, half their area) in an ``ignore`` region (``(K, H, W) bool``, crowd) are left out."""
        if ignore is not None and len(ignore) and len(shown):
            inside = (shown.masks & ignore.any(axis=0)).sum(axis=(1, 2))
            shown = shown[inside < IGNORE_COVER * np.maximum(shown.masks.sum(axis=(1, 2)), 1)]
        pairs = len(duplicate_pairs(shown))
        self.photos += 1
        self.reported += len(shown)
        self.there += len(truth)
        self.pairs += pairs
        self.photos_with_pairs += pairs > 0
        self.exact += len(shown) == len(truth)
        self.matched += len(match_masks(shown.masks, truth.masks))

    @property
    def precision(self) -> float:
        return self.matched / self.reported if self.reported else 0.0

    @property
    def recall(self) -> float:
        return self.matched / self.there if self.there else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def exact_share(self) -> float:
        return self.exact / self.photos if self.photos else 0.0

    def summary(self) -> dict:
        return {
            "reported": self.reported,
            "there": self.there,
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "f1": round(self.f1, 4),
            "exact_count": round(self.exact_share, 4),
            "duplicate_pairs": self.pairs,
        }


def choose_threshold(tallies: dict[float, Tally]) -> float:
    """The threshold with the best F1 (to 3 decimals); ties go to the larger exact-count share,
    then to the lower threshold."""
    return max(sorted(tallies), key=lambda k: (round(tallies[k].f1, 3), tallies[k].exact_share, -k))


@dataclasses.dataclass
class Evaluation:
    """A model on a ground truth: ``results`` (COCO results of every detection down to the model's
    floor, duplicates suppressed, for AP) and ``tallies`` (what a user sees, per threshold)."""

    results: list[dict]
    tallies: dict[float, Tally]

    @property
    def chosen(self) -> float:
        return choose_threshold(self.tallies)

    def threshold_summary(self, model_thr: float) -> dict:
        return {
            "chosen_by_f1": self.chosen,
            "model_default": model_thr,
            "sweep": [{"score_thr": k, **self.tallies[k].summary()} for k in sorted(self.tallies)],
        }


def nail_category_id(gt: dict) -> int:
    """The id the ground truth gives to ``nail`` (case-insensitive), or its only category's id."""
    categories = gt.get("categories", [])
    for cat in categories:
        if cat["name"].lower() == "nail":
            return int(cat["id"])
    if len(categories) == 1:
        return int(categories[0]["id"])
    raise ValueError(f"no 'nail' category among {[c['name'] for c in categories]}")


@dataclasses.dataclass(frozen=True)
class PhotoDetections:
    """One photo of a ground truth and the model's one pass over it.

    Attributes:
        image: the ground truth's image entry; truth: its nails; ignore: its crowd regions
            (``(K, H, W) bool``); rgb: the photo as the model got it (``(H, W, 3) uint8``).
        detections, to_photo: what ``NailSegmenter.detect`` returns: every detection at the
            model's size, and the function that takes shown nails back to the photo's size.
    """

    image: dict
    truth: Nails
    ignore: np.ndarray
    rgb: np.ndarray
    detections: Nails
    to_photo: Callable[[Nails], Nails]


def detect_photos(segmenter, gt: dict, img_dir: str | Path, progress: bool = False) -> Iterator[PhotoDetections]:
    """Run the model once on each photo of ``gt`` (read from ``img_dir / file_name``), in order;
    every photo is checked to be there before the first runs."""
    from tqdm.auto import tqdm

    paths = photo_paths(gt, img_dir)
    for image, path in tqdm(list(zip(gt["images"], paths)), unit="photo", disable=not progress):
        rgb = load_image_rgb(path)
        detections, to_photo = segmenter.detect(rgb)
        yield PhotoDetections(image, coco_nails(gt, image), ignore_regions(gt, image), rgb, detections, to_photo)


def evaluate_dataset(segmenter, gt: dict, img_dir: str | Path, thresholds=SWEEP, progress: bool = False) -> Evaluation:
    """Score the model on ``gt`` (ids are ``gt``'s): every detection for AP, and what a user sees
    at each threshold, with the model's duplicate suppression as everywhere (on the model's
    masks, as ``predict`` does).
    """
    category_id = nail_category_id(gt)
    thresholds = sorted({*thresholds, segmenter.score_thr})
    results, tallies = [], {k: Tally() for k in thresholds}
    for photo in detect_photos(segmenter, gt, img_dir, progress):
        shown = photo.to_photo(shown_nails(photo.detections, 0.0, segmenter.dedup))
        results += coco_results(shown, photo.image["id"], category_id)
        for k in thresholds:
            tallies[k].add(photo.to_photo(shown_nails(photo.detections, k, segmenter.dedup)), photo.truth, photo.ignore)
    return Evaluation(results, tallies)


def photo_paths(gt: dict, img_dir: str | Path) -> list[Path]:
    """The photos of ``gt`` under ``img_dir``; raises FileNotFoundError unless every one is there
    (checked before the model runs on the first, not halfway through an evaluation)."""
    paths = [Path(img_dir) / image["file_name"] for image in gt["images"]]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} photo(s) of the ground truth not found, e.g. {missing[0]}")
    return paths


def threshold_ground_truth(ann_file: str | Path, img_dir: str | Path | None = None, limit: int | None = None):
    """A COCO ground truth to choose a threshold on, and its photos' folder, checked.

    Args:
        img_dir: where the photos are (default: the folder ``nailseg convert`` recorded in the file).
        limit: only the first ``limit`` photos (a quicker, rougher choice).

    Returns:
        ``(gt, img_dir)``.

    Raises:
        ValueError: the file has no photos or does not say where they are.
    """
    from nailseg.datasets import load_coco

    gt = load_coco(ann_file)
    img_dir = img_dir or (gt.get("info") or {}).get("dataset_root")
    if not img_dir or not Path(img_dir).is_dir():
        raise ValueError(f"the photos of {Path(ann_file).name} are not found: give their folder")
    if not gt["images"]:
        raise ValueError(f"{Path(ann_file).name} has no photos to choose a threshold on")
    return {**gt, "images": gt["images"][:limit]}, Path(img_dir)


def record_chosen_score_thr(weights: str | Path, gt: dict, img_dir: str | Path, progress: bool = False) -> Evaluation:
    """Make the threshold a user of ``weights`` should get their default: best F1 over
    :data:`SWEEP` on a ground truth (:func:`threshold_ground_truth`, e.g. the ``valid.json`` the
    model was validated on), recorded in the weights' config (:func:`nailseg.weights.record_score_thr`).
    What ``nailseg export --choose-thr`` and the Train tab's export both run.

    Returns:
        The :class:`Evaluation`; its ``chosen`` is the threshold recorded.
    """
    from nailseg.inference import load_model
    from nailseg.weights import record_score_thr

    evaluation = evaluate_dataset(load_model(weights), gt, img_dir, progress=progress)
    record_score_thr(weights, evaluation.chosen)
    return evaluation


def coco_results(nails: Nails, image_id: int, category_id: int) -> list[dict]:
    """The ``MAX_DETECTIONS`` best-scoring nails of one photo in COCO results format."""
    top = nails[np.argsort(-nails.scores, kind="stable")[:MAX_DETECTIONS]]
    return top.to_coco_results(image_id, category_id)


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


def coco_nails(coco: dict, image: dict) -> Nails:
    """The annotations of one COCO image as ``Nails`` (score 1), in reading order.

    Crowd regions (``iscrowd`` 1) are left out: COCO counts them as no object, only as a place
    where detections cost nothing.
    """
    from nailseg.convert import segmentation_to_mask

    height, width = image["height"], image["width"]
    anns = [a for a in coco["annotations"] if a["image_id"] == image["id"] and not a.get("iscrowd")]
    if not anns:
        return Nails.empty(height, width)
    masks = [segmentation_to_mask(ann["segmentation"], height, width) for ann in anns]
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], np.float32)
    return Nails(boxes, np.stack(masks), np.ones(len(anns), np.float32)).in_reading_order()


def ignore_regions(coco: dict, image: dict) -> np.ndarray:
    """The crowd regions (``iscrowd`` 1) of one COCO image, ``(K, H, W) bool``."""
    from nailseg.convert import segmentation_to_mask

    height, width = image["height"], image["width"]
    anns = [a for a in coco["annotations"] if a["image_id"] == image["id"] and a.get("iscrowd")]
    masks = [segmentation_to_mask(ann["segmentation"], height, width) for ann in anns]
    return np.stack(masks) if masks else np.zeros((0, height, width), bool)


def apply_label_fixes(gt: dict, fixes_csv: str | Path) -> dict:
    """``gt`` with checked label errors made crowd regions, where nothing counts either way.

    ``fixes_csv`` has the columns ``file_name, x0, y0, x1, y1, fix, note``: ``fix`` is ``unlabelled
    nail`` (a real nail without a label, at that box: a crowd box is added), or ``not a nail`` or
    ``bad outline`` (the label whose box overlaps that box most, IoU >= 0.5, becomes crowd).

    Raises:
        ValueError: a row names a photo not in ``gt``, an unknown fix, or a label that is not there.
    """
    images = {image["file_name"]: image for image in gt["images"]}
    anns = [dict(a) for a in gt["annotations"]]
    next_id = max((a["id"] for a in anns), default=0) + 1
    with open(fixes_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for line, row in enumerate(rows, start=2):
        image = images.get(row["file_name"])
        box = [float(row[k]) for k in ("x0", "y0", "x1", "y1")]
        if image is None or row["fix"] not in LABEL_FIXES:
            raise ValueError(f"{Path(fixes_csv).name}, line {line}: unknown photo or fix {row['fix']!r}")
        if row["fix"] == "unlabelled nail":
            x0, y0, x1, y1 = box
            polygon = [x0, y0, x1, y0, x1, y1, x0, y1]
            crowd = {"segmentation": [polygon], "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0)}
            anns.append({**crowd, "id": next_id, "image_id": image["id"], "category_id": nail_category_id(gt),
                         "iscrowd": 1})  # fmt: skip
            next_id += 1
            continue
        own = [a for a in anns if a["image_id"] == image["id"] and not a.get("iscrowd")]
        overlaps = [_box_iou(box, [x, y, x + w, y + h]) for x, y, w, h in (a["bbox"] for a in own)]
        if not overlaps or max(overlaps) < 0.5:
            raise ValueError(f"{Path(fixes_csv).name}, line {line}: no label of {row['file_name']} at {box}")
        own[int(np.argmax(overlaps))]["iscrowd"] = 1
    return {**gt, "annotations": anns}


def _box_iou(a: list[float], b: list[float]) -> float:
    """IoU of two ``x0, y0, x1, y1`` boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def match_masks(predicted: np.ndarray, truth: np.ndarray, iou_thr: float = 0.5) -> np.ndarray:
    """One-to-one matching of predicted to true masks, each pair with IoU >= ``iou_thr``.

    Among all one-to-one assignments the one with the largest summed IoU over qualifying pairs
    (Hungarian), so a prediction between two nails cannot take a nail that another one fits better.

    Args:
        predicted: ``(N, H, W) bool``; truth: ``(M, H, W) bool``, same ``H, W``.

    Returns:
        ``(K, 2) int64`` pairs ``(predicted index, true index)``; ``K`` is the number of true
        positives, ``N - K`` false positives, ``M - K`` missed nails.
    """
    from scipy.optimize import linear_sum_assignment

    if predicted.shape[1:] != truth.shape[1:]:
        raise ValueError(f"masks differ in size: predicted {predicted.shape}, truth {truth.shape}")
    if not len(predicted) or not len(truth):
        return np.zeros((0, 2), np.int64)
    iou = mask_iou(predicted, truth)
    weight = np.where(iou >= iou_thr, iou, 0.0)
    rows, cols = linear_sum_assignment(weight, maximize=True)
    ok = weight[rows, cols] > 0
    return np.stack([rows[ok], cols[ok]], axis=1).astype(np.int64)


def duplicate_pairs(nails: Nails, iou_thr: float = 0.5, cover_thr: float = 0.7) -> np.ndarray:
    """Pairs of reported nails that a person sees as the same nail twice.

    A pair counts when its masks have IoU >= ``iou_thr`` or one mask covers >= ``cover_thr`` of
    the smaller one's area (a box spanning two nails covers each of them).

    Returns:
        ``(K, 2) int64`` index pairs ``(i, j)`` into ``nails``, ``i < j``.
    """
    inter, areas = mask_overlaps(nails.boxes_xyxy, nails.masks)
    dup = duplicate_matrix(inter, areas, iou_thr, cover_thr)
    return np.argwhere(np.triu(dup)).astype(np.int64).reshape(-1, 2)
