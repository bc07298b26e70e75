"""The GPU half, measured: training speed of the default and the seed's R50 config, evaluation, latency.

Run by ``scripts/gpu_check.sh`` (its second phase) on a GPU machine, and by
``scripts/gpu_check.sh dry-run`` here on the CPU with tiny numbers:

    python bench/gpu.py --data D --state S --out O [--epochs 8] [--r50-epochs 1] [--batch-size 16]

Steps, each leaving a marker in ``S`` so that a call cut off by a time limit goes on where it stopped,
in the order of what matters most when the device time runs out (the first lent run, 2026-11-27,
ran out during ``evaluate``, which is why the weights now come back as soon as they exist):

1. ``env``: the device, torch, CUDA, mmcv and whether mmcv's ops run on the GPU (RoIAlign, NMS).
2. ``train-default``: the default config from the bundled weights, ``--epochs`` over ``D`` at
   ``--batch-size`` (lr scaled by ``--auto-scale-lr``), the backbone's ImageNet download skipped.
3. ``export``: the default run's last checkpoint -> ``O/<name>.safetensors`` and its ``.json``,
   copied to ``O`` at once (and again by every later call: the device tool empties ``O`` per call).
4. ``train-r50``: the seed's R50-caffe config for ``--r50-epochs``, from scratch heads (offline).
5. ``predict``: ``nailseg predict`` per photo on the GPU and, on the same machine, on its CPU.
6. ``evaluate``: COCO AP on ``D/valid.json`` of the bundled weights and of the exported ones (the
   one step that can also be done afterwards on any CPU, with the weights that came back).

Images/s = batch size / median iteration time (mmengine's ``time`` in ``scalars.json``, the first
10 % of iterations left out); peak GPU memory is mmengine's ``memory`` (MB, max over iterations).
Writes ``O/gpu.md`` (the figures), ``O/gpu.json`` (with the loss curves) and ``O/gpu-commands.log``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from latency import predict_per_photo  # bench/latency.py: this folder is on sys.path when run as a script

from nailseg.jobs import newest_checkpoint, parse_records, scalars_text

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "configs" / "mask-rcnn_effilite0_fpn-128_nails.py"
R50_CONFIG = REPO / "configs" / "mask-rcnn_r50-caffe_fpn_ms_nails.py"
BUNDLED = REPO / "checkpoints" / "mask-rcnn_effilite0_fpn-128_nails.safetensors"
EXPORT_NAME = "mask-rcnn_effilite0_fpn-128_nails-gpu"


def nailseg(*args: str, env: dict | None = None, log: Path | None = None) -> str:
    """Run ``python -m nailseg ARGS``; its standard output (all output appended to ``log``); raise on failure."""
    cmd = [sys.executable, "-m", "nailseg", *args]
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    output = done.stdout + done.stderr
    if log:
        with log.open("a") as f:
            f.write(f"$ {' '.join(cmd)}\n{output}\n")
    print(f"  ({time.perf_counter() - start:.0f} s, exit {done.returncode})", flush=True)
    if done.returncode:
        raise RuntimeError(f"nailseg {args[0]} failed (exit {done.returncode}):\n{output[-3000:]}")
    return done.stdout


def env_step() -> dict:
    import mmcv
    import torch

    info = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "mmcv": mmcv.__version__,
        "python": sys.version.split()[0],
    }
    info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (no GPU)"
    if torch.cuda.is_available():
        from mmcv.ops import nms, roi_align

        boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11]], device="cuda")
        keep = nms(boxes, torch.tensor([0.9, 0.8], device="cuda"), 0.5)[1]
        feats = torch.rand(1, 4, 16, 16, device="cuda")
        rois = torch.tensor([[0.0, 0, 0, 8, 8]], device="cuda")
        pooled = roi_align(feats, rois, (7, 7), 1.0, 0, "avg", True)
        smi = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
        info["nvidia_smi"] = subprocess.run(smi, capture_output=True, text=True).stdout.strip()
        info["mmcv_cuda_ops"] = f"nms kept {keep.tolist()}, roi_align {tuple(pooled.shape)} on {pooled.device}"
    return info


def scalars(work_dir: Path) -> list[dict]:
    """mmengine's per-interval training records of every run (resumed ones too) in ``work_dir``."""
    return [r for r in parse_records(scalars_text(work_dir)) if "loss" in r]


