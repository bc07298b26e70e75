"""``nailseg`` command line: one entry point, one subcommand per pipeline stage.

Heavy imports (torch, mmdet) happen inside the subcommands that need them, so that
``nailseg convert`` starts in well under a second.

One error boundary (:func:`main`): a user's mistake (an argument out of range; a file that is
missing, of the wrong shape or not writable) is one line on stderr, ``error: ...`` naming the
argument or the file, and exit status 2, without a traceback; a real bug still shows one. Outputs
are checked before the work starts, so a mistake there costs no work and no data.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import sys
from pathlib import Path

from nailseg.convert import DEFAULT_MIN_AREA

MAX_CROP_SIZE = 2048  # as the app's crop size (nailseg/tabs/segment.py); 40,000 px would take 6.4 GB
ZIP_PHOTOS = "photos"  # `convert DATASET.zip --out DIR` extracts the zip into DIR/photos


def _in_range(value: float | None, flag: str, low: float, high: float) -> None:
    """Refuse a number given on the command line unless it is finite and in ``[low, high]``."""
    if value is not None and not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{flag} must be in [{low:g}, {high:g}], got {value}")


def _writable(folder: Path, flag: str, given: Path) -> None:
    """Refuse ``given`` unless ``folder`` is, or can be made as, a folder this process may write in."""
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"{flag} {given}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {given}: {existing} is not writable")


def _output_folder(path: Path, flag: str) -> Path:
    """An output folder, checked before the work starts (it may not exist yet)."""
    _writable(path, flag, path)
    return path


def _output_file(path: Path, flag: str) -> Path:
    """An output file, checked before the work starts: not a folder, in a folder that can be written."""
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder: name the file to write")
    _writable(path.parent, flag, path)
    return path


def _convert(args: argparse.Namespace) -> int:
    from nailseg.datasets import convert_dataset, save_report

    _output_folder(args.out, "--out")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    options = dict(
        valid_fraction=args.valid_fraction,
        seed=args.seed,
        min_area=args.min_area,
        split_touching=args.split_touching,
        workers=args.workers,
        categories=tuple(args.category or ()),
    )
    zipped = args.root.is_file() and args.root.suffix.lower() == ".zip"
    if zipped:
        report = _convert_zip(args.root, args.out / ZIP_PHOTOS, options)
    else:
        report = convert_dataset(args.root, **options)
    summary = report.summary()
    refused = args.strict and bool(report.problems)  # --strict: all or nothing
    if report.converted and not refused:
        summary["written"] = [str(p) for p in save_report(report, args.out)]
    elif zipped:  # nothing to train on: the extracted photos go too
        shutil.rmtree(args.out / ZIP_PHOTOS, ignore_errors=True)
    print(json.dumps(summary, indent=2))
    for path, problem in report.problems:
        print(f"problem: {path}: {problem}", file=sys.stderr)
    if not report.converted:
        print("error: nothing was converted; no file was written", file=sys.stderr)
        return 1
    if refused:
        print(f"error: {len(report.problems)} problem(s) and --strict was given; no file was written", file=sys.stderr)
        return 1
    return 0


def _convert_zip(archive: Path, dest: Path, options: dict):
    """A zipped dataset (a labelling tool's export) extracted into ``dest``, where training finds its
    photos, and converted. ``dest`` must be new: an earlier conversion's photos are never replaced."""
    from nailseg.dataset_zip import convert_archive

    if dest.exists():
        raise ValueError(f"--out {dest.parent}: {dest} exists from an earlier conversion: remove it, or choose another")
    dest.mkdir(parents=True)
    try:
        return convert_archive(archive, dest, **options)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def option_value(text: str):
    """A ``--cfg-options`` value as mmdet's tools read it: Python literals (numbers, ``True``,
    ``None``, strings, ``[...]``, ``(...)``, ``{...}``), ``a,b`` as a list, anything else as text.
    Read as data (``ast.literal_eval``): nothing in it runs."""
    import ast

    if "," in text and not text.startswith(("[", "(", "{", '"', "'")):
        return [option_value(part) for part in text.split(",")]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def _train(args: argparse.Namespace) -> int:
    from nailseg import distributed
    from nailseg.train import DEFAULT_CONFIG, build_config, train

    options = {}
    for item in args.cfg_options or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--cfg-options expects KEY=VALUE, got {item!r}")
        options[key] = option_value(value)
    if args.auto_scale_lr:
        options["auto_scale_lr.enable"] = True
    if args.nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {args.nproc}")
    # Workers started by --nproc get the same arguments plus --distributed: --nproc is then theirs.
    start_workers = args.nproc > 1 and not args.launcher
    cfg = build_config(
        args.config or DEFAULT_CONFIG,
        args.data,
        args.work_dir,
        args.epochs,
        args.batch_size,
        args.lr,
        options,
        load_from=args.load_from,
        launcher=args.launcher,
        world_size=args.nproc if start_workers else distributed.world_size(args.launcher),
        minutes=args.minutes,
        precision=args.precision,
    )
    _output_folder(Path(cfg.work_dir), "--work-dir")
    if start_workers:  # the config was checked once, here, before any worker starts
        return distributed.launch(args.argv, args.nproc)
    checkpoint = train(cfg, resume=args.resume)
    if distributed.rank() == 0:
        print(f"checkpoint: {checkpoint}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from nailseg import predict
    from nailseg.draw import CropOptions

    _in_range(args.score_thr, "--score-thr", 0, 1)
    _in_range(args.margin, "--margin", 0, 1)
    _in_range(args.crop_size, "--crop-size", 1, MAX_CROP_SIZE)
    if args.nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {args.nproc}")
    _output_folder(args.out, "--out")
    options = CropOptions(args.margin, bool(args.crop_size), args.crop_size, args.background == "black", args.align)
    settings = predict.Settings(args.weights, args.score_thr, options)
    with _sigterm_as_exit():
        if args.distributed:  # one of the workers that `--nproc` started
            return predict.run_worker(args.images, args.out, settings, resume=args.resume)
        return predict.run(
            args.images, args.out, settings, resume=args.resume, nproc=args.nproc, argv=args.argv, yolo=args.yolo
        )


@contextlib.contextmanager
def _sigterm_as_exit():
    """SIGTERM (``kill``, a scheduler; torchrun stopping its workers) ends a run as Ctrl-C does:
    through the ``finally`` that saves what was done (``predictions.json`` or a worker's shard),
    so that ``--resume`` skips it. The previous handler is back afterwards."""
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _evaluate(args: argparse.Namespace) -> int:
    from nailseg.datasets import load_coco
    from nailseg.evaluate import coco_ap, evaluate_dataset, photo_paths
    from nailseg.inference import load_model

    if args.dump:  # checked before the evaluation, which it would otherwise lose
        _output_file(args.dump, "--dump")
    if not args.img_dir.is_dir():
        raise ValueError(f"--img-dir {args.img_dir} is not a folder")
    gt = load_coco(args.ann_file)
    photo_paths(gt, args.img_dir)  # all there before the model loads
    segmenter = load_model(args.weights, allow_py_config=True)
    evaluation = evaluate_dataset(segmenter, gt, args.img_dir, progress=sys.stderr.isatty())
    if args.dump:
        from nailseg.files import write_atomic

        args.dump.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(args.dump, json.dumps(evaluation.results))
    best, tally = evaluation.chosen, evaluation.tallies[evaluation.chosen]
    print(
        f"best F1 at score >= {best} (F1 {tally.f1:.3f}, exact count {tally.exact_share:.1%}); the model's default "
        f"is {segmenter.score_thr}. To make it the default: nailseg export CHECKPOINT --out W --score-thr {best}",
        file=sys.stderr,
    )
    print(
        json.dumps({**coco_ap(gt, evaluation.results), "score_thr": evaluation.threshold_summary(segmenter.score_thr)})
    )
    return 0


def _export(args: argparse.Namespace) -> int:
    from nailseg.weights import export_weights

    if args.score_thr is not None and args.choose_thr:
        raise ValueError("give --score-thr or --choose-thr, not both")
    _writable(args.out.parent, "--out", args.out)  # the rest of --out is export_weights' to check
    if args.choose_thr:  # checked before anything is written
        from nailseg.evaluate import threshold_ground_truth

        gt, img_dir = threshold_ground_truth(args.choose_thr, args.img_dir)
    out = export_weights(args.checkpoint, args.out, half=not args.fp32, score_thr=args.score_thr)
    size = out.stat().st_size / 2**20
    print(f"wrote {out} ({size:.1f} MiB) and {out.with_suffix('.json')}")
    if args.choose_thr:
        from nailseg.evaluate import record_chosen_score_thr

        evaluation = record_chosen_score_thr(out, gt, img_dir, progress=sys.stderr.isatty())
        best, tally = evaluation.chosen, evaluation.tallies[evaluation.chosen]
        print(
            f"default score threshold {best}: best F1 on {tally.photos} photos of {args.choose_thr.name} "
            f"(F1 {tally.f1:.3f}, exact count {tally.exact_share:.1%})"
        )
    elif args.score_thr is None:
        print("note: no --score-thr or --choose-thr: unless its config states one, users get 0.5")
    return 0


def _push(args: argparse.Namespace) -> int:
    from nailseg.hub import HubRefused
    from nailseg.paths import BUNDLED_WEIGHTS
    from nailseg.publish import push_model

    try:
        result = push_model(args.repo_id, args.weights or BUNDLED_WEIGHTS, token=args.token, private=args.private)
    except HubRefused as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"commit": result.commit_url, "weights": result.spec, "files": list(result.files)}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nailseg", description="Fingernail instance segmentation.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_convert_parser, _train_parser, _predict_parser, _evaluate_parser, _export_parser, _push_parser):
        add(sub)
    return parser


