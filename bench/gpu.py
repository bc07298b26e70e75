"""The GPU half, measured: training speed of the default (or several) and the seed's R50 config, evaluation, latency.

Run by ``scripts/gpu_check.sh`` (its second phase, in the background) on a GPU machine, and by
``scripts/gpu_check.sh dry-run`` here on the CPU with tiny numbers:

    python bench/gpu.py --data D --state S --out O [--epochs 8 | --minutes M] [--configs A.py B.py]
                        [--r50-epochs 1] [--batch-size 16] [--lr LR]

Steps, each leaving a marker in ``S`` so that a run stopped halfway goes on where it stopped, in the
order of what matters most when the device time runs out (the first lent run, 2026-11-27, ran out
during ``evaluate``, which is why the weights come back as soon as they exist):

1. ``env``: the device, torch, CUDA, mmcv and whether mmcv's ops run on the GPU (RoIAlign, NMS).
2. ``train``: each of ``--configs`` (default: the default config) from the bundled weights, all at
   once, side by side on the one GPU (a run of this small model leaves most of an H200 idle), for
   ``--epochs`` over ``D`` with the lr scaled by the batch (``--auto-scale-lr``), or for ``--minutes``
   each at ``--lr`` (``nailseg train --minutes``); the backbone's ImageNet download skipped.
3. ``export``: each run's last checkpoint -> ``O/<config name>-gpu.safetensors`` and its ``.json``.
4. ``train-r50``: the seed's R50-caffe config for ``--r50-epochs``, from scratch heads (offline).
5. ``predict``: ``nailseg predict`` per photo on the GPU and, on the same machine, on its CPU.
6. ``evaluate``: COCO AP on ``D/valid.json`` of the bundled weights and of the exported ones (the
   one step that can also be done afterwards on any CPU, with the weights that came back).

Images/s = batch size / median iteration time (mmengine's ``time`` in ``scalars.json``, the first
10 % of iterations left out); peak GPU memory is mmengine's ``memory`` (MB, max over iterations).
Writes ``O/gpu.md`` (the figures), ``O/gpu.json`` (with the loss curves) and ``O/gpu-commands.log``;
each run's own output goes to ``S/work/<config name>.log``.
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


def export_name(config: Path) -> str:
    """The name a config's GPU-trained weights come back under."""
    return f"{config.stem}-gpu"


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


def train(configs: list[Path], state: Path, args, extra: list[str], log: Path) -> dict:
    """``nailseg train`` of each config at once (one process each); their speeds by config name."""
    work = state / "work"
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if len(configs) > 1:  # side by side: each main process gets a share of the cores
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // (2 * len(configs))))
    runs = {}
    for config in configs:
        work_dir = work / config.stem
        # wall_s counts from the first start: a run stopped halfway goes on in the next call.
        started = work / f"{config.stem}.started"
        if not started.is_file():
            started.write_text(str(time.time()))
        cmd = [sys.executable, "-m", "nailseg", "train", str(config), "--data", str(args.data)]
        cmd += ["--work-dir", str(work_dir), "--batch-size", str(args.batch_size), "--resume", *extra]
        with log.open("a") as f:
            f.write(f"$ {' '.join(cmd)}\n")
        print("$", " ".join(cmd), flush=True)
        output = (work / f"{config.stem}.log").open("a")
        runs[config] = (subprocess.Popen(cmd, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT), output)
    results, failed = {}, []
    for config, (process, output) in runs.items():
        process.wait()
        output.close()
        if process.returncode:
            tail = (work / f"{config.stem}.log").read_text()[-3000:]
            failed.append(f"nailseg train {config.name} failed (exit {process.returncode}):\n{tail}")
            continue
        result = speed(scalars(work / config.stem), args.batch_size)
        result["wall_s"] = round(time.time() - float((work / f"{config.stem}.started").read_text()))
        results[config.stem] = result
    if failed:
        raise RuntimeError("\n".join(failed))
    return results


