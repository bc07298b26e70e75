"""Dataset edge: find photo/label pairs on disk, convert them in parallel, split, save COCO.

Three layouts are detected automatically, in this order:

* semantic (the seed's): ``ROOT/Images/<group>/<name>.<ext>`` + ``ROOT/Masks/<group>/<name>.<ext>``,
  matched by stem (``images``/``masks`` in any case also accepted);
* COCO instances from a labelling tool (CVAT, Roboflow, Label Studio, ``nailseg predict``'s
  pre-labels): photos and one or more COCO files, see :mod:`nailseg.coco_dataset`;
* YOLO-seg: ``ROOT/images/*`` + ``ROOT/labels/*.txt`` polygons, flat or inside
  ``train/ valid/ test/`` folders (the split folder is the group); every class maps to ``nail``.

The pure conversion steps are in :mod:`nailseg.convert`; this module only reads, writes and
schedules them. It must not import torch or mmdet so that ``nailseg convert`` starts fast.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nailseg import convert
from nailseg.coco_dataset import CocoLabel, category_counts, find_coco_files, photo_annotations, read_coco_dataset
from nailseg.files import write_atomic
from nailseg.images import IMAGE_EXTENSIONS, MAX_PIXELS, ImageError, exif_size, load_image_rgb
from nailseg.json_files import check_coco, read_json

MAX_LABEL_BYTES = 4 * 2**20  # a YOLO label file; the largest in the data sets here is 2 KB


@dataclass(frozen=True)
class Sample:
    """One photo and its label file, paths relative to the dataset root."""

    image: str
    label: str
    group: str
    kind: str  # "mask" (semantic PNG), "yolo" (polygon .txt) or "coco" (its label read already)
    coco: CocoLabel | None = None


@dataclass
class ConvertedSample:
    """What a worker returns for one sample: COCO image fields, annotations, or a problem."""

    sample: Sample
    width: int = 0
    height: int = 0
    sha1: str = ""
    annotations: list[dict] = field(default_factory=list)
    problem: str | None = None


@dataclass
class ConversionReport:
    """Everything ``nailseg convert`` writes and prints."""

    root: Path
    layout: str
    train: dict
    valid: dict
    manifest: pandas.DataFrame  # noqa: F821 - imported lazily
    problems: list[tuple[str, str]]  # (path relative to root, what is wrong)
    categories: dict = field(default_factory=dict)  # COCO layout: annotations kept and left out, by category

    @property
    def converted(self) -> int:
        return len(self.train["images"]) + len(self.valid["images"])

    def summary(self) -> dict:
        """What ``nailseg convert`` prints; crowd regions (COCO's ``iscrowd``) are counted apart from nails."""
        train, valid = _nails(self.train), _nails(self.valid)
        nails = train + valid
        crowds = len(self.train["annotations"]) + len(self.valid["annotations"]) - nails
        groups = self.manifest.groupby("group").size().to_dict() if len(self.manifest) else {}
        return {
            "root": str(self.root),
            "layout": self.layout,
            "photos": self.converted,
            "nails": nails,
            "nails_per_photo": round(nails / self.converted, 2) if self.converted else 0.0,
            "train": {"photos": len(self.train["images"]), "nails": train},
            "valid": {"photos": len(self.valid["images"]), "nails": valid},
            "groups": {str(k): int(v) for k, v in groups.items()},
            **({"crowd_regions": crowds} if crowds else {}),
            **({"categories": self.categories} if self.categories else {}),
            "problems": [{"file": f, "problem": p} for f, p in self.problems],
        }


def _nails(coco: dict) -> int:
    """Annotations that are nails, not crowd regions."""
    return sum(1 for a in coco["annotations"] if not a.get("iscrowd"))


def _find_dir(parent: Path, name: str) -> Path | None:
    for child in sorted(parent.iterdir()) if parent.is_dir() else []:
        if child.is_dir() and child.name.lower() == name:
            return child
    return None


def _files(folder: Path, extensions: set[str]) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in extensions)


def _group_of(path: Path, base: Path) -> str:
    parent = path.parent.relative_to(base).as_posix()
    return "default" if parent == "." else parent