WEIGHTS_HELP = (
    "local .safetensors (its .json or .py config beside it) or hf://owner/repo[@rev]/file.safetensors "
    "(default: $NAILSEG_WEIGHTS, then the bundled model)"
)


def _convert_parser(sub) -> None:
    p = sub.add_parser("convert", help="turn a nail dataset into COCO instance annotations")
    p.add_argument(
        "root",
        type=Path,
        help="dataset folder or .zip (Images/+Masks/, COCO files with their photos, or images/+labels/); "
        f"a zip is extracted into OUT/{ZIP_PHOTOS}",
    )
    p.add_argument("--out", type=Path, required=True, help="folder for train.json, valid.json, manifest.csv")
    p.add_argument(
        "--category",
        action="append",
        metavar="NAME",
        help="COCO datasets: keep this category's annotations as nails (any case; repeat for several; default: "
        "those whose name says nail, else a file's only one)",
    )
    p.add_argument("--valid-fraction", type=float, default=0.2, help="share of photos held out (0 = none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/valid split")
    p.add_argument("--min-area", type=int, default=DEFAULT_MIN_AREA, help="drop nails below this many pixels")
    p.add_argument("--split-touching", action="store_true", help="split touching nails by watershed")
    p.add_argument("--strict", action="store_true", help="exit non-zero when any file has a problem")
    p.add_argument("--workers", type=int, default=None, help="processes to use (default: all cores)")
    p.set_defaults(func=_convert)


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a Mask R-CNN on converted data (mmengine Runner)")
    p.add_argument("config", type=Path, nargs="?", default=None, help="config file (default: the default model's)")
    p.add_argument("--data", type=Path, required=True, help="folder written by `nailseg convert`")
    p.add_argument("--work-dir", type=Path, default=None, help="logs and checkpoints (default work_dirs/<config>)")
    p.add_argument("--epochs", type=int, default=None, help="passes over the training photos")
    p.add_argument("--batch-size", type=int, default=None, help="photos per iteration and process (per GPU)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (above 0, at most 1)")
    p.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="train for this wall-clock time: warm-up and cosine lr over it, then a checkpoint (replaces the "
        "config's schedule; with --epochs, whichever ends first)",
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16", "auto"),
        default=None,
        help="CPU training precision: bf16 autocast for the convolution-heavy parts (default $NAILSEG_PRECISION, "
        "else auto: bf16 where the CPU computes it natively)",
    )
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --work-dir")
    p.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="training processes on this machine, started through torchrun: one per GPU, or CPU processes",
    )
    p.add_argument(
        "--auto-scale-lr",
        action="store_true",
        help="scale the lr by (processes x batch size) / the config's auto_scale_lr.base_batch_size",
    )
    p.add_argument(
        "--launcher",
        choices=("pytorch", "slurm"),
        default=None,
        help="this process is one worker of a distributed run started by torchrun (pytorch) or srun (slurm)",
    )
    p.add_argument(
        "--distributed",
        dest="launcher",
        action="store_const",
        const="pytorch",
        help="same as --launcher pytorch: for `torchrun ... -m nailseg train --distributed`",
    )
    p.add_argument(
        "--load-from",
        default=None,
        metavar="WEIGHTS",
        help="start from these weights: a checkpoint of yours (.pth) or exported .safetensors",
    )
    p.add_argument(
        "--cfg-options",
        nargs="+",
        default=None,
        metavar="KEY=VALUE",
        help="config overrides, e.g. train_cfg.max_iters=100",
    )
    p.set_defaults(func=_train)


