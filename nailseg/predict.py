"""A ``nailseg predict`` run: which photos, in which order, on how many processes, and the merge.

* :func:`find_photos`: files as given; folders walked recursively for :data:`IMAGE_EXTENSIONS`.
* Every photo gets its ``image_id`` (its place in that list, from 1) and its output stem, a
  function of its path within the run alone (:func:`plan`): a worker that segments a share of the
  list writes what one process would have written for those photos, two photos never share an
  output file, and a photo added to a folder renames no other photo's outputs.
* ``resume``: photos already in ``DIR/predictions.json`` (or in the shards of a stopped
  ``--nproc`` run) are not segmented again; their results and ``crops.csv`` rows are kept. A
  photo without nails leaves no result there, so it is segmented again.
* ``nproc`` > 1: :func:`nailseg.distributed.launch` starts N copies of the command through
  torchrun; worker ``r`` takes photos ``r, r + N, ...`` and keeps its results in a shard
  (:func:`nailseg.outputs.write_shard`); the launching process merges the shards in image order.

While a run goes on, its results are saved every :data:`SAVE_EVERY_S` seconds (one process:
``predictions.json`` and ``crops.csv``; a worker: its shard), so a stopped run can be resumed.
When it ends, the pre-labels for a labelling tool are written from ``predictions.json``
(:func:`save_labels`: ``annotations.json``, optionally YOLO-seg labels), with the photos named
relative to the folder they share (:func:`label_names`). Files are written by
:mod:`nailseg.outputs` only.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from nailseg import distributed, outputs
from nailseg.draw import CropOptions
from nailseg.files import output_stem
from nailseg.images import IMAGE_EXTENSIONS, ImageError, exif_size

SAVE_EVERY_S = 60.0


@dataclass(frozen=True)
class Photo:
    """One photo of a run: ``image_id`` (from 1, its place in the run), ``name`` as given, output ``stem``."""

    image_id: int
    name: str
    stem: str


@dataclass(frozen=True)
class Settings:
    """What every photo of a run is segmented with (the command line's options)."""

    weights: str | None = None
    score_thr: float | None = None  # None: the model's own default
    options: CropOptions = CropOptions()


def find_photos(inputs: Iterable[str | Path], exclude: str | Path | None = None) -> dict[str, str]:
    """The photos named by ``inputs``, in order, each once: their path strings, each with its path
    within the run (what its output names come from, :func:`nailseg.files.output_stem`).

    A file is taken as given, whatever its extension (an unreadable one is reported when read), and
    is named within the run by its file name; a folder gives its files with an
    :data:`IMAGE_EXTENSIONS` suffix (any case), recursively, sorted by path, each named by its path
    relative to the folder, leaving out anything under ``exclude`` (the output folder).
    """
    found: dict[str, str] = {}
    skip = Path(exclude).resolve() if exclude else None
    for item in inputs:
        folder = Path(item)
        if not folder.is_dir():
            found.setdefault(str(item), folder.name)
            continue
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
                continue
            if skip and path.resolve().is_relative_to(skip):
                continue
            found.setdefault(str(path), path.relative_to(folder).as_posix())
    return found


def plan(found: dict[str, str] | list[str]) -> list[Photo]:
    """Image ids (places in the run, from 1) and output stems of a run's photos.

    ``found``: :func:`find_photos`' paths with their paths within the run (a list: each path is its
    own). A stem is a function of the photo's path within the run alone
    (:func:`nailseg.files.output_stem`), so a photo keeps its stem when photos are added.

    Raises:
        ValueError: two photos of different inputs have one path within the run (``x/a.jpg`` and
            ``y/a.jpg`` given as files): their outputs would overwrite each other.
    """
    within = found if isinstance(found, dict) else {name: name for name in found}
    photos, owner = [], {}
    for image_id, (name, rel) in enumerate(within.items(), start=1):
        stem = output_stem(rel)
        if stem in owner:
            raise ValueError(
                f"{owner[stem]} and {name} would write the same output files ({stem}_...): "
                "give the folder that holds both, or segment them in separate runs"
            )
        owner[stem] = name
        photos.append(Photo(image_id, name, stem))
    return photos


def label_names(names: list[str]) -> list[str]:
    """The photos' names as ``annotations.json`` gives them: relative to the deepest folder holding
    them all, so that the file, put in that folder, names each photo where it lies (what CVAT's and
    Label Studio's importers and ``nailseg convert`` expect). Links are not followed."""
    paths = [Path(os.path.abspath(name)) for name in names]
    base = os.path.commonpath([p.parent for p in paths]) if paths else ""
    return [p.relative_to(base).as_posix() for p in paths]


def save_labels(out_dir: Path, photos: list[Photo], entries: Iterable[dict], yolo: bool = False) -> list[Path]:
    """Write the pre-labels of the photos segmented (see :func:`nailseg.outputs.write_labels`).

    Their masks are read back from the entries' results (RLE, exact), one at a time; photos that
    failed, or are gone since, are left out.
    """
    from nailseg.convert import segmentation_to_mask

    done = {e["name"]: e for e in entries if not e["failed"]}
    labelled = []
    for photo, file_name in zip(photos, label_names([p.name for p in photos])):
        if photo.name not in done:
            continue
        try:
            width, height = exif_size(photo.name)
        except ImageError:  # gone since it was segmented
            continue
        results = done[photo.name]["results"]
        masks = (segmentation_to_mask(r["segmentation"], height, width) for r in results)
        labelled.append(outputs.photo_labels(file_name, width, height, masks, [r["score"] for r in results]))
    return outputs.write_labels(out_dir, labelled, yolo)


def previous_results(out_dir: Path, photos: list[Photo], shards: bool = True) -> dict[str, dict]:
    """Photos of ``photos`` that an earlier run in ``out_dir`` segmented, by name.

    From ``predictions.json`` with ``crops.csv``, and (with ``shards``) from the shards a stopped
    ``--nproc`` run left. Each value is a photo entry as :func:`nailseg.outputs.write_shard`
    describes, its results renumbered to this run's ``image_id``.
    """
    ids = {p.name: p.image_id for p in photos}
    found: dict[str, dict] = {}
    for result in outputs.read_predictions(out_dir):
        entry = found.setdefault(result["file_name"], _entry(result["file_name"], 0))
        entry["results"].append(result)
    for row in outputs.read_crops_csv(out_dir):
        if row["photo"] in found:
            found[row["photo"]]["rows"].append(row)
    if shards:
        found.update((e["name"], e) for e in outputs.read_shards(out_dir) if not e["failed"])
    if gone := len(found.keys() - ids.keys()):
        print(f"note: {gone} photo(s) of the earlier run are not among the inputs: left out", file=sys.stderr)
    return {
        name: {**e, "image_id": ids[name], "results": [{**r, "image_id": ids[name]} for r in e["results"]]}
        for name, e in found.items()
        if name in ids
    }


def save_merged(out_dir: Path, entries: Iterable[dict]) -> Path:
    """Write ``predictions.json`` and ``crops.csv`` of photo entries, in image order.

    The order is the one-process run's whatever order the entries come in: a merged ``--nproc``
    run writes the same files as one process.
    """
    ordered = sorted(entries, key=lambda e: e["image_id"])
    outputs.write_crops_csv(out_dir, [row for e in ordered for row in e["rows"]])
    return outputs.write_predictions(out_dir, [r for e in ordered for r in e["results"]])


def run(
    inputs: Iterable[str | Path],
    out_dir: Path,
    settings: Settings = Settings(),
    resume: bool = False,
    nproc: int = 1,
    argv: list[str] | None = None,
    yolo: bool = False,
) -> int:
    """Segment the photos of ``inputs`` into ``out_dir`` on ``nproc`` processes.

    Args:
        inputs: photos and folders (see :func:`find_photos`).
        resume: keep what an earlier run in ``out_dir`` segmented, do the rest.
        nproc: processes (one per GPU where there are GPUs); above 1 the workers are started with
            ``argv`` (the ``nailseg`` arguments, ``["predict", ...]``) plus ``--distributed``.
        yolo: also write YOLO-seg pre-labels (``annotations.json`` is always written).

    Returns:
        The exit status: 1 when every photo tried failed or a worker failed, else 0.

    Raises:
        ValueError: no photo found in ``inputs``.
    """
    out_dir = Path(out_dir)
    photos = plan(find_photos(inputs, exclude=out_dir))
    if not photos:
        raise ValueError("no photo found (folders are searched for " + ", ".join(sorted(IMAGE_EXTENSIONS)) + ")")
    kept = previous_results(out_dir, photos) if resume else {}
    todo = [p for p in photos if p.name not in kept]
    if resume:
        print(f"resume: {len(kept)} photo(s) done before, {len(todo)} to go", file=sys.stderr)
    if nproc <= 1 or not todo:
        outputs.remove_shards(out_dir)  # stale, or just folded into `kept`
        done, summary = (
            _segment(todo, out_dir, settings, None, _saver(out_dir, kept)) if todo else ([], "nothing to do")
        )
        print(f"{_save_all(out_dir, photos, [*kept.values(), *done], yolo)}, {summary})")
        return _status(done)
    if not argv:
        raise ValueError("the workers' arguments (argv) are needed for nproc > 1")
    # Workers read what was done from predictions.json alone: fold the old shards into it first,
    # so that their new shards (named by rank) replace nothing that is not merged.
    save_merged(out_dir, kept.values())
    outputs.remove_shards(out_dir)
    # Each worker computes with one process's threads: then its numbers are exactly one process's
    # (a CPU's sums depend on how many threads share them). On GPUs it makes no difference.
    code = distributed.launch(argv, nproc, share_cores=False)
    done = outputs.read_shards(out_dir)
    written = _save_all(out_dir, photos, [*kept.values(), *done], yolo)
    outputs.remove_shards(out_dir)
    print(f"{written}, {len(done)} photos on {nproc} processes)")
    if code:
        left = len(todo) - len(done)
        print(f"error: a worker failed; {left} photo(s) not done: run again with --resume", file=sys.stderr)
    return code or _status(done)


def run_worker(inputs: Iterable[str | Path], out_dir: Path, settings: Settings, resume: bool = False) -> int:
    """One worker of :func:`run` with ``nproc`` > 1 (torchrun's ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``).

    Takes photos ``rank, rank + world_size, ...`` of what is left to do and saves them to its
    shard; only rank 0 shows a progress bar. Returns 0 (photos that fail are recorded as such).
    """
    out_dir = Path(out_dir)
    rank, world = distributed.rank(), distributed.world_size("pytorch")
    photos = plan(find_photos(inputs, exclude=out_dir))
    # Not the shards: those are this run's, being written by the other workers (the launching
    # process folded older ones into predictions.json), and every worker must see the same list.
    kept = previous_results(out_dir, photos, shards=False) if resume else {}
    share = [p for p in photos if p.name not in kept][rank::world]
    device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if distributed.gpu_count() else "cpu"

    def save(done: list[dict]) -> None:
        outputs.write_shard(out_dir, rank, done)

    done, summary = _segment(share, out_dir, settings, device, save, f"rank {rank} of {world}", show=rank == 0)
    print(f"rank {rank}: {summary}")
    return 0


def _save_all(out_dir: Path, photos: list[Photo], entries: list[dict], yolo: bool) -> str:
    """The end of a run: ``predictions.json``, ``crops.csv`` and the pre-labels of all its photo
    entries; returns the start of the summary line, ``wrote ... (N nails``."""
    path = save_merged(out_dir, entries)
    save_labels(out_dir, photos, entries, yolo)
    labels = f"{outputs.ANNOTATIONS} and {outputs.LABELS}/" if yolo else outputs.ANNOTATIONS
    nails = sum(len(e["results"]) for e in entries)
    return f"wrote {path}, {outputs.CROPS_CSV}, {labels} ({nails} nails"


def _entry(name: str, image_id: int) -> dict:
    return dict(name=name, image_id=image_id, results=[], rows=[], failed=False)


def _saver(out_dir: Path, kept: dict[str, dict]) -> Callable[[list[dict]], object]:
    return lambda done: save_merged(out_dir, [*kept.values(), *done])


def _status(done: list[dict]) -> int:
    return 1 if done and all(e["failed"] for e in done) else 0


def _segment(
    photos: list[Photo],
    out_dir: Path,
    settings: Settings,
    device: str | None,
    save: Callable[[list[dict]], object],
    desc: str | None = None,
    show: bool = True,
) -> tuple[list[dict], str]:
    """Segment ``photos`` one by one, writing their pictures; ``save(done)`` every SAVE_EVERY_S and at the end.

    A progress bar goes to stderr when ``show`` and it is a terminal. Returns the photo entries
    and, for the summary line, how long the photos took once the model was loaded
    (``N photo(s) in S s``: read, segment, write) and the weights' source with the precision and
    device they ran in.
    """
    from tqdm import tqdm

    from nailseg.images import ImageError, load_image_rgb
    from nailseg.inference import load_model

    segmenter = load_model(settings.weights, device=device, allow_py_config=True)
    start = time.perf_counter()
    done: list[dict] = []
    # delay: the bar appears once a run has taken 2 s, so a photo or two prints no bar.
    bar = tqdm(photos, unit="photo", desc=desc, disable=not (show and sys.stderr.isatty()), delay=2)
    saved = time.monotonic()
    try:
        for photo in bar:
            entry = _entry(photo.name, photo.image_id)
            try:
                if not Path(photo.name).is_file():  # load_image_rgb would say "no longer on the server"
                    raise ImageError("not found")
                rgb = load_image_rgb(photo.name)
            except ImageError as err:
                tqdm.write(f"problem: {photo.name}: {err}", file=sys.stderr)
                done.append({**entry, "failed": True})
                continue
            nails = segmenter.predict(rgb, settings.score_thr)
            saved_photo = outputs.save_photo(out_dir, photo.stem, rgb, nails, settings.options, photo=photo.name)
            entry["rows"] = saved_photo.crop_rows
            entry["results"] = outputs.photo_results(nails, photo.image_id, photo.name)
            done.append(entry)
            tqdm.write(f"{photo.name}: {len(nails)} nail(s)", file=sys.stdout)
            if time.monotonic() - saved > SAVE_EVERY_S:
                save(done)
                saved = time.monotonic()
    finally:
        bar.close()
        save(done)
    seconds = time.perf_counter() - start
    where = f"{segmenter.weights.source} ({segmenter.precision} on {segmenter.device})"
    return done, f"{len(photos)} photo(s) in {seconds:.2f} s, weights: {where}"
