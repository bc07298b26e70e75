"""Nails (the result type) and the pure drawing/cropping functions, on arrays made here."""

from __future__ import annotations

import json

import cv2
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


def boxes_and_cutouts(image, nails, options):
    crops = draw.crop_nails(image, nails, options)
    return [c.box for c in crops], [c.cutout for c in crops]


def test_crops_cutouts_and_sizes():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
    nails = make_nails([(10, 10, 20, 30), (0, 0, 4, 4)])
    boxes, _ = boxes_and_cutouts(image, nails, draw.CropOptions(margin=0))
    assert [b.shape for b in boxes] == [(20, 10, 3), (4, 4, 3)]
    assert np.array_equal(boxes[0], image[10:30, 10:20])
    _, cuts = boxes_and_cutouts(image, nails, draw.CropOptions(margin=0.5))
    assert cuts[1].shape == (8, 8, 4)
    assert cuts[1][..., 3].sum() == 16 * 255  # alpha only on the 4x4 nail
    assert (cuts[1][:2, :2] == 0).all()  # outside the photo: transparent black padding
    fixed, _ = boxes_and_cutouts(image, nails, draw.CropOptions(size=224, mask_background=True))
    assert all(c.shape == (224, 224, 3) for c in fixed)
    assert draw.crop_nails(image, make_nails([])) == []
    unaligned = draw.crop_nails(image, nails)[0]
    assert (unaligned.angle_deg, unaligned.tip) == (0.0, "")


SKIN, NAIL, BACKGROUND = (224, 172, 150), (240, 200, 210), (30, 120, 30)


def finger(angle_deg: float, size: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """A photo of one finger whose tip points at ``angle_deg`` (clockwise from +x, as seen), and its nail."""
    image = np.full((size, size, 3), BACKGROUND, np.uint8)
    centre, t = np.array([size / 2, size / 2]), np.radians(angle_deg)
    d, n = np.array([np.cos(t), np.sin(t)]), np.array([-np.sin(t), np.cos(t)])
    tip, root = centre + d * 45, centre - d * size
    cv2.fillConvexPoly(
        image, np.array([tip + n * 32, tip - n * 32, root - n * 32, root + n * 32]).astype(np.int32), SKIN
    )
    mask = np.zeros((size, size), np.uint8)
    cv2.ellipse(mask, (size // 2, size // 2), (40, 20), angle_deg, 0, 360, 1, -1)
    image[mask > 0] = NAIL
    return image, mask.astype(bool)


@pytest.mark.parametrize("angle", range(-180, 180, 30))
def test_aligned_crops_stand_the_nail_up_tip_first(angle):
    image, mask = finger(angle)
    ys, xs = np.nonzero(mask)
    nails = Nails(
        np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32), mask[None], np.ones(1, np.float32)
    )
    crop = draw.crop_nails(image, nails, draw.CropOptions(margin=0.6, size=224, align=True))[0]
    assert crop.box.shape == (224, 224, 3) and crop.cutout.shape == (224, 224, 4)
    alpha = crop.cutout[..., 3] > 0
    m = cv2.moments(alpha.astype(np.uint8), binaryImage=True)
    long_axis = 0.5 * np.degrees(np.arctan2(2 * m["mu11"], m["mu20"] - m["mu02"]))
    assert abs(abs(long_axis) - 90) < 2  # vertical
    rows = np.flatnonzero(alpha.any(axis=1))
    column = int(np.flatnonzero(alpha.any(axis=0)).mean())
    assert crop.tip == "up"
    assert tuple(crop.box[max(rows[0] - 20, 0), column]) == BACKGROUND  # beyond the tip: background
    assert tuple(crop.box[min(rows[-1] + 20, 223), column]) == SKIN  # below: the finger


def test_a_round_nail_on_plain_skin_has_no_known_tip():
    image = np.full((100, 100, 3), SKIN, np.uint8)
    mask = np.zeros((100, 100), bool)
    mask[40:60, 40:60] = True
    nails = Nails(np.array([[40, 40, 60, 60]], np.float32), mask[None], np.ones(1, np.float32))
    crop = draw.crop_nails(image, nails, draw.CropOptions(align=True))[0]
    assert crop.tip == "unknown" and abs(crop.angle_deg) <= 90


def test_combined_mask():
    nails = make_nails([(0, 0, 2, 2), (5, 5, 6, 6)])
    m = draw.combined_mask(nails)
    assert m.dtype == np.uint8 and set(np.unique(m)) == {0, 255} and (m == 255).sum() == 5
    assert draw.combined_mask(make_nails([])).sum() == 0
