"""Training throughput, in images per second, with 1, 2... processes of ``nailseg train --nproc``.

Each run is a whole ``nailseg train --nproc N --batch-size B`` (validation off), from the converted
test photos unless ``--data`` names another ``nailseg convert`` output. mmengine's ``scalars.json``
gives every iteration's time (logger interval 1); the first ``--warmup`` iterations are dropped and
the throughput is ``N * B / median(iteration time)``: each process takes B photos per iteration.
Runs alternate between the process counts, ``--repeats`` times; medians are printed.

    nice -n 19 .venv/bin/python bench/train_speed.py                    # CPU: 1 and 2 processes
    .venv/bin/python bench/train_speed.py --nproc 1 --variant nail= \
        --variant "mmcv-roialign=model.roi_head.bbox_roi_extractor.type=SingleRoIExtractor;..."  # configs compared
    .venv/bin/python bench/train_speed.py --nproc 1 2 4 8 --batch-size 4  # a machine with 8 GPUs

Where there are GPUs, ``--nproc`` counts GPUs (NCCL, one process each); without, CPU processes on
gloo, each given ``cores / N`` threads, or ``--threads`` (``OMP_NUM_THREADS``) to compare at equal
threads per process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nailseg.jobs import parse_records, scalars_text

ROOT = Path(__file__).resolve().parent.parent
TEST_DATA = ROOT / "tests" / "data" / "nails-roboflow"


def run_once(data: Path, nproc: int, batch_size: int, iters: int, warmup: int, work: Path, env: dict,
             extra: tuple[str, ...] = ()) -> dict:  # fmt: skip
    """One training run; returns its images/s (steady state) and wall time (s, start to exit)."""
    options = [
        f"train_cfg.max_iters={iters}",
        "train_cfg.val_begin=1000000000",  # no validation: only training is timed
        "default_hooks.logger.interval=1",
        "default_hooks.checkpoint.interval=1000000000",
        *extra,
    ]
    argv = [sys.executable, "-m", "nailseg", "train", "--data", str(data), "--work-dir", str(work)]
    argv += ["--nproc", str(nproc), "--batch-size", str(batch_size), "--cfg-options", *options]
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env)
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"nailseg train --nproc {nproc} failed:\n{proc.stderr[-3000:]}")
    records = parse_records(scalars_text(work))
    times = [r["time"] for r in sorted(records, key=lambda r: r.get("iter", 0)) if "time" in r][warmup:]
    return dict(images_per_s=nproc * batch_size / statistics.median(times), wall_s=wall, iters=len(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="nailseg convert output (default: the test photos)")
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2], help="process counts to compare")
    parser.add_argument("--batch-size", type=int, default=2, help="photos per iteration and process")
    parser.add_argument("--iters", type=int, default=12, help="iterations per run")
    parser.add_argument("--warmup", type=int, default=3, help="first iterations left out of the timing")
    parser.add_argument("--repeats", type=int, default=3, help="runs per process count, alternating")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of every process")
    parser.add_argument(
        "--variant",
        action="append",
        default=None,
        metavar="NAME=K=V[;K=V...]",
        help="a named set of --cfg-options to compare (repeatable; runs alternate); default: the config as it is",
    )
    args = parser.parse_args()
    variants = dict(_variant(v) for v in args.variant or ["config="])
    env = {**os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})}

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from nailseg.datasets import convert_dataset, save_report

            data = Path(tmp) / "data"
            save_report(convert_dataset(TEST_DATA, valid_fraction=0), data)
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        where = f"{gpus} GPU(s): {torch.cuda.get_device_name(0)}" if gpus else f"CPU, {os.cpu_count()} cores"
        threads = f"{args.threads} thread(s)" if args.threads else "default threads"
        print(f"{where}; batch {args.batch_size} per process, {threads}, {args.iters} iterations", end="")
        print(f", the first {args.warmup} left out")
        results: dict[tuple[str, int], list[dict]] = {(v, n): [] for v in variants for n in args.nproc}
        for repeat in range(args.repeats):
            for (name, n), runs in results.items():
                work = Path(tmp) / f"{name}_w{n}_{repeat}"
                runs.append(run_once(data, n, args.batch_size, args.iters, args.warmup, work, env, variants[name]))
        base = None
        for (name, n), runs in results.items():
            speed = statistics.median(r["images_per_s"] for r in runs)
            wall = statistics.median(r["wall_s"] for r in runs)
            base = base or speed
            label = f"{name}, " if len(variants) > 1 else ""
            print(f"{label}nproc {n}: {speed:6.2f} images/s (x{speed / base:.2f}) | whole run {wall:5.1f} s")


def _variant(text: str) -> tuple[str, tuple[str, ...]]:
    """``NAME=K=V;K=V`` -> (NAME, (K=V, K=V))."""
    name, _, options = text.partition("=")
    return name, tuple(o for o in options.split(";") if o)


if __name__ == "__main__":
    main()