def speed(records: list[dict], batch_size: int) -> dict:
    times = [r["time"] for r in records]
    kept = times[len(times) // 10 :] or times
    per_iter = statistics.median(kept)
    out = {
        "iterations_logged": len(records),
        "s_per_iter": round(per_iter, 4),
        "images_per_s": round(batch_size / per_iter, 1),
        "loss_curve": [(r.get("iter", r.get("step")), round(r["loss"], 4)) for r in records],
    }
    if any("memory" in r for r in records):
        out["peak_gpu_memory_mb"] = max(r.get("memory", 0) for r in records)
    return out


def train(config: Path, work_dir: Path, args, extra: list[str], log: Path) -> dict:
    # wall_s counts from the first start: a run cut off by a call's time limit goes on in the next call.
    started, calls_file = (work_dir.parent / f"{work_dir.name}.{what}" for what in ("started", "calls"))
    if not started.is_file():
        started.parent.mkdir(parents=True, exist_ok=True)
        started.write_text(str(time.time()))
    calls = int(calls_file.read_text()) + 1 if calls_file.is_file() else 1
    calls_file.write_text(str(calls))
    nailseg(
        "train",
        str(config),
        "--data",
        str(args.data),
        "--work-dir",
        str(work_dir),
        "--batch-size",
        str(args.batch_size),
        "--resume",  # goes on from a call cut off by a time limit; a fresh run starts from --load-from
        *extra,
        log=log,
    )
    result = speed(scalars(work_dir), args.batch_size)
    result["wall_s"] = round(time.time() - float(started.read_text()))
    result["calls"] = calls
    return result


def report(results: dict, out: Path) -> None:
    (out / "gpu.json").write_text(json.dumps(results, indent=1))
    lines = ["# GPU check", "", f"```\n{json.dumps(results.get('env', {}), indent=1)}\n```", ""]
    for name in ("train-default", "train-r50"):
        r = results.get(name)
        if r:
            memory = f", peak GPU memory {r['peak_gpu_memory_mb']} MB" if "peak_gpu_memory_mb" in r else ""
            lines.append(
                f"- {name}: {r['images_per_s']} images/s, {r['s_per_iter']} s/iteration{memory}, "
                f"whole run {r['wall_s']} s in {r.get('calls', 1)} call(s); "
                f"loss {r['loss_curve'][0][1]} -> {r['loss_curve'][-1][1]}"
            )
    for key in ("evaluate", "predict", "build"):
        if key in results:
            lines.append(f"- {key}: {json.dumps(results[key])}")
    (out / "gpu.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a `nailseg convert` output (train/valid.json)")
    parser.add_argument("--state", type=Path, required=True, help="work dirs and step markers")
    parser.add_argument("--out", type=Path, required=True, help="what comes back")
    parser.add_argument("--epochs", type=int, default=8, help="default config: passes over the photos")
    parser.add_argument("--r50-epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16, help="photos per iteration")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="data loader processes")
    parser.add_argument("--photos", type=int, default=20, help="photos for the predict timing")
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=["train-r50", "predict", "evaluate"],
        help="steps to leave out, e.g. all three for a training-only run (more device time for training)",
    )
    args = parser.parse_args()
    args.data, args.state = args.data.resolve(), args.state.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    args.state.mkdir(parents=True, exist_ok=True)
    results_file = args.state / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    log = args.out / "gpu-commands.log"
    loaders = [f"train_dataloader.num_workers={args.workers}", f"val_dataloader.num_workers={args.workers}"]
    default_dir, r50_dir = args.state / "work" / "default", args.state / "work" / "r50"
    weights = args.out / f"{EXPORT_NAME}.safetensors"
    valid = json.loads((args.data / "valid.json").read_text())
    photos_root = Path(valid["info"]["dataset_root"])
    photos = [str(photos_root / im["file_name"]) for im in valid["images"][: args.photos]]

    steps = {
        "env": env_step,
        "train-default": lambda: train(
            DEFAULT_CONFIG,
            default_dir,
            args,
            [
                "--epochs",
                str(args.epochs),
                "--auto-scale-lr",
                "--load-from",
                str(BUNDLED),
                "--cfg-options",
                "model.backbone.pretrained=False",
                *loaders,
            ],
            log,
        ),
        "export": lambda: {
            "weights": nailseg(
                "export",
                str(newest_checkpoint(default_dir)),
                "--out",
                str(args.state / weights.name),
                log=log,
            )
            .strip()
            .splitlines()[-1]
        },
        "train-r50": lambda: train(
            R50_CONFIG,
            r50_dir,
            args,
            [
                "--epochs",
                str(args.r50_epochs),
                "--auto-scale-lr",
                "--cfg-options",
                "load_from=None",
                "model.backbone.init_cfg=None",
                *loaders,
            ],
            log,
        ),
        "predict": lambda: {
            f"{where}_ms_per_photo": round(
                1000 * predict_per_photo(str(BUNDLED), photos, args.state / "predict" / where, env)
            )
            for where, env in (("device", None), ("cpu_same_machine", {**os.environ, "CUDA_VISIBLE_DEVICES": ""}))
        },
        "evaluate": lambda: {
            name: json.loads(
                nailseg(
                    "evaluate",
                    "--ann-file",
                    str(args.data / "valid.json"),
                    "--img-dir",
                    str(photos_root),
                    "--weights",
                    str(w),
                    log=log,
                ).splitlines()[-1]
            )
            for name, w in (("bundled", BUNDLED), ("gpu-trained", args.state / weights.name))
        },
    }
    build = args.state / "build.seconds"
    if build.is_file():
        results["build"] = {"mmcv_build_s": int(float(build.read_text()))}

    def bring_back() -> None:  # the exported weights go to OUT as soon as they exist: a call cut off still returns them
        for src in (args.state / weights.name, (args.state / weights.name).with_suffix(".json")):
            if src.is_file():
                shutil.copy2(src, args.out / src.name)

    bring_back()
    for name, step in steps.items():
        if name in args.skip:
            print(f"{name}: skipped (--skip)", flush=True)
            continue
        if name in results:
            print(f"{name}: done before", flush=True)
            continue
        print(f"--- {name}", flush=True)
        results[name] = step()
        results_file.write_text(json.dumps(results, indent=1))
        report(results, args.out)
        bring_back()
    report(results, args.out)
    print((args.out / "gpu.md").read_text())


if __name__ == "__main__":
    main()
