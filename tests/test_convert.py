"""Pure conversion steps: binarize, cut into nails, encode, round-trip through pycocotools."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from nailseg.convert import (
    NAIL_CATEGORY,
    binarize_mask,
    build_coco,
    encode_segmentation,
    instance_to_annotation,
    mask_to_instances,
    polygons_to_instances,
    split_touching,
)


def disc(shape: tuple[int, int], centre: tuple[int, int], radius: int) -> np.ndarray:
    """``(H, W) bool`` filled circle, centre ``(x, y)`` in pixels."""
    canvas = np.zeros(shape, np.uint8)
    cv2.circle(canvas, centre, radius, 1, thickness=-1)
    return canvas.astype(bool)


def ring(shape=(40, 40)) -> np.ndarray:
    """A disc with a hole: no single polygon can hold it."""
    return disc(shape, (20, 20), 15) & ~disc(shape, (20, 20), 6)


def boxes(shape, *slices) -> np.ndarray:
    """``(H, W) bool`` with each ``(ys, xs)`` slice pair set."""
    out = np.zeros(shape, bool)
    for ys, xs in slices:
        out[ys, xs] = True
    return out


def coco_masks(images: list[dict], anns_per_image: list[list[dict]], tmp_path) -> list[list[np.ndarray]]:
    """Write a COCO json with :func:`build_coco`, load it with pycocotools, decode every annotation."""
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(build_coco(images, anns_per_image, {"dataset_root": str(tmp_path)})))
    coco = COCO(str(path))
    return [[coco.annToMask(a).astype(bool) for a in coco.imgToAnns[i["id"]]] for i in coco.dataset["images"]]


# --- binarize_mask ------------------------------------------------------------------------------

SOFT = np.array([[0, 40, 127, 128, 200, 255]], np.uint8)  # anti-aliased edge: 50 % is the cut
BINARIZE_CASES = {
    "empty array": (np.zeros((0, 0), np.uint8), np.zeros((0, 0), bool)),
    "all background": (np.zeros((3, 4), np.uint8), np.zeros((3, 4), bool)),
    "0/1": (np.array([[0, 1], [1, 0]], np.uint8), np.array([[0, 1], [1, 0]], bool)),
    "0/255": (np.array([[0, 255], [255, 0]], np.uint8), np.array([[0, 1], [1, 0]], bool)),
    "soft edges 8-bit": (SOFT, np.array([[0, 0, 0, 1, 1, 1]], bool)),
    "faint noise only": (np.array([[0, 3, 9]], np.uint8), np.array([[0, 0, 0]], bool)),
    "16-bit 0/65535": (np.array([[0, 65535]], np.uint16), np.array([[0, 1]], bool)),
    "16-bit soft": (np.array([[0, 30000, 40000, 65535]], np.uint16), np.array([[0, 0, 1, 1]], bool)),
    "float 0..1": (np.array([[0.0, 0.4, 0.6, 1.0]], np.float32), np.array([[0, 0, 1, 1]], bool)),
    "bool": (np.array([[False, True]]), np.array([[0, 1]], bool)),
    "colour white on black": (
        np.stack([np.array([[0, 255]], np.uint8)] * 3, axis=2),
        np.array([[0, 1]], bool),
    ),
    "colour red on black (BGR)": (
        np.array([[[0, 0, 0], [0, 0, 255]]], np.uint8),
        np.array([[0, 1]], bool),
    ),
    "BGRA with opaque alpha": (
        np.array([[[0, 0, 0, 255], [255, 255, 255, 255]]], np.uint8),
        np.array([[0, 1]], bool),
    ),
    "single channel (H, W, 1)": (np.array([[[0], [255]]], np.uint8), np.array([[0, 1]], bool)),
}


@pytest.mark.parametrize(("mask", "expected"), BINARIZE_CASES.values(), ids=BINARIZE_CASES.keys())
def test_binarize_mask(mask, expected):
    out = binarize_mask(mask)
    assert out.dtype == bool
    np.testing.assert_array_equal(out, expected)


def test_binarize_rejects_4d():
    with pytest.raises(ValueError, match="shape"):
        binarize_mask(np.zeros((2, 2, 2, 2), np.uint8))


@pytest.mark.shared
def test_binarize_real_soft_mask(shared_data):
    """The seed's own mask has hundreds of grey levels; the cut is at half of 255."""
    path = next((shared_data / "seed-sample" / "Masks").rglob("*.png"))
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    grey = mask if mask.ndim == 2 else mask[..., :3].max(axis=2)
    assert len(np.unique(grey)) > 100, "expected a soft, anti-aliased mask"
    binary = binarize_mask(mask)
    np.testing.assert_array_equal(binary, grey >= 128)
    nails = mask_to_instances(binary)
    assert nails, "the seed sample shows nails"
    # The soft rim is thin: thresholding keeps the bulk of every nail, not a halo or a core.
    assert 0.5 * (grey > 0).sum() < binary.sum() <= (grey > 0).sum()


