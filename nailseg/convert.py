"""Pure conversion steps: semantic mask or polygons -> nail instances -> COCO annotations.

Everything here takes numpy arrays and returns plain Python objects; file reading and writing
live in :mod:`nailseg.datasets`. Nothing here imports torch or mmdet.

Coordinate convention: pycocotools (and therefore mmdet's ``poly2mask``) treats pixel ``(x, y)``
as the unit square ``[x, x+1] x [y, y+1]``. A polygon is written so that rasterising it with
pycocotools gives back exactly the pixels it came from; where no single polygon can (a hole, a
shape that pinches into several outlines) the segmentation is written as compressed RLE instead.
"""

from __future__ import annotations

import cv2
import numpy as np
from pycocotools import mask as mask_utils

NAIL_CATEGORY = {"id": 1, "name": "nail", "supercategory": "nail"}
DEFAULT_MIN_AREA = 20
# What a polygon may ask of pycocotools. Its rasteriser casts coordinates to int without a check
# (NaN, inf or 1e20 become any integer) and allocates ~100 bytes per pixel of outline without
# checking malloc: unbounded outlines exhaust memory, then it segfaults. A nail's outline is
# short; labelling tools round a little outside the photo.
MAX_NAILS = 500  # per photo: far above any hand, and a bound on the work one file can ask for
MAX_POLYGON_POINTS = 4096
MAX_OUTLINE = 100_000  # pixels walked along a closed outline (the longest side of each edge)
EDGE_TOLERANCE = 0.01  # of the photo's side (at least 1 px) a point may lie outside the photo


def binarize_mask(mask: np.ndarray) -> np.ndarray:
    """Threshold a semantic mask at half its value range.

    Args:
        mask: ``(H, W)`` or ``(H, W, C)`` mask of any integer or float dtype. 0/1, 0/255, soft
            anti-aliased 8-bit and 16-bit masks are all accepted; colour masks use the brightest
            colour channel, so a white or a red nail on black both count.

    Returns:
        ``(H, W)`` bool array, True on nail pixels.
    """
    if mask.ndim == 3:
        mask = mask[..., :3].max(axis=2) if mask.shape[2] >= 3 else mask[..., 0]
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W) or (H, W, C), got shape {mask.shape}")
    if mask.dtype.kind == "f" and not np.isfinite(mask).all():  # NaN would pick the 16-bit scale: no nails
        raise ValueError("the mask holds values that are not finite numbers (NaN or infinity)")
    peak = float(mask.max()) if mask.size else 0.0
    # 0/1 masks are common (many tools write label ids); anything above 1 is an intensity.
    full_scale = 1.0 if peak <= 1.0 else (255.0 if peak <= 255.0 else 65535.0)
    if np.issubdtype(mask.dtype, np.integer):
        return mask > int(full_scale) // 2  # integer compare: no float copy of the mask
    return mask > full_scale / 2.0  # halving is exact: no float copy, no overflow


def split_touching(component: np.ndarray, min_peak_ratio: float = 0.5) -> list[np.ndarray]:
    """Split one connected blob into nails that touch, by distance transform and watershed.

    Args:
        component: ``(H, W)`` bool mask of one connected region.
        min_peak_ratio: a seed is a region where the distance to the background exceeds this
            fraction of the blob's largest distance; a neck narrower than that splits the blob.

    Returns:
        List of ``(H, W)`` bool masks whose union is ``component``; ``[component]`` when there is
        nothing to split.
    """
    from skimage.segmentation import watershed

    dist = cv2.distanceTransform(component.astype(np.uint8), cv2.DIST_L2, 5)
    if dist.max() <= 0:
        return [component]
    seeds = (dist > min_peak_ratio * dist.max()).astype(np.uint8)
    n_seeds, markers = cv2.connectedComponents(seeds, connectivity=8)
    if n_seeds <= 2:  # background + one seed
        return [component]
    labels = watershed(-dist, markers, mask=component)
    return [labels == k for k in range(1, n_seeds) if (labels == k).any()]


def means_nail(category_name: str) -> bool:
    """Whether a labelling tool's category name means a nail: ``nail``, ``Nails``, ``fingernail``, ``toe-nail``..."""
    return "nail" in category_name.lower()


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """A ``(h, w) bool`` mask at ``height x width``, by nearest neighbour: a mask found on a shrunk
    photo, on the photo itself. Returned as is when it has that size already."""
    if mask.shape == (height, width):
        return mask
    return cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)