def discover(root: str | Path, categories: tuple[str, ...] = ()) -> tuple[str, list[Sample], list[tuple[str, str]]]:
    """Find every photo and its label under ``root``.

    Args:
        categories: COCO layout: the categories to keep (see :mod:`nailseg.coco_dataset`).

    Returns:
        ``(layout, samples, problems)``: layout is ``"semantic"``, ``"coco"`` or ``"yolo"``;
        problems are ``(relative path, message)`` pairs for photos without labels, labels without
        photos and (COCO) labels that cannot be used.

    Raises:
        ValueError: when ``root`` is not a folder or holds no layout, or a category named in
            ``categories`` is in no COCO file.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"dataset folder not found: {root}")
    images_dir, masks_dir = _find_dir(root, "images"), _find_dir(root, "masks")
    if images_dir and masks_dir:
        return ("semantic", *_pair(root, images_dir, masks_dir, IMAGE_EXTENSIONS, "mask"))
    if coco_files := find_coco_files(root):
        photos, problems = read_coco_dataset(root, coco_files, _files(root, IMAGE_EXTENSIONS), categories)
        return "coco", [Sample(p.image, p.label.file, p.group, "coco", p.label) for p in photos], problems
    yolo_roots = [root] if _find_dir(root, "labels") else []
    yolo_roots += [d for d in sorted(root.iterdir()) if d.is_dir() and _find_dir(d, "labels")]
    if yolo_roots:
        samples, problems = [], []
        for split_root in yolo_roots:
            images = _find_dir(split_root, "images")
            if images is None:
                problems.append((split_root.relative_to(root).as_posix(), "labels/ without images/"))
                continue
            found, missing = _pair(root, images, _find_dir(split_root, "labels"), {".txt"}, "yolo")
            group = "default" if split_root == root else split_root.name
            samples += [Sample(s.image, s.label, group, s.kind) for s in found]
            problems += missing
        return "yolo", samples, problems
    raise ValueError(
        f"no dataset found in {root}: expected Images/ + Masks/ (semantic masks), COCO files "
        "(annotations.json, annotations/instances_*.json, _annotations.coco.json) or images/ + labels/ (YOLO-seg)"
    )


def _pair(root: Path, images_dir: Path, labels_dir: Path, label_exts: set[str], kind: str):
    images, labels = _by_stem(images_dir, IMAGE_EXTENSIONS), _by_stem(labels_dir, label_exts)
    samples, problems = [], []
    for key in [*images, *(k for k in labels if k not in images)]:  # in photo order, as found
        photos, label_paths = images.get(key, []), labels.get(key, [])
        if len(photos) == 1 and len(label_paths) == 1:
            rel = (photos[0].relative_to(root).as_posix(), label_paths[0].relative_to(root).as_posix())
            samples.append(Sample(*rel, group=key[0], kind=kind))
            continue
        if len(photos) > 1 or len(label_paths) > 1:  # which label goes with which photo cannot be told
            problem = f"one name for several files ({', '.join(p.name for p in photos + label_paths)})"
        else:
            problem = "photo without a label" if photos else "label without a photo"
        problems += [(path.relative_to(root).as_posix(), problem) for path in photos or label_paths]
    return samples, problems


def _by_stem(folder: Path, extensions: set[str]) -> dict[tuple[str, str], list[Path]]:
    """The files under ``folder`` with these extensions, by ``(group, stem)``: how photos meet labels."""
    found: dict[tuple[str, str], list[Path]] = {}
    for path in _files(folder, extensions):
        found.setdefault((_group_of(path, folder), path.stem), []).append(path)
    return found


def _check_pixels(width: int, height: int, what: str) -> None:
    if width * height > MAX_PIXELS:
        megapixels = width * height / 1e6
        raise ValueError(f"{what} is {width}x{height} ({megapixels:.0f} MP); the limit is {MAX_PIXELS / 1e6:.0f} MP")


def load_mask(path: Path) -> np.ndarray:
    """Read a mask file as stored (any bit depth, grey or colour). Raises ValueError if unreadable or too large."""
    import cv2

    if path.stat().st_size == 0:
        raise ValueError("empty file")
    try:
        size = exif_size(path)  # from the header, before decoding
    except ImageError:
        raise ValueError("unreadable mask") from None
    _check_pixels(*size, "the mask")
    data = np.fromfile(path, np.uint8)
    if data.size == 0:
        raise ValueError("empty file")
    mask = cv2.imdecode(data, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if mask is None:
        raise ValueError("unreadable mask")
    return mask


def load_yolo_polygons(path: Path, width: int, height: int) -> list[np.ndarray]:
    """Read a YOLO-seg label file into ``(K, 2)`` pixel-coordinate polygons (class ids ignored).

    Each polygon is checked as it is parsed (:func:`nailseg.convert.check_polygon`): finite,
    within the photo, bounded in points and outline.

    Raises:
        ValueError: the file is too large or has too many polygons, or a line that is not a
            polygon the photo can hold; the message names the line.
    """
    if path.stat().st_size > MAX_LABEL_BYTES:
        raise ValueError(f"the label file is larger than {MAX_LABEL_BYTES // 2**20} MiB")
    polygons = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        values = line.split()
        if not values:
            continue
        if len(polygons) == convert.MAX_NAILS:
            raise ValueError(f"more than {convert.MAX_NAILS} polygons")
        try:
            coords = np.array(values[1:], dtype=np.float64)
            to_pixels = np.resize(np.array([width, height], np.float64), len(coords))
            with np.errstate(over="ignore"):  # 1e308 * width is inf: refused as such
                polygons.append(convert.check_polygon(coords * to_pixels, height, width))
        except ValueError as err:
            raise ValueError(f"line {line_no}: {err}") from None
    return polygons


def convert_sample(root: Path, sample: Sample, min_area: int, split_touching: bool) -> ConvertedSample:
    """Read one photo and its label and turn it into COCO annotations; never raises.

    Sizes are checked from the headers before any pixel is decoded (the app's photo limit), and
    nails are encoded one at a time, so one file cannot ask for more than one full-size mask.
    """
    out = ConvertedSample(sample)
    image_path = root / sample.image
    try:
        data = image_path.read_bytes()
        if not data:
            raise ValueError("empty photo file")
        out.sha1 = hashlib.sha1(data).hexdigest()
        out.width, out.height = exif_size(image_path)
        _check_pixels(out.width, out.height, "the photo")
        # Decoded once (a JPEG at 1/8 scale): a truncated photo is a problem here, not in training.
        load_image_rgb(data, max_side=64)
        if sample.coco is not None:
            out.annotations = photo_annotations(sample.coco, out.width, out.height, min_area)
        else:
            label = root / sample.label
            instances = _label_instances(label, sample.kind, out.width, out.height, min_area, split_touching)
            out.annotations = [convert.instance_to_annotation(m) for m in instances]
    except (OSError, ValueError) as err:
        out.problem = str(err) or type(err).__name__
    return out


def _label_instances(label_path: Path, kind: str, width: int, height: int, min_area: int, split_touching: bool):
    """The nail masks of a YOLO label file or a semantic mask, one at a time where it can be."""
    if kind == "yolo":
        polygons = load_yolo_polygons(label_path, width, height)
        instances = (m for p in polygons for m in convert.polygons_to_instances([p], height, width))
        return (m for m in instances if m.sum() >= min_area)
    mask = load_mask(label_path)
    if mask.shape[:2] != (height, width):
        raise ValueError(f"size mismatch: photo {width}x{height}, mask {mask.shape[1]}x{mask.shape[0]}")
    binary = convert.binarize_mask(mask)
    return convert.mask_to_instances(binary, min_area, split_touching, max_instances=convert.MAX_NAILS)


def _convert_chunk(args) -> list[ConvertedSample]:
    root, chunk, min_area, split_touching = args
    return [convert_sample(root, s, min_area, split_touching) for s in chunk]


def split_samples(samples: list[ConvertedSample], valid_fraction: float, seed: int) -> list[str]:
    """Assign each sample to ``"train"`` or ``"valid"``, reproducibly and stratified by group.

    Photos that are byte-identical, or share a source stem (the part before a Roboflow
    ``.rf.<hash>`` suffix), form one cluster and always land on the same side.
    """
    parent = list(range(len(samples)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_seen: dict[str, int] = {}
    for i, s in enumerate(samples):
        stem = Path(s.sample.image).name.split(".rf.")[0] if ".rf." in s.sample.image else None
        for key in (f"sha1:{s.sha1}", f"stem:{stem}" if stem else None):
            if key is None:
                continue
            j = first_seen.setdefault(key, i)
            parent[find(i)] = find(j)
    clusters: dict[int, list[int]] = {}
    for i in range(len(samples)):
        clusters.setdefault(find(i), []).append(i)

    sides = ["train"] * len(samples)
    if valid_fraction <= 0:
        return sides
    by_group: dict[str, list[list[int]]] = {}
    for members in clusters.values():
        by_group.setdefault(samples[members[0]].sample.group, []).append(members)
    rng = np.random.default_rng(seed)
    for group in sorted(by_group):
        group_clusters = sorted(by_group[group], key=lambda m: samples[m[0]].sample.image)
        target = round(valid_fraction * sum(len(m) for m in group_clusters))
        taken = 0
        for k in rng.permutation(len(group_clusters)):
            if taken >= target:
                break
            for i in group_clusters[k]:
                sides[i] = "valid"
            taken += len(group_clusters[k])
    return sides


def convert_dataset(
    root: str | Path,
    valid_fraction: float = 0.2,
    seed: int = 0,
    min_area: int = convert.DEFAULT_MIN_AREA,
    split_touching: bool = False,
    workers: int | None = None,
    progress: bool | None = None,
    categories: tuple[str, ...] = (),
) -> ConversionReport:
    """Convert a dataset folder into train/valid COCO dicts and a manifest (nothing is written).

    Args:
        root: dataset folder in any supported layout.
        valid_fraction: share of photos (per group) held out for validation; 0 puts all in train.
        seed: seed of the split.
        min_area: nails smaller than this many pixels are dropped.
        split_touching: split touching nails by watershed (semantic masks only).
        workers: processes to use; default: all cores.
        progress: show a progress bar; default: only on a terminal.
        categories: COCO layout: the categories to keep (see :mod:`nailseg.coco_dataset`).
    """
    if not 0 <= valid_fraction < 1:
        raise ValueError(f"valid fraction must be in [0, 1), got {valid_fraction}")
    root = Path(root).resolve()
    layout, samples, problems = discover(root, categories)
    show = sys.stderr.isatty() if progress is None else progress
    results = _convert_samples(root, samples, min_area, split_touching, workers or os.cpu_count() or 1, show)
    import pandas as pd  # imported while the workers converted

    ok = [r for r in results if r.problem is None]
    problems += [(r.sample.image, r.problem) for r in results if r.problem is not None]
    sides = split_samples(ok, valid_fraction, seed)
    info = {"description": "NailSeg instances", "dataset_root": str(root), "layout": layout}
    split_dicts = {}
    for side in ("train", "valid"):
        chosen = [r for r, s in zip(ok, sides) if s == side]
        images = [
            {"file_name": r.sample.image, "width": r.width, "height": r.height, "group": r.sample.group} for r in chosen
        ]
        split_dicts[side] = convert.build_coco(images, [r.annotations for r in chosen], info)
    manifest = pd.DataFrame(
        {
            "images": [r.sample.image for r in ok],
            "masks": [r.sample.label for r in ok],
            "width": [r.width for r in ok],
            "height": [r.height for r in ok],
            "group": [r.sample.group for r in ok],
            "split": sides,
            "nails": [len(r.annotations) for r in ok],
        }
    )
    categories_seen = category_counts([r.sample.coco for r in ok]) if layout == "coco" else {}
    return ConversionReport(
        root, layout, split_dicts["train"], split_dicts["valid"], manifest, problems, categories_seen
    )


def _convert_samples(
    root: Path, samples: list[Sample], min_area: int, split_touching: bool, workers: int, show: bool
) -> list[ConvertedSample]:
    """Convert ``samples`` in chunks of 16, in ``workers`` processes, with a progress bar if ``show``."""
    from tqdm import tqdm

    chunks = [samples[i : i + 16] for i in range(0, len(samples), 16)]
    jobs = [(root, chunk, min_area, split_touching) for chunk in chunks]
    bar = tqdm(total=len(samples), unit="photo", desc="convert", disable=not show)
    # pandas takes a few hundred ms to import: let that happen while the workers convert. The
    # thread starts only after the workers are forked (forking beside a running import can hang).
    pandas_import = threading.Thread(target=importlib.import_module, args=("pandas",), daemon=True)
    results: list[ConvertedSample] = []
    if workers > 1 and len(chunks) > 1:
        with ProcessPoolExecutor(workers) as pool:
            chunk_results = pool.map(_convert_chunk, jobs)
            pandas_import.start()
            for chunk_result in chunk_results:
                results += chunk_result
                bar.update(len(chunk_result))
    else:
        pandas_import.start()
        for job in jobs:
            results += _convert_chunk(job)
            bar.update(len(job[1]))
    bar.close()
    pandas_import.join()
    return results


def save_report(report: ConversionReport, out_dir: str | Path) -> list[Path]:
    """Write ``train.json``, ``valid.json`` and ``manifest.csv`` into ``out_dir``, each atomically.

    Nothing else in ``out_dir`` is touched.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (
        ("train.json", json.dumps(report.train)),
        ("valid.json", json.dumps(report.valid)),
        ("manifest.csv", report.manifest.to_csv(index=False)),
    ):
        written.append(write_atomic(out_dir / name, text))
    return written


def load_coco(path: str | Path) -> dict:
    """Read a COCO instances file (``nailseg convert``'s or a labelling tool's), its shape checked.

    Raises:
        ValueError: not JSON, or not a COCO file NailSeg can use; the message names the file and
            the place in it (see :func:`nailseg.json_files.check_coco`).
        OSError: the file cannot be read.
    """
    return check_coco(read_json(path), str(path))