# --- mask_to_instances / split_touching ---------------------------------------------------------

INSTANCE_CASES = {
    # name: (binary mask, min_area, expected pixel counts of the nails, sorted)
    "empty mask": (np.zeros((20, 20), bool), 20, []),
    "zero-size mask": (np.zeros((0, 0), bool), 20, []),
    "all ones": (np.ones((12, 9), bool), 20, [108]),
    "ring with a hole": (ring(), 20, [int(ring().sum())]),
    "two separate blobs": (boxes((20, 30), (slice(2, 8), slice(2, 8)), (slice(10, 16), slice(20, 28))), 20, [36, 48]),
    "two blobs touching along an edge": (
        boxes((20, 30), (slice(2, 8), slice(2, 8)), (slice(2, 8), slice(8, 14))),
        20,
        [72],
    ),
    "diagonal touch is one nail (8-connected)": (
        boxes((20, 20), (slice(0, 5), slice(0, 5)), (slice(5, 10), slice(5, 10))),
        20,
        [50],
    ),
    "specks below min-area dropped": (
        boxes((30, 30), (slice(0, 2), slice(0, 2)), (slice(10, 13), slice(10, 16)), (slice(20, 25), slice(20, 25))),
        20,
        [25],
    ),
    "region of exactly min-area kept": (boxes((10, 10), (slice(0, 4), slice(0, 5))), 20, [20]),
    "min-area 0 keeps a single pixel": (boxes((5, 5), (slice(2, 3), slice(2, 3))), 0, [1]),
}


@pytest.mark.parametrize(("binary", "min_area", "areas"), INSTANCE_CASES.values(), ids=INSTANCE_CASES.keys())
def test_mask_to_instances(binary, min_area, areas):
    nails = mask_to_instances(binary, min_area=min_area)
    assert sorted(int(n.sum()) for n in nails) == areas
    for nail in nails:
        assert nail.shape == binary.shape and nail.dtype == bool
        assert not (nail & ~binary).any(), "a nail must lie inside the mask"
    union = np.zeros(binary.shape, bool)
    for nail in nails:
        assert not (union & nail).any(), "nails must not overlap"
        union |= nail


def two_discs(shape=(60, 90), gap: int = 34) -> np.ndarray:
    """Two overlapping discs of radius 18, centres ``gap`` px apart: at 34 px the waist is ~12 px
    wide, narrower than the discs' half width, so the split's default seeds fall apart."""
    return disc(shape, (28, 30), 18) | disc(shape, (28 + gap, 30), 18)


def ellipse(shape=(60, 90)) -> np.ndarray:
    """One elongated nail (axes 35 x 15 px): nothing to split."""
    canvas = np.zeros(shape, np.uint8)
    cv2.ellipse(canvas, (45, 30), (35, 15), 20, 0, 360, 1, thickness=-1)
    return canvas.astype(bool)


SPLIT_CASES = {
    "empty mask": (np.zeros((30, 30), bool), 0, 0),
    "two overlapping discs": (two_discs(), 1, 2),
    "discs merged into one wide blob stay whole": (two_discs(gap=22), 1, 1),
    "single ellipse": (ellipse(), 1, 1),
    "single disc": (disc((40, 40), (20, 20), 12), 1, 1),
    "ring": (ring(), 1, 1),
}