def mask_to_instances(
    binary: np.ndarray, min_area: int = DEFAULT_MIN_AREA, split: bool = False, max_instances: int | None = None
) -> list[np.ndarray]:
    """Cut a semantic nail mask into one mask per nail (8-connected regions).

    Args:
        binary: ``(H, W)`` bool mask, every nail painted into it.
        min_area: regions with fewer pixels than this are dropped (specks, label noise).
        split: also split touching nails with :func:`split_touching`.
        max_instances: refuse masks with more regions of ``min_area`` or more than this.

    Returns:
        List of ``(H, W)`` bool masks, one per nail, in label order.

    Raises:
        ValueError: more than ``max_instances`` regions.
    """
    if binary.size == 0:  # OpenCV's labelling crashes the process on a zero-size array
        return []
    # connectedComponents + bincount is ~5x faster than connectedComponentsWithStats (OpenCV 4.14).
    n, labels = cv2.connectedComponents(binary.astype(np.uint8), connectivity=8)
    areas = np.bincount(labels.ravel(), minlength=n)
    if max_instances is not None and np.count_nonzero(areas[1:] >= min_area) > max_instances:
        raise ValueError(f"more than {max_instances} separate nails in the mask")
    instances = []
    for k in range(1, n):
        if areas[k] < min_area:
            continue
        region = labels == k
        parts = split_touching(region) if split else [region]
        instances.extend(p for p in parts if p is region or p.sum() >= min_area)
    return instances


def polygons_to_instances(polygons_xy: list[np.ndarray], height: int, width: int) -> list[np.ndarray]:
    """Rasterise polygons the way COCO does (pycocotools), one mask per polygon.

    ``cv2.fillPoly`` would also fill the right and bottom outline pixels (a 4x4 square becomes
    5x5, +4 % area on a nail); pycocotools is the rasteriser mmdet and COCOeval use, so labels
    converted through it are the labels the model is trained and scored on.

    Args:
        polygons_xy: one ``(K, 2)`` float array per nail, xy in pixels with pixel ``(x, y)``
            covering ``[x, x+1] x [y, y+1]`` (YOLO-seg coordinates times the image size).
        height, width: image size.

    Returns:
        List of ``(H, W)`` bool masks (possibly empty where a polygon is degenerate).

    Raises:
        ValueError: a polygon that :func:`check_polygon` refuses; nothing reaches pycocotools then.
    """
    if not polygons_xy:
        return []
    checked = [check_polygon(p, height, width).ravel().tolist() for p in polygons_xy]
    rles = mask_utils.frPyObjects(checked, height, width)
    return list(mask_utils.decode(rles).astype(bool).transpose(2, 0, 1))


def check_polygon(polygon_xy, height: int, width: int) -> np.ndarray:
    """A polygon as ``(K, 2) float64`` pixels, if pycocotools can rasterise it within bounded memory.

    Args:
        polygon_xy: ``(K, 2)`` xy points, or COCO's flat ``[x1, y1, x2, y2, ...]``.
        height, width: the photo's size.

    Raises:
        ValueError: fewer than 3 or more than :data:`MAX_POLYGON_POINTS` points, a coordinate that
            is not a finite number, a point more than :data:`EDGE_TOLERANCE` outside the photo, or
            an outline longer than :data:`MAX_OUTLINE` pixels. The message says which.
    """
    xy = np.asarray(polygon_xy, np.float64)
    if xy.size % 2:
        raise ValueError(f"a polygon needs an even number of coordinates, got {xy.size}")
    xy = xy.reshape(-1, 2)
    if not 3 <= len(xy) <= MAX_POLYGON_POINTS:
        raise ValueError(f"a polygon needs 3 to {MAX_POLYGON_POINTS} points, got {len(xy)}")
    if not np.isfinite(xy).all():
        raise ValueError(f"{xy[~np.isfinite(xy)][0]} is not a finite number")
    size = np.array([width, height], np.float64)
    slack = np.maximum(1.0, EDGE_TOLERANCE * size)
    outside = ((xy < -slack) | (xy > size + slack)).any(axis=1)
    if outside.any():
        x, y = xy[outside][0]
        raise ValueError(f"point ({x:.6g}, {y:.6g}) lies outside the {width}x{height} photo")
    outline = np.abs(np.diff(xy, axis=0, append=xy[:1])).max(axis=1).sum()
    if outline > MAX_OUTLINE:
        raise ValueError(f"the polygon's outline is {outline:.0f} px long; the limit is {MAX_OUTLINE}")
    return xy