def _predict_parser(sub) -> None:
    p = sub.add_parser(
        "predict", help="segment photos: predictions.json, crops.csv, annotations.json (pre-labels), overlays, crops"
    )
    p.add_argument(
        "images", type=Path, nargs="+", metavar="IMAGE", help="photos, or folders (searched recursively) of photos"
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--score-thr",
        type=float,
        default=None,
        help="keep nails scoring at least this (default: the model's own, stated in its config)",
    )
    p.add_argument("--weights", default=None, help=WEIGHTS_HELP)
    p.add_argument(
        "--crop-size",
        type=int,
        default=None,
        metavar="S",
        help=f"every crop S x S pixels (1 to {MAX_CROP_SIZE}): the nail and its margin scaled to fit, padded "
        "(default: as cut)",
    )
    p.add_argument("--align", action="store_true", help="turn each crop so the nail's long axis is vertical, tip up")
    p.add_argument(
        "--margin", type=float, default=0.1, help="context around a nail, a fraction (0 to 1) of its box's longer side"
    )
    p.add_argument(
        "--background",
        choices=["keep", "black"],
        default="keep",
        help="outside the nail in box crops (cut-outs are always transparent there)",
    )
    p.add_argument("--resume", action="store_true", help="skip the photos already in OUT/predictions.json")
    p.add_argument(
        "--yolo",
        action="store_true",
        help="also write YOLO-seg pre-labels, OUT/labels/<photo>.txt (beside OUT/annotations.json, COCO)",
    )
    p.add_argument(
        "--nproc", type=int, default=1, help="share the photos among this many processes (one per GPU, or CPU)"
    )
    p.add_argument("--distributed", action="store_true", help=argparse.SUPPRESS)  # set for --nproc's workers
    p.set_defaults(func=_predict)