def report(results: dict, out: Path) -> None:
    (out / "gpu.json").write_text(json.dumps(results, indent=1))
    lines = ["# GPU check", "", f"```\n{json.dumps(results.get('env', {}), indent=1)}\n```", ""]
    runs = dict(results.get("train", {}))
    if "train-r50" in results:
        runs["train-r50"] = results["train-r50"]
    for name, r in runs.items():
        memory = f", peak GPU memory {r['peak_gpu_memory_mb']} MB" if "peak_gpu_memory_mb" in r else ""
        lines.append(
            f"- {name}: {r['images_per_s']} images/s, {r['s_per_iter']} s/iteration{memory}, "
            f"{len(r['loss_curve'])} logged, whole run {r['wall_s']} s; "
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
    parser.add_argument("--epochs", type=int, default=8, help="passes over the photos (lr scaled by the batch)")
    parser.add_argument("--minutes", type=float, default=None, help="instead of --epochs: train each config this long")
    parser.add_argument("--lr", type=float, default=None, help="with --minutes: the peak lr (default: the config's)")
    parser.add_argument("--configs", type=Path, nargs="+", default=[DEFAULT_CONFIG], help="trained side by side")
    parser.add_argument("--r50-epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16, help="photos per iteration")
    parser.add_argument("--workers", type=int, default=8, help="data loader processes per training run")
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
    args.configs = [c.resolve() for c in args.configs]
    args.out.mkdir(parents=True, exist_ok=True)
    args.state.mkdir(parents=True, exist_ok=True)
    results_file = args.state / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    log = args.out / "gpu-commands.log"
    # Runs side by side share the cores: one each for the main process, the rest for their loaders.
    workers = max(1, min(args.workers, ((os.cpu_count() or 1) - len(args.configs)) // len(args.configs)))
    loaders = [f"train_dataloader.num_workers={workers}", f"val_dataloader.num_workers={workers}"]
    if args.minutes:
        schedule = ["--minutes", str(args.minutes), *(["--lr", str(args.lr)] if args.lr else [])]
    else:
        schedule = ["--epochs", str(args.epochs), "--auto-scale-lr"]
    exported = {config.stem: args.state / f"{export_name(config)}.safetensors" for config in args.configs}
    valid = json.loads((args.data / "valid.json").read_text())
    photos_root = Path(valid["info"]["dataset_root"])
    photos = [str(photos_root / im["file_name"]) for im in valid["images"][: args.photos]]

    def export() -> dict:
        return {
            name: nailseg("export", str(newest_checkpoint(args.state / "work" / name)), "--out", str(weights), log=log)
            .strip()
            .splitlines()[-1]
            for name, weights in exported.items()
        }

    steps = {
        "env": env_step,
        "train": lambda: train(
            args.configs,
            args.state,
            args,
            [
                *schedule,
                "--load-from",
                str(BUNDLED),
                "--cfg-options",
                "model.backbone.pretrained=False",
                *loaders,
            ],
            log,
        ),
        "export": export,
        "train-r50": lambda: train(
            [R50_CONFIG],
            args.state,
            args,
            [
                "--epochs",
                str(args.r50_epochs),
                "--auto-scale-lr",
                "--cfg-options",
                "load_from=None",
                "model.backbone.init_cfg=None",
                f"train_dataloader.num_workers={args.workers}",
                f"val_dataloader.num_workers={args.workers}",
            ],
            log,
        )[R50_CONFIG.stem],
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
            for name, w in (("bundled", BUNDLED), *exported.items())
        },
    }
    build = args.state / "build.seconds"
    if build.is_file():
        results["build"] = {"mmcv_build_s": int(float(build.read_text()))}

    def bring_back() -> None:  # the exported weights go to OUT as soon as they exist: a call cut off still returns them
        for weights in exported.values():
            for src in (weights, weights.with_suffix(".json")):
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
