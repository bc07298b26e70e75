"""Nails (the result type) and the pure drawing/cropping functions, on arrays made here."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from nailseg import draw
from nailseg.result import Nails


def make_nails(boxes: list[tuple[int, int, int, int]], size=(40, 60), scores=None) -> Nails:
    h, w = size
    masks = np.zeros((len(boxes), h, w), bool)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        masks[k, y0:y1, x0:x1] = True
    scores = np.array(scores if scores is not None else [0.9] * len(boxes), np.float32)
    return Nails(np.array(boxes, np.float32).reshape(-1, 4), masks, scores)


@pytest.mark.parametrize(
    "boxes, masks, scores, message",
    [
        (np.zeros((1, 4)), np.zeros((2, 5, 5), bool), np.zeros(1), "masks must be"),
        (np.zeros((2, 4)), np.zeros((1, 5, 5), bool), np.zeros(1), "boxes_xyxy must be"),
        (np.zeros((1, 4)), np.zeros((1, 5, 5), np.uint8), np.zeros(1), "bool"),
        (np.zeros((1, 4)), np.zeros((1, 5, 5), bool), np.zeros((1, 1)), "scores must be"),
    ],
)
def test_nails_validates_shapes(boxes, masks, scores, message):
    with pytest.raises(ValueError, match=message):
        Nails(boxes, masks, scores)


@pytest.mark.parametrize(
    "boxes, expected_order",
    [
        ([], []),
        ([(10, 5, 20, 15)], [0]),
        ([(40, 5, 50, 15), (10, 5, 20, 15), (25, 20, 35, 30)], [1, 2, 0]),  # left to right
        ([(10, 25, 20, 35), (10, 2, 20, 12)], [1, 0]),  # same column: top first
    ],
)
def test_reading_order(boxes, expected_order):
    nails = make_nails(boxes)
    ordered = nails.in_reading_order()
    assert ordered.boxes_xyxy.tolist() == nails.boxes_xyxy[expected_order].tolist()


def test_filter_records_and_areas():
    nails = make_nails([(0, 0, 10, 10), (20, 0, 25, 4)], scores=[0.9, 0.3])
    assert nails.areas.tolist() == [100, 20]
    kept = nails.filter(0.5)
    assert len(kept) == 1
    assert kept.to_records() == [{"number": 1, "score": 0.9, "box_xyxy": [0.0, 0.0, 10.0, 10.0], "area": 100}]
    assert len(nails.filter(0.95)) == 0 and nails.filter(0.95).image_size == (40, 60)


@pytest.mark.parametrize("boxes", [[], [(0, 0, 10, 10), (20, 5, 31, 9)]])
def test_coco_results_round_trip(boxes):
    nails = make_nails(boxes)
    results = json.loads(json.dumps(nails.to_coco_results(image_id=7)))
    assert len(results) == len(boxes)
    for r, m, (x0, y0, x1, y1) in zip(results, nails.masks, boxes):
        assert r["image_id"] == 7 and r["category_id"] == 1
        assert r["bbox"] == [x0, y0, x1 - x0, y1 - y0]
        assert np.array_equal(mask_utils.decode(r["segmentation"]).astype(bool), m)


def test_overlay_is_pure_and_marks_nails():
    image = np.full((40, 60, 3), 50, np.uint8)
    nails = make_nails([(5, 5, 20, 20)])
    before = image.copy()
    out = draw.overlay(image, nails)
    assert np.array_equal(image, before)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (out[12, 12] != image[12, 12]).any()  # tinted inside the nail
    assert np.array_equal(out[35, 50], image[35, 50])  # untouched far away
    assert np.array_equal(draw.overlay(image, make_nails([])), image)


@pytest.mark.parametrize(
    "box, options, window",
    [
        ((10, 10, 20, 30), draw.CropOptions(margin=0), (10, 10, 20, 30)),
        ((10, 10, 20, 30), draw.CropOptions(margin=0.1), (8, 8, 22, 32)),
        ((10, 10, 20, 30), draw.CropOptions(margin=0, square=True), (5, 10, 25, 30)),
        ((0, 0, 4, 4), draw.CropOptions(margin=0.5), (-2, -2, 6, 6)),  # past the edge: padded
    ],
)
def test_crop_window(box, options, window):
    assert draw.crop_window(np.array(box, np.float32), options) == window


def test_crops_cutouts_and_sizes():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
    nails = make_nails([(10, 10, 20, 30), (0, 0, 4, 4)])
    boxes = draw.crop_boxes(image, nails, draw.CropOptions(margin=0))
    assert [b.shape for b in boxes] == [(20, 10, 3), (4, 4, 3)]
    assert np.array_equal(boxes[0], image[10:30, 10:20])
    cuts = draw.cutouts(image, nails, draw.CropOptions(margin=0.5))
    assert cuts[1].shape == (8, 8, 4)
    assert cuts[1][..., 3].sum() == 16 * 255  # alpha only on the 4x4 nail
    assert (cuts[1][:2, :2] == 0).all()  # outside the photo: transparent black padding
    fixed = draw.crop_boxes(image, nails, draw.CropOptions(size=224, mask_background=True))
    assert all(c.shape == (224, 224, 3) for c in fixed)
    assert draw.crop_boxes(image, make_nails([])) == []


def test_combined_mask():
    nails = make_nails([(0, 0, 2, 2), (5, 5, 6, 6)])
    m = draw.combined_mask(nails)
    assert m.dtype == np.uint8 and set(np.unique(m)) == {0, 255} and (m == 255).sum() == 5
    assert draw.combined_mask(make_nails([])).sum() == 0