def rle_counts(counts: str) -> list[int]:
    """The run lengths of COCO's compressed RLE string, decoded as pycocotools' ``rleFrString`` does.

    pycocotools reads past the end of a string whose last character continues a number, and
    decodes runs into a buffer of ``H * W`` bytes without checking their sum: the runs are read
    here first so that :func:`check_rle` can refuse such strings.

    Raises:
        ValueError: a character outside ``'0'..'o'``, a number cut off or too long.
    """
    values: list[int] = []
    value = shift = 0
    for char in counts:
        code = ord(char) - 48
        if not 0 <= code < 64 or shift >= 35:  # 7 characters hold any 32-bit run and its sign
            raise ValueError("the RLE counts string is not pycocotools' encoding")
        value |= (code & 0x1F) << shift
        shift += 5
        if code & 0x20:  # more characters of this number follow
            continue
        if code & 0x10:  # negative: sign-extend
            value |= -1 << shift
        if len(values) > 2:  # runs after the third are stored as differences
            value += values[-2]
        values.append(value)
        value = shift = 0
    if shift:
        raise ValueError("the RLE counts string ends inside a number")
    return values


def check_rle(rle, height: int, width: int) -> dict:
    """A COCO RLE segmentation (compressed or not) that decodes to exactly one ``height x width`` mask.

    Raises:
        ValueError: not ``{"size": [height, width], "counts": str | list[int]}``, or runs that are
            negative or do not add up to ``height * width`` pixels.
    """
    if not isinstance(rle, dict) or rle.get("size") != [height, width]:
        raise ValueError(f"an RLE segmentation must be {{'size': [{height}, {width}], 'counts': ...}}")
    counts = rle.get("counts")
    if isinstance(counts, str):
        runs = rle_counts(counts)
    elif isinstance(counts, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
        runs = counts
    else:
        raise ValueError("RLE counts must be a string or a list of integers")
    if any(run < 0 for run in runs) or sum(runs) != height * width:
        raise ValueError(f"the RLE runs do not cover the {width}x{height} photo exactly")
    return rle


def segmentation_to_mask(segmentation, height: int, width: int) -> np.ndarray:
    """The ``(H, W) bool`` mask of a COCO segmentation: polygons, or RLE compressed or not.

    The inverse of :func:`encode_segmentation`; give it only segmentations that were checked
    (:func:`check_polygon`, :func:`check_rle`), as ``nailseg.json_files.check_coco`` does.
    """
    if isinstance(segmentation, list):  # polygons: one RLE each, merged
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE: compressed first
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle).astype(bool)


def _box_xyxy(instance: np.ndarray) -> tuple[int, int, int, int]:
    """Tight box ``(x0, y0, x1, y1)``, exclusive ends, of a non-empty ``(H, W)`` bool mask."""
    # Row/column reductions are ~20x faster than np.nonzero on a full-size mask.
    rows, cols = np.flatnonzero(instance.any(axis=1)), np.flatnonzero(instance.any(axis=0))
    if len(rows) == 0:
        raise ValueError("cannot encode an empty mask")
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def encode_segmentation(
    instance: np.ndarray, box_xyxy: tuple[int, int, int, int] | None = None
) -> list[list[float]] | dict:
    """Encode one nail mask as a COCO segmentation that decodes to exactly the same pixels.

    Args:
        instance: ``(H, W)`` bool mask of one nail.
        box_xyxy: its tight box with exclusive ends, when the caller already has it.

    Returns:
        ``[[x1, y1, x2, y2, ...]]`` (one polygon, pycocotools pixel convention) when a polygon
        holds the shape, else compressed RLE ``{"size": [H, W], "counts": str}``.
    """
    height, width = instance.shape
    x0, y0, x1, y1 = box_xyxy or _box_xyxy(instance)
    crop = instance[y0:y1, x0:x1]
    outlines = _outlines(crop, cv2.RETR_CCOMP)  # a second outline means a hole: RLE
    if len(outlines) == 1 and len(outlines[0]) >= 3:
        points = outlines[0]
        local = mask_utils.decode(mask_utils.frPyObjects([points.ravel().tolist()], *crop.shape))
        if np.array_equal(local[:, :, 0].astype(bool), crop):  # a guarantee, not a hope
            return [(points + (x0, y0)).ravel().tolist()]
    rle = mask_utils.encode(np.asfortranarray(instance.astype(np.uint8)))
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def _outlines(crop: np.ndarray, mode: int) -> list[np.ndarray]:
    """The outlines OpenCV traces in a bool crop (``mode``: ``cv2.RETR_*``), as ``(K, 2)`` crop coordinates.

    Traced on the crop doubled in size: its boundary pixel centres lie a quarter pixel inside the
    nail's pixel edges, so pycocotools' rasteriser (pixel centres at +0.5) puts every pixel back
    on its side.
    """
    doubled = np.repeat(np.repeat(crop.astype(np.uint8), 2, axis=0), 2, axis=1)
    contours, _ = cv2.findContours(doubled, mode, cv2.CHAIN_APPROX_SIMPLE)
    return [(c[:, 0, :] + 0.5) / 2 for c in contours]  # doubled pixel index -> crop coordinates