@pytest.mark.parametrize(("binary", "without", "with_split"), SPLIT_CASES.values(), ids=SPLIT_CASES.keys())
def test_split_touching(binary, without, with_split):
    assert len(mask_to_instances(binary)) == without
    nails = mask_to_instances(binary, split=True)
    assert len(nails) == with_split
    if nails:
        np.testing.assert_array_equal(np.logical_or.reduce(nails), binary)  # a partition of the mask
        assert sum(int(n.sum()) for n in nails) == binary.sum()


def test_split_touching_halves_are_the_discs():
    left, right = sorted(split_touching(two_discs()), key=lambda m: np.nonzero(m)[1].mean())
    assert np.nonzero(left)[1].mean() < 45 < np.nonzero(right)[1].mean()  # the waist is at x = 45
    assert abs(int(left.sum()) - int(right.sum())) <= 0.05 * two_discs().sum()


# --- polygons_to_instances ----------------------------------------------------------------------

POLYGON_CASES = {
    "no polygons": ([], []),
    "pixel-edge square": ([np.array([[1, 1], [5, 1], [5, 5], [1, 5]], float)], None),
    "two triangles": (
        [np.array([[0, 0], [8, 0], [0, 8]], float), np.array([[10, 10], [16, 10], [16, 16]], float)],
        None,
    ),
}


@pytest.mark.parametrize(("polygons", "areas"), POLYGON_CASES.values(), ids=POLYGON_CASES.keys())
def test_polygons_to_instances(polygons, areas):
    nails = polygons_to_instances(polygons, 20, 20)
    assert len(nails) == len(polygons)
    assert all(n.shape == (20, 20) and n.dtype == bool for n in nails)
    if areas is not None:
        assert [int(n.sum()) for n in nails] == areas
    for nail, poly in zip(nails, polygons, strict=True):
        x0, y0 = poly.min(axis=0).astype(int)
        x1, y1 = poly.max(axis=0).astype(int)
        ys, xs = np.nonzero(nail)
        assert xs.min() >= x0 and ys.min() >= y0 and xs.max() <= x1 and ys.max() <= y1


def test_pixel_edge_square_is_exact():
    """Pixel (x, y) covers [x, x+1] x [y, y+1]: the square (1,1)-(5,5) is pixels 1..4, 16 of them."""
    (nail,) = polygons_to_instances([np.array([[1, 1], [5, 1], [5, 5], [1, 5]], float)], 8, 8)
    np.testing.assert_array_equal(nail, boxes((8, 8), (slice(1, 5), slice(1, 5))))


# --- encode / annotate / round trip -------------------------------------------------------------


def random_regions(seed: int = 0, count: int = 120, shape=(48, 64)) -> list[np.ndarray]:
    """Varied non-empty regions: ellipses, random (self-intersecting) polygons, thresholded noise
    (several pieces, holes), one-pixel lines, single pixels, frame-filling and border-touching shapes."""
    rng = np.random.default_rng(seed)
    regions = []
    for i in range(count):
        canvas = np.zeros(shape, np.uint8)
        kind = i % 6
        if kind == 0:
            centre = (int(rng.integers(0, shape[1])), int(rng.integers(0, shape[0])))
            axes = (int(rng.integers(1, 25)), int(rng.integers(1, 15)))
            cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, thickness=-1)
        elif kind == 1:
            pts = rng.integers(-5, (shape[1] + 5, shape[0] + 5), size=(int(rng.integers(3, 9)), 2))
            cv2.fillPoly(canvas, [pts.astype(np.int32)], 1)
        elif kind == 2:
            noise = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), float(rng.uniform(1, 4)))
            canvas = (noise > np.quantile(noise, rng.uniform(0.5, 0.9))).astype(np.uint8)
        elif kind == 3:
            p0 = tuple(int(v) for v in rng.integers(0, (shape[1], shape[0])))
            p1 = tuple(int(v) for v in rng.integers(0, (shape[1], shape[0])))
            cv2.line(canvas, p0, p1, 1, thickness=1)
        elif kind == 4:
            canvas[int(rng.integers(0, shape[0])), int(rng.integers(0, shape[1]))] = 1
        else:
            y0, x0 = rng.integers(0, 4, size=2)
            canvas[y0:, x0:] = 1
        if canvas.any():
            regions.append(canvas.astype(bool))
    return regions


