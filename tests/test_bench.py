"""The benchmarks: their own models go through the loader the app uses (a bench that cannot run measures
nothing), and what they count is counted right."""

from __future__ import annotations

import pytest
from support import PHOTOS, load_bench

from nailseg.images import load_image_rgb
from nailseg.inference import load_model


def test_latency_reference_model_loads_as_data_and_segments(tmp_path):
    weights = load_bench("latency").export_reference(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "mask-rcnn_r50_fpn_reference.json",
        "mask-rcnn_r50_fpn_reference.safetensors",
    ]
    segmenter = load_model(str(weights), device="cpu")  # the same call bench/latency.py's worker makes
    assert type(segmenter.model.backbone).__name__ == "ResNet"
    resize = next(t for t in segmenter.pipeline.transforms if type(t).__name__ == "Resize")
    assert tuple(resize.scale) == (432, 432)  # the photos' size, not the stock 1333x800
    photo = load_image_rgb(PHOTOS[0])
    nails = segmenter.predict_all(photo)
    # Random weights find anything or nothing; what comes back is still nails of this photo.
    assert nails.masks.shape[1:] == photo.shape[:2] and len(nails.masks) == len(nails.scores) == len(nails.boxes_xyxy)
    assert ((nails.scores >= 0) & (nails.scores <= 1)).all()


def test_user_view_semantic_tally_locates_the_wrong_pixels():
    """A mask one pixel off everywhere: a poor IoU, the right area, and all of it within 1 px of the outline."""
    import numpy as np

    from nailseg.result import Nails

    user_view = load_bench("user_view")
    truth = np.zeros((40, 40), bool)
    truth[10:20, 10:20] = True
    shifted = np.roll(truth, 1, axis=1)
    tally = user_view.SemanticTally()
    tally.add(Nails(np.array([[11, 10, 21, 20]], np.float32), shifted[None], np.ones(1, np.float32)), truth, 1)
    assert tally.iou_sum == pytest.approx(90 / 110) and tally.exact == 1
    assert tally.predicted_px == tally.true_px == 100
    assert tally.edge_fixed_iou_sum == 1.0
    far = np.zeros_like(truth)
    far[25:35, 25:35] = True  # a wrong nail elsewhere: not an edge error
    tally.add(Nails(np.array([[25, 25, 35, 35]], np.float32), far[None], np.ones(1, np.float32)), truth, 1)
    assert tally.edge_fixed_iou_sum == 1.0  # the second photo adds 0: fixing its edges does not help


def test_small_nails_counts_what_evaluate_counts(tmp_path):
    """bench/small_nails.py's recall is `nailseg evaluate`'s, nail by nail, and its anchor fit is the
    model's: a 14 px nail fits no anchor at IoU 0.3, a 32 px square on the stride-4 grid fits one exactly."""
    import shutil

    import numpy as np
    from PIL import Image
    from support import DATA

    from nailseg.datasets import convert_dataset, load_coco, save_report
    from nailseg.evaluate import evaluate_dataset

    small_nails = load_bench("small_nails")
    save_report(convert_dataset(DATA, valid_fraction=0), tmp_path)
    gt = load_coco(tmp_path / "train.json")
    segmenter = load_model(None, device="cpu")
    table = small_nails.nails_by_anchor_fit(segmenter, gt, DATA, segmenter.score_thr)
    tally = evaluate_dataset(segmenter, gt, DATA, thresholds=[segmenter.score_thr]).tallies[segmenter.score_thr]
    assert len(table) == tally.there == 20
    assert int(table[:, 1].sum()) == tally.matched
    assert ((table[:, 0] > 0) & (table[:, 0] <= 1)).all()

    # A photo half the size is seen at the same 432 px, so its nails fit the anchors as well.
    half = tmp_path / "half"
    shutil.copytree(DATA / "labels", half / "labels")  # YOLO-seg labels are in fractions of the photo
    (half / "images").mkdir()
    for photo in (DATA / "images").iterdir():
        Image.open(photo).reduce(2).save(half / "images" / photo.name, quality=95)
    save_report(convert_dataset(half, valid_fraction=0, min_area=1), half / "coco")  # keep the tiniest nail
    halved = small_nails.nails_by_anchor_fit(segmenter, load_coco(half / "coco" / "train.json"), half, 0.9)
    assert len(halved) == 20 and np.abs(halved[:, 0] - table[:, 0]).max() < 0.1

    # The smallest anchor (finest stride, scale, ratio 1) is matched exactly; a nail a third its side is not.
    priors = segmenter.model.rpn_head.prior_generator
    side = float(priors.strides[0][0] * min(priors.scales))
    boxes = np.array([[200, 200, 200 + side / 3, 200 + side / 3], [0, 0, side, side]], np.float32)
    ious = small_nails.best_anchor_iou(priors, boxes, 432, 432)
    assert ious[0] < 0.3 and abs(ious[1] - 1.0) < 1e-6


def test_label_audit_lists_what_evaluate_counts_wrong_and_its_fixes_undo_it(tmp_path):
    """bench/label_audit.py's false and missed nails are `nailseg evaluate`'s, one by one; written as
    label fixes (each false nail an unlabelled nail, each missed one a bad outline), they leave
    nothing wrong, and a contact sheet holds up to 24 of them."""
    import csv

    from support import DATA

    from nailseg.datasets import convert_dataset, load_coco, save_report
    from nailseg.evaluate import apply_label_fixes, evaluate_dataset

    label_audit = load_bench("label_audit")
    save_report(convert_dataset(DATA, valid_fraction=0), tmp_path)
    gt = load_coco(tmp_path / "train.json")
    segmenter = load_model(None, device="cpu")
    thr = 0.3  # low enough that the six photos show a false nail
    false, missed = label_audit.audit(segmenter, gt, DATA, thr)
    tally = evaluate_dataset(segmenter, gt, DATA, thresholds=[thr]).tallies[thr]
    assert len(false) == tally.reported - tally.matched > 0 and len(missed) == tally.there - tally.matched
    assert label_audit.main(["--ann-file", str(tmp_path / "train.json"), "--img-dir", str(DATA),
                             "--out", str(tmp_path / "audit"), "--score-thr", str(thr)]) == 0  # fmt: skip
    sheets = sorted((tmp_path / "audit").glob("*.png"))
    assert len(sheets) == -(-len(false) // 24) + -(-len(missed) // 24)

    with (tmp_path / "fixes.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "x0", "y0", "x1", "y1", "fix", "note"])
        for cases, fix in ((false, "unlabelled nail"), (missed, "bad outline")):
            writer.writerows([c.file_name, *c.box, fix, c.id] for c in cases)
    fixed = evaluate_dataset(segmenter, apply_label_fixes(gt, tmp_path / "fixes.csv"), DATA, thresholds=[thr])
    after = fixed.tallies[thr]
    assert after.reported == after.matched == after.there == tally.matched