def outline_polygon(instance: np.ndarray) -> np.ndarray:
    """The outline of a nail mask as one polygon, for formats that hold nothing else (YOLO-seg).

    Args:
        instance: ``(H, W)`` bool mask of one nail, not empty.

    Returns:
        ``(K, 2) float64`` xy points in pixels (pycocotools convention), ``K >= 3``: the polygon
        :func:`encode_segmentation` writes where one holds the nail; for a nail with a hole, its
        outer outline; for one in several pieces, the outline of the largest.
    """
    x0, y0, x1, y1 = _box_xyxy(instance)
    outlines = _outlines(instance[y0:y1, x0:x1], cv2.RETR_EXTERNAL)
    largest = max(outlines, key=lambda points: cv2.contourArea(points.astype(np.float32)))
    return largest + (x0, y0)


def polygon_crossing(polygon_xy) -> tuple[float, float] | None:
    """Where a polygon's outline first crosses itself, or None when it does not.

    pycocotools fills polygons by the even-odd rule: where an outline folds over itself, the part
    covered twice is left out, a hole nobody drew. Edges that only touch (a shared point, an edge
    drawn twice) are no crossing: the outline of pixels that meet at a corner touches itself.

    Args:
        polygon_xy: ``(K, 2)`` xy points or COCO's flat ``[x1, y1, ...]``, finite (see
            :func:`check_polygon`).
    """
    start = np.asarray(polygon_xy, np.float64).reshape(-1, 2)
    end = np.roll(start, -1, axis=0)
    count = len(start)
    for i in range(count - 2):
        others = np.arange(i + 2, count if i else count - 1)  # not itself, not its neighbours
        a, b, c, d = start[i], end[i], start[others], end[others]
        side_c, side_d = _turn(a, b, c), _turn(a, b, d)
        side_a, side_b = _turn(c, d, a), _turn(c, d, b)
        hits = np.flatnonzero((side_c * side_d < 0) & (side_a * side_b < 0))
        if hits.size:
            k = hits[0]
            x, y = a + side_a[k] / (side_a[k] - side_b[k]) * (b - a)
            return float(x), float(y)
    return None


def _turn(p: np.ndarray, q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Twice the signed area of ``p, q, r``: above 0 when ``r`` lies left of ``p -> q``."""
    return (q[..., 0] - p[..., 0]) * (r[..., 1] - p[..., 1]) - (q[..., 1] - p[..., 1]) * (r[..., 0] - p[..., 0])


def instance_to_annotation(instance: np.ndarray) -> dict:
    """COCO annotation fields for one nail mask (no ids): segmentation, xywh bbox, pixel area.

    Args:
        instance: ``(H, W)`` bool mask of one nail.

    Returns:
        ``{"segmentation", "bbox": [x, y, w, h], "area": int pixel count, "iscrowd": 0,
        "category_id": 1}``; the box is tight around the pixels, in COCO's pixel convention.
    """
    x0, y0, x1, y1 = box = _box_xyxy(instance)
    return {
        "segmentation": encode_segmentation(instance, box),
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "area": int(np.count_nonzero(instance[y0:y1, x0:x1])),
        "iscrowd": 0,
        "category_id": NAIL_CATEGORY["id"],
    }


def build_coco(images: list[dict], annotations_per_image: list[list[dict]], info: dict) -> dict:
    """Assemble a COCO instances dict; image and annotation ids start at 1.

    Args:
        images: one ``{"file_name", "width", "height", ...}`` per photo, in output order.
        annotations_per_image: for each photo, its annotations from :func:`instance_to_annotation`.
        info: the COCO ``info`` block (records the dataset root).
    """
    coco_images, coco_annotations = [], []
    for image_id, (image, anns) in enumerate(zip(images, annotations_per_image), start=1):
        coco_images.append({"id": image_id, **image})
        for ann in anns:
            coco_annotations.append({"id": len(coco_annotations) + 1, "image_id": image_id, **ann})
    return {
        "info": info,
        "licenses": [],
        "images": coco_images,
        "annotations": coco_annotations,
        "categories": [NAIL_CATEGORY],
    }