REGIONS = random_regions()


def test_round_trip_random_regions(tmp_path):
    """region -> annotation -> JSON -> pycocotools ``annToMask`` gives back exactly the region."""
    assert len(REGIONS) > 100
    anns = [[instance_to_annotation(r)] for r in REGIONS]
    images = [{"file_name": f"{i}.png", "width": 64, "height": 48} for i in range(len(REGIONS))]
    decoded = coco_masks(images, anns, tmp_path)
    kinds = set()
    for region, (mask,), (ann,) in zip(REGIONS, decoded, anns, strict=True):
        np.testing.assert_array_equal(mask, region)
        kinds.add(type(ann["segmentation"]).__name__)
    assert kinds == {"list", "dict"}, "the table must exercise both polygons and RLE"


FIXED_REGIONS = {
    "all ones": (np.ones((9, 7), bool), list),
    "single pixel": (boxes((5, 5), (slice(2, 3), slice(3, 4))), list),
    "one-pixel line": (boxes((6, 20), (slice(3, 4), slice(2, 18))), list),
    "ring (hole)": (ring(), dict),
    "two pieces": (boxes((10, 20), (slice(1, 4), slice(1, 4)), (slice(5, 9), slice(10, 19))), dict),
    "diagonal pinch": (boxes((10, 10), (slice(0, 5), slice(0, 5)), (slice(5, 10), slice(5, 10))), None),
    "ellipse": (ellipse(), list),
}


@pytest.mark.parametrize(("region", "kind"), FIXED_REGIONS.values(), ids=FIXED_REGIONS.keys())
def test_annotation_fields(region, kind, tmp_path):
    ann = instance_to_annotation(region)
    ys, xs = np.nonzero(region)
    assert ann["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]  # tight xywh
    assert all(type(v) is int for v in ann["bbox"])
    assert ann["area"] == int(region.sum()) and type(ann["area"]) is int
    assert ann["iscrowd"] == 0 and ann["category_id"] == NAIL_CATEGORY["id"] == 1
    if kind is not None:
        assert isinstance(ann["segmentation"], kind)
    if isinstance(ann["segmentation"], dict):
        assert isinstance(ann["segmentation"]["counts"], str)
        assert ann["segmentation"]["size"] == list(region.shape)
    else:
        assert len(ann["segmentation"]) == 1 and len(ann["segmentation"][0]) >= 6
    json.dumps(ann)  # plain Python types only
    h, w = region.shape
    ((mask,),) = coco_masks([{"file_name": "a.png", "width": w, "height": h}], [[ann]], tmp_path)
    np.testing.assert_array_equal(mask, region)


@pytest.mark.parametrize("empty", [np.zeros((5, 5), bool), np.zeros((0, 0), bool)], ids=["zeros", "zero-size"])
def test_encode_empty_mask_raises(empty):
    with pytest.raises(ValueError, match="empty"):
        encode_segmentation(empty)


BUILD_CASES = {
    "no images": ([], []),
    "image without nails": ([{"file_name": "a.png", "width": 4, "height": 4}], [[]]),
    "three images": (
        [{"file_name": f"{c}.png", "width": 40, "height": 40} for c in "abc"],
        [[instance_to_annotation(ring())], [], [instance_to_annotation(disc((40, 40), (9, 9), 5))] * 2],
    ),
}


@pytest.mark.parametrize(("images", "anns"), BUILD_CASES.values(), ids=BUILD_CASES.keys())
def test_build_coco_ids(images, anns):
    coco = build_coco(images, anns, {"dataset_root": "/data"})
    assert coco["info"] == {"dataset_root": "/data"}
    assert coco["categories"] == [NAIL_CATEGORY]
    assert [i["id"] for i in coco["images"]] == list(range(1, len(images) + 1))
    assert [a["id"] for a in coco["annotations"]] == list(range(1, sum(map(len, anns)) + 1))
    expected_image_ids = [i for i, a in enumerate(anns, start=1) for _ in a]
    assert [a["image_id"] for a in coco["annotations"]] == expected_image_ids
    assert [i["file_name"] for i in coco["images"]] == [i["file_name"] for i in images]
    json.loads(json.dumps(coco))
