"""CPU latency of the default model against stock mmdet Mask R-CNN R50-FPN, in one run.

Reference: ``mask-rcnn_r50_fpn_1x_coco.py`` with 1 class, random init, at most 10 detections,
test scale 432 (the photos' size), exported like our weights so both go through the same code.

Prints, for each model: load time, median per-photo latency in-process, peak memory (RSS) of a
process that loads the model and segments the photos, and the end-to-end per-photo time of
``nailseg predict`` processes on 20 photos (read, segment, write each, as its summary line times
them once its model is loaded: its start-up is left out, never subtracted), median of 3,
alternating models. Then the ratios. ``--also W ...`` times more weights beside the default in
the same run (e.g. the same weights with another test scale in their JSON config).

    .venv/bin/python bench/latency.py [--photos DIR] [--repeats 3] [--also WEIGHTS ...]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED_PHOTOS = ROOT.parent / "shared" / "data" / "nails-roboflow" / "images"
TEST_PHOTOS = ROOT / "tests" / "data" / "nails-roboflow" / "images"


def export_reference(out_dir: Path) -> Path:
    """Random-init 1-class Mask R-CNN R50-FPN as ``.safetensors`` + its config as JSON."""
    import mmdet
    import torch
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from safetensors.torch import save_file

    cfg = Config.fromfile(str(Path(mmdet.__file__).parent / ".mim/configs/mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py"))
    cfg.model.roi_head.bbox_head.num_classes = 1
    cfg.model.roi_head.mask_head.num_classes = 1
    cfg.model.test_cfg.rcnn.max_per_img = 10
    cfg.model.backbone.init_cfg = None
    for step in cfg.test_dataloader.dataset.pipeline:
        if step["type"] == "Resize":
            step["scale"] = (432, 432)
    init_default_scope("mmdet")
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    weights = out_dir / "mask-rcnn_r50_fpn_reference.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    # A config is data (nailseg.weights): written as JSON like an exported model's.
    weights.with_suffix(".json").write_text(json.dumps(cfg.to_dict(), default=str))
    return weights


def worker(weights: str | None, photos: list[str]) -> dict:
    """Load a model and segment ``photos`` in this process; report times and peak memory."""
    import resource

    from nailseg.images import load_image_rgb
    from nailseg.inference import load_model

    start = time.perf_counter()
    seg = load_model(weights, device="cpu")
    load_s = time.perf_counter() - start
    images = [load_image_rgb(p) for p in photos]
    seg.predict(images[0])  # warm-up
    times = []
    for img in images:
        t = time.perf_counter()
        seg.predict(img)
        times.append(time.perf_counter() - t)
    return {
        "load_s": load_s,
        "median_s": statistics.median(times),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_worker(weights: str | None, photos: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--weights", weights or "", *photos]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def predict_seconds(weights: str | None, photos: list[str], out: Path, env: dict | None = None) -> tuple[float, int]:
    """The seconds one ``nailseg predict`` process says its photos took once its model was loaded,
    and how many photos that was (its summary's ``N photo(s) in S s``: read, segment, write; a photo
    named twice is segmented once); its stderr in the error on failure."""
    cmd = [sys.executable, "-m", "nailseg", "predict", *photos, "--out", str(out)]
    if weights:
        cmd += ["--weights", weights]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if done.returncode:
        raise RuntimeError(f"nailseg predict failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    said = re.search(r"\b(\d+) photo\(s\) in ([0-9.]+) s\b", done.stdout)
    if not said or not int(said[1]):
        raise RuntimeError(f"nailseg predict did not say how long its photos took:\n{done.stdout[-1000:]}")
    return float(said[2]), int(said[1])


def predict_per_photo(weights: str | None, photos: list[str], out: Path, env: dict | None = None) -> float:
    """Per-photo time of ``nailseg predict`` without its start-up (import, model load), as it
    measures it itself: a time, never a difference of two (start-up noise once made that negative)."""
    seconds, count = predict_seconds(weights, photos, out, env)
    return seconds / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=SHARED_PHOTOS if SHARED_PHOTOS.is_dir() else TEST_PHOTOS)
    parser.add_argument("--count", type=int, default=20, help="photos per end-to-end run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--also", nargs="+", default=[], metavar="WEIGHTS", help="more weights to time beside ours")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--weights", default=None, help=argparse.SUPPRESS)
    parser.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.weights or None, args.files)))
        return

    available = sorted(str(p) for p in args.photos.glob("*.jpg"))
    photos = (available * (args.count // max(len(available), 1) + 1))[: args.count]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        models = {"default": None, **{Path(w).stem: w for w in args.also}, "r50-reference": str(export_reference(tmp))}
        report = {name: run_worker(w, photos) for name, w in models.items()}
        e2e: dict[str, list[float]] = {name: [] for name in models}
        for r in range(args.repeats):
            for name, w in models.items():  # alternate so that machine noise hits both
                e2e[name].append(predict_per_photo(w, photos, tmp / f"{name}-{r}"))
        for name in models:
            report[name]["predict_per_photo_s"] = statistics.median(e2e[name])
    width = max(len(name) for name in report)
    for name, r in report.items():
        print(
            f"{name:{width}s} load {r['load_s']:.2f} s | in-process {r['median_s'] * 1000:.0f} ms/photo | "
            f"nailseg predict {r['predict_per_photo_s'] * 1000:.0f} ms/photo | peak RSS {r['peak_rss_mib']:.0f} MiB"
        )
    ref = report.pop("r50-reference")
    for name, ours in report.items():
        print(
            f"{name}: speed-up, in-process: {ref['median_s'] / ours['median_s']:.2f}x; "
            f"nailseg predict end to end: {ref['predict_per_photo_s'] / ours['predict_per_photo_s']:.2f}x"
        )
    print(
        f"({len(photos)} photos a run after the model loaded, as predict times them; median of {args.repeats}, "
        f"from {args.photos})"
    )


if __name__ == "__main__":
    main()