def _evaluate_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="COCO bbox/segm AP of a model on a ground-truth file, and its best score threshold by F1"
    )
    p.add_argument("--ann-file", type=Path, required=True, help="COCO ground truth (e.g. valid.json)")
    p.add_argument("--img-dir", type=Path, required=True, help="folder the file_name entries are relative to")
    p.add_argument("--weights", default=None, help=WEIGHTS_HELP)
    p.add_argument("--dump", type=Path, default=None, help="write every detection (COCO results) here")
    p.set_defaults(func=_evaluate)


def _export_parser(sub) -> None:
    p = sub.add_parser("export", help="training checkpoint -> .safetensors weights + .json config (no pickle, no code)")
    p.add_argument("checkpoint", type=Path, help="mmengine checkpoint (.pth) from `nailseg train`")
    p.add_argument(
        "--out", type=Path, required=True, help="weights file to write (NAME.safetensors; NAME.json beside it)"
    )
    p.add_argument("--fp32", action="store_true", help="store float32 (default: float16, half the size)")
    p.add_argument(
        "--score-thr",
        type=float,
        default=None,
        help="record the model's default score threshold in its config (see nailseg evaluate's choice)",
    )
    p.add_argument(
        "--choose-thr",
        type=Path,
        default=None,
        metavar="GT.json",
        help="choose the default threshold by F1 on this COCO ground truth (e.g. valid.json) and record it",
    )
    p.add_argument(
        "--img-dir", type=Path, default=None, help="photos of --choose-thr (default: the folder recorded in it)"
    )
    p.set_defaults(func=_export)


def _push_parser(sub) -> None:
    p = sub.add_parser("push", help="upload weights, their config and a model card to a Hugging Face Hub repo")
    p.add_argument("--repo-id", required=True, help="model repo OWNER/NAME (created when missing)")
    p.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="weights; NAME.json and README.md beside it go too (default: the bundled model)",
    )
    p.add_argument("--token", default=None, help="Hub write token (default: $HF_TOKEN or the saved login)")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.set_defaults(func=_push)


def main(argv: list[str] | None = None) -> int:
    from nailseg.weights import WeightsError

    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # `train --nproc N` passes them on to its workers
    try:
        return args.func(args)
    except (ValueError, OSError, WeightsError) as err:  # a user's mistake: an argument or a file
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2


def _one_line(err: Exception) -> str:
    """An error's message on one line; an OSError as ``file: reason``, not ``[Errno 2] ...``."""
    if isinstance(err, OSError) and err.filename and err.strerror:
        return f"{err.filename}: {err.strerror}"
    return " ".join(str(err).split()) or type(err).__name__
