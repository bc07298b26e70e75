"""Each CPU speed option of the default model: its latency, and F1 and segm AP on the validation split.

One model per option, built from the same weights; the latency rows alternate between the options
photo by photo (so a machine that slows down slows them all), then each option is scored on the
ground truth as ``nailseg evaluate`` scores it (AP over every detection, F1 at the model's default
threshold with its duplicate suppression).

Options (cumulative where marked +):

* ``today``: the model as mmdet builds it from its config before issue 20: mmcv's RoIAlign (one
  thread, float32), BatchNorm unfolded, 300 RPN proposals;
* ``nail-roialign``: ``NailRoIAlign`` (``nailseg/roi_align.py``, every core);
* ``+fold-bn``: BatchNorm folded into the backbone's convolutions (what ``load_model`` does);
* ``+proposals-N``: N RPN proposals at test time instead of 300 (any N);
* ``+sampling-2``: RoIAlign with 2x2 samples per bin instead of ceil(RoI size / bins);
* ``+channels-last``: weights and activations in ``channels_last`` (float32);
* ``+bf16``: bfloat16 autocast of the convolution-heavy parts (``nailseg.precision``), forced even
  where the CPU lacks native bfloat16 (then emulated: the row says so);
* ``+compile``: ``torch.compile`` of the backbone and the FPN.

    PYTHONPATH=. .venv/bin/python bench/speed_options.py --ann-file data/roboflow/valid.json \\
        --img-dir ../shared/data/nails-roboflow [--options today nail-roialign ...] [--limit N] [--latency-photos 20]
"""

from __future__ import annotations

import argparse
import copy
import re
import statistics
import sys
import time
from pathlib import Path

import torch

from nailseg.datasets import load_coco
from nailseg.evaluate import coco_ap, evaluate_dataset
from nailseg.images import load_image_rgb
from nailseg.inference import load_model
from nailseg.precision import channels_last, cpu_has_bf16, use_bf16
from nailseg.weights import BUNDLED_WEIGHTS, load_model_config, load_state_dict

OPTIONS = (
    "today",
    "nail-roialign",
    "+fold-bn",
    "+proposals-200",
    "+proposals-100",
    "+sampling-2",
    "+channels-last",
    "+bf16",
    "+compile",
)


def option(text: str) -> str:
    """An option name as listed above (``+proposals-N`` with any N)."""
    if text in OPTIONS or re.fullmatch(r"\+proposals-[1-9][0-9]*", text):
        return text
    raise argparse.ArgumentTypeError(f"unknown option {text!r}")


def todays_model(weights: Path) -> torch.nn.Module:
    """The model as mmdet builds it from the config with mmcv's RoIAlign, BatchNorm unfolded."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    import nailseg.model  # noqa: F401 - registers the backbone and heads

    model_cfg = copy.deepcopy(load_model_config(weights.with_suffix(".json")).model)
    for key in ("bbox_roi_extractor", "mask_roi_extractor"):
        model_cfg["roi_head"][key]["type"] = "SingleRoIExtractor"
        model_cfg["roi_head"][key]["roi_layer"]["type"] = "RoIAlign"
    init_default_scope("mmdet")
    model = MODELS.build(model_cfg)
    model.load_state_dict(load_state_dict(weights))
    return model.eval()


def build(options: list[str], weights: Path) -> dict:
    """One segmenter per option, each with the options before it applied (``+``) as listed."""
    segmenters, applied = {}, []
    for option in options:
        applied = [*applied, option] if option.startswith("+") else [option]
        segmenter = load_model(weights, device="cpu", precision="fp32")
        if applied[0] == "today":
            segmenter.model = todays_model(weights)
        else:  # load_model folds BatchNorm and uses channels_last: undo what the options have not reached
            segmenter.model.to(memory_format=torch.contiguous_format)
            if "+fold-bn" not in applied:
                segmenter.model.backbone = todays_model(weights).backbone
        for step in applied[1:]:
            apply(segmenter, step)
        segmenters[option] = segmenter
    return segmenters


def apply(segmenter, step: str) -> None:
    model = segmenter.model
    if step.startswith("+proposals-"):
        model.rpn_head.test_cfg.max_per_img = int(step.rsplit("-", 1)[1])
    elif step == "+sampling-2":
        for extractor in (model.roi_head.bbox_roi_extractor, model.roi_head.mask_roi_extractor):
            for layer in extractor.roi_layers:
                layer.sampling_ratio = 2
    elif step == "+channels-last":
        channels_last(model)
    elif step == "+bf16":
        use_bf16(model)
        channels_last(model)
        segmenter.precision = "bf16" if cpu_has_bf16() else "bf16 (emulated: no native bfloat16 here)"
    elif step == "+compile":
        model.backbone = torch.compile(model.backbone)
        model.neck = torch.compile(model.neck)


def latency(segmenters: dict, photos: list[Path], warmup: int = 2) -> dict[str, float]:
    """Median ms per photo of each segmenter's ``predict``, alternating per photo."""
    images = [load_image_rgb(p) for p in photos]
    for segmenter in segmenters.values():
        for image in images[:warmup]:
            segmenter.predict(image)
    times = {name: [] for name in segmenters}
    for image in images:
        for name, segmenter in segmenters.items():
            start = time.perf_counter()
            segmenter.predict(image)
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ann-file", type=Path, required=True)
    parser.add_argument("--img-dir", type=Path, required=True)
    parser.add_argument("--weights", type=Path, default=BUNDLED_WEIGHTS)
    parser.add_argument("--options", nargs="+", default=list(OPTIONS), type=option, help=" ".join(OPTIONS))
    parser.add_argument("--limit", type=int, default=None, help="score the first N photos only")
    parser.add_argument("--latency-photos", type=int, default=20)
    parser.add_argument("--no-accuracy", action="store_true", help="latency only")
    parser.add_argument(
        "--accuracy-from",
        default=None,
        metavar="OPTION",
        help="score only this option and those after it (the options before it give the same nails)",
    )
    args = parser.parse_args()
    gt = load_coco(args.ann_file)
    if args.limit:
        gt = {**gt, "images": gt["images"][: args.limit]}
    photos = [args.img_dir / im["file_name"] for im in gt["images"][: args.latency_photos]]
    segmenters = build(args.options, args.weights)
    ms = latency(segmenters, photos)
    print(f"{len(photos)} photos, {torch.get_num_threads()} threads; option: ms/photo | F1 at default | segm AP")
    base = ms[args.options[0]]
    scored = args.options[args.options.index(args.accuracy_from) :] if args.accuracy_from else args.options
    for name, segmenter in segmenters.items():
        line = f"{name:>16}: {ms[name]:7.1f} ms ({base / ms[name]:.2f}x)"
        if not args.no_accuracy and name in scored:
            evaluation = evaluate_dataset(segmenter, gt, args.img_dir)
            tally = evaluation.tallies[segmenter.score_thr]
            segm = coco_ap(gt, evaluation.results)["segm"]
            line += f" | F1 {tally.f1:.4f} (exact {tally.exact_share:.1%})"
            line += f" | segm AP {segm['AP']:.4f} / {segm['AP75']:.4f}"
        print(line + ("" if segmenter.precision == "fp32" else f" [{segmenter.precision}]"), flush=True)


if __name__ == "__main__":
    sys.exit(main())
