"""COCO AP on a tiny ground truth, checked against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from nailseg.evaluate import (
    Tally,
    apply_label_fixes,
    choose_threshold,
    coco_ap,
    duplicate_pairs,
    ignore_regions,
    match_masks,
    nail_category_id,
)
from nailseg.result import Nails


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def _square(x, y, s=10, size=(50, 50)):
    m = np.zeros(size, bool)
    m[y : y + s, x : x + s] = True
    return m


@pytest.fixture
def gt():
    anns = []
    for k, (x, y) in enumerate([(5, 5), (30, 30)], start=1):
        anns.append(
            {
                "id": k,
                "image_id": 1,
                "category_id": 3,
                "bbox": [x, y, 10, 10],
                "area": 100,
                "iscrowd": 0,
                "segmentation": _rle(_square(x, y)),
            }
        )
    return {
        "images": [{"id": 1, "width": 50, "height": 50, "file_name": "a.png"}],
        "annotations": anns,
        "categories": [{"id": 3, "name": "Nail"}],
    }


def _det(x, y, score):
    mask = _rle(_square(x, y))
    return {"image_id": 1, "category_id": 3, "bbox": [x, y, 10, 10], "score": score, "segmentation": mask}


def test_category_lookup(gt):
    assert nail_category_id(gt) == 3
    with pytest.raises(ValueError):
        nail_category_id({"categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]})


@pytest.mark.parametrize(
    "detections, expected_ap",
    [
        ([], 0.0),
        ([_det(5, 5, 0.9), _det(30, 30, 0.8)], 1.0),  # both found
        # One hit ranked first, then a miss: precision 1 up to recall 0.5, nothing after:
        # 51 of COCO's 101 recall points have precision 1 -> 51/101.
        ([_det(5, 5, 0.9), _det(20, 5, 0.8)], 51 / 101),
        # The miss ranked first: precision 0.5 at recall 0.5 -> 0.5 * 51/101.
        ([_det(20, 5, 0.9), _det(5, 5, 0.8)], 0.5 * 51 / 101),
    ],
)
def test_coco_ap_by_hand(gt, detections, expected_ap):
    scores = coco_ap(gt, detections)
    for iou_type in ("bbox", "segm"):
        assert scores[iou_type]["AP"] == pytest.approx(expected_ap, abs=1e-4)
        assert scores[iou_type]["AP50"] == pytest.approx(expected_ap, abs=1e-4)


def _masks(*squares, size=(50, 50)):
    """``(N, H, W) bool`` from ``(x, y, side)`` squares."""
    return np.stack([_square(x, y, s, size) for x, y, s in squares]) if squares else np.zeros((0, *size), bool)


@pytest.mark.parametrize(
    "predicted, truth, expected",
    [
        ([], [], []),
        ([], [(5, 5, 10)], []),
        ([(5, 5, 10)], [], []),
        ([(30, 30, 10), (5, 5, 10)], [(5, 5, 10), (30, 30, 10)], [(0, 1), (1, 0)]),
        ([(5, 5, 10), (6, 6, 10)], [(5, 5, 10)], [(0, 0)]),  # one nail, one match
        ([(11, 5, 10)], [(5, 5, 10)], []),  # IoU 0.25
        # The first prediction fits both nails equally (IoU 0.67); matched greedily in order it
        # could take the first nail, which the second fits exactly, and leave one nail unmatched.
        ([(5, 5, 10), (5, 7, 10)], [(5, 7, 10), (5, 3, 10)], [(0, 1), (1, 0)]),
    ],
)
def test_match_masks(predicted, truth, expected):
    pairs = match_masks(_masks(*predicted), _masks(*truth))
    assert pairs.shape == (len(expected), 2) and pairs.dtype == np.int64
    assert sorted(map(tuple, pairs.tolist())) == expected


def test_match_masks_refuses_other_sizes():
    with pytest.raises(ValueError, match="size"):
        match_masks(_masks((5, 5, 10)), _masks((5, 5, 10), size=(40, 50)))


def _nails(*squares):
    masks = _masks(*squares)
    boxes = np.array([[x, y, x + s, y + s] for x, y, s in squares], np.float32).reshape(-1, 4)
    return Nails(boxes, masks, np.ones(len(squares), np.float32))


@pytest.mark.parametrize(
    "squares, expected",
    [
        ([], []),
        ([(5, 5, 10)], []),
        ([(5, 5, 10), (15, 5, 10)], []),  # touching
        ([(5, 5, 10), (6, 5, 10)], [(0, 1)]),  # IoU 0.82
        ([(5, 5, 10), (8, 5, 10)], [(0, 1)]),  # IoU 70 / 130 = 0.54
        ([(5, 5, 10), (9, 5, 10)], []),  # IoU 0.43, cover 0.6
        ([(30, 30, 10), (5, 5, 20), (5, 5, 10), (15, 15, 10)], [(1, 2), (1, 3)]),  # one covers two
    ],
)
def test_duplicate_pairs(squares, expected):
    assert duplicate_pairs(_nails(*squares)).tolist() == [list(p) for p in expected]


def test_tally_counts_what_a_user_sees():
    truth = _nails((5, 5, 10), (30, 30, 10))
    tally = Tally()
    tally.add(_nails((5, 5, 10), (6, 6, 10), (30, 5, 10)), truth)  # one hit, its duplicate, one false nail
    tally.add(_nails((5, 5, 10), (30, 30, 10)), truth)  # exactly right
    assert (tally.photos, tally.reported, tally.there, tally.matched) == (2, 5, 4, 3)
    assert (tally.pairs, tally.photos_with_pairs, tally.exact) == (1, 1, 1)
    assert tally.precision == 3 / 5 and tally.recall == 3 / 4
    assert tally.f1 == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    assert tally.summary()["exact_count"] == 0.5


def _tally(f1_matched: int, exact: int) -> Tally:
    """10 nails there and reported, ``f1_matched`` matched, over 4 photos with ``exact`` right counts."""
    return Tally(photos=4, reported=10, there=10, matched=f1_matched, exact=exact)


def test_threshold_is_chosen_by_f1_then_exact_count_then_lower():
    assert choose_threshold({0.5: _tally(7, 3), 0.7: _tally(8, 1), 0.9: _tally(6, 4)}) == 0.7  # best F1
    assert choose_threshold({0.5: _tally(8, 1), 0.7: _tally(8, 3), 0.9: _tally(8, 2)}) == 0.7  # tie: exact
    assert choose_threshold({0.5: _tally(8, 2), 0.7: _tally(8, 2)}) == 0.5  # full tie: the lower


def test_a_shown_nail_in_a_crowd_region_counts_neither_way():
    """A nail shown where the labels say "crowd" (an unlabelled nail, checked by a person) is no
    false nail; one only partly inside (under half its area) still is."""
    truth = _nails((5, 5, 10))
    crowd = _masks((30, 30, 10))
    inside, partly = _nails((5, 5, 10), (31, 31, 10)), _nails((5, 5, 10), (36, 30, 10))
    for shown, reported in ((inside, 1), (partly, 2)):
        tally = Tally()
        tally.add(shown, truth, crowd)
        assert (tally.reported, tally.matched, tally.exact) == (reported, 1, reported == 1)
    plain = Tally()
    plain.add(inside, truth)  # without the crowd region: a false nail and a wrong count
    assert (plain.reported, plain.exact) == (2, 0)


def _write_fixes(path, *rows):
    lines = ["file_name,x0,y0,x1,y1,fix,note", *(",".join(map(str, row)) for row in rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_label_fixes_become_crowd_regions_and_ap_counts_them_so(gt, tmp_path):
    fixes = _write_fixes(
        tmp_path / "fixes.csv",
        ("a.png", 20, 5, 30, 15, "unlabelled nail", "a nail on the ring finger, no label"),
        ("a.png", 29, 31, 40, 40, "not a nail", "a ring labelled as a nail"),
    )
    fixed = apply_label_fixes(gt, fixes)
    assert gt["annotations"][1].get("iscrowd") == 0  # the original is left as it was
    crowd = ignore_regions(fixed, fixed["images"][0])
    assert crowd.shape == (2, 50, 50) and crowd.any(axis=0)[5:15, 20:30].all() and crowd.any(axis=0)[30:40, 30:40].all()
    assert crowd.sum() < 2.5 * 100  # the two regions, not more
    # The detection at the unlabelled nail costs nothing now; the labelled "ring" is no longer missed.
    detections = [_det(5, 5, 0.9), _det(20, 5, 0.8)]
    assert coco_ap(gt, detections)["segm"]["AP"] == pytest.approx(51 / 101, abs=1e-3)
    assert coco_ap(fixed, detections)["segm"]["AP"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (("b.png", 0, 0, 5, 5, "unlabelled nail", ""), "unknown photo"),
        (("a.png", 0, 0, 5, 5, "looks odd", ""), "unknown photo or fix"),
        (("a.png", 0, 0, 5, 5, "not a nail", ""), "no label of a.png"),
    ],
)
def test_label_fixes_name_what_they_cannot_apply(gt, tmp_path, row, message):
    with pytest.raises(ValueError, match=message):
        apply_label_fixes(gt, _write_fixes(tmp_path / "fixes.csv", row))
