"""Whole-process conversion time: ``python -m nailseg convert`` against the seed's algorithm.

Both run as fresh processes on the same semantic dataset (default ``../shared/data/nails-semantic``),
alternating seed/ours ``--repeats`` times so that a change in machine load hits both alike; the
medians and their ratio are printed. The acceptance target is ratio <= 0.5.

Usage::

    nice -n 19 .venv/bin/python bench/convert_speed.py [ROOT] [--repeats 3] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DEFAULT_ROOT = REPO.parent / "shared" / "data" / "nails-semantic"


def timed_run(command: list[str]) -> float:
    """Run ``command`` from the repo root; wall seconds. Raises CalledProcessError if it fails."""
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def commands(root: Path, out: Path, workers: int | None) -> dict[str, list[str]]:
    """The two command lines, each writing into its own folder under ``out``."""
    ours = [sys.executable, "-m", "nailseg", "convert", str(root), "--out", str(out / "ours")]
    if workers:
        ours += ["--workers", str(workers)]
    seed = [sys.executable, str(BENCH / "seed_convert.py"), str(root), "--out", str(out / "seed")]
    return {"seed": seed, "ours": ours}


def main(argv: list[str] | None = None) -> int:
    """Print per-run times, both medians and ours/seed; exit 1 when the ratio misses 0.5."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, nargs="?", default=DEFAULT_ROOT, help="semantic dataset folder")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, alternating")
    parser.add_argument("--workers", type=int, default=None, help="pass --workers to ours (default: its own)")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"{args.root} not found")

    times: dict[str, list[float]] = {"seed": [], "ours": []}
    with tempfile.TemporaryDirectory(prefix="nailseg-bench-") as tmp:
        cmds = commands(args.root, Path(tmp), args.workers)
        timed_run(cmds["ours"][:3] + ["--help"])  # warm the file cache for the imports
        for name in ("seed", "ours"):  # and for the dataset, once each, untimed
            timed_run(cmds[name])
        for i in range(args.repeats):
            for name in ("seed", "ours") if i % 2 == 0 else ("ours", "seed"):
                times[name].append(timed_run(cmds[name]))
                print(f"run {i + 1} {name}: {times[name][-1]:.2f} s", flush=True)
        nails = {
            "ours": sum(
                len(json.loads((Path(tmp) / "ours" / f).read_text())["annotations"])
                for f in ("train.json", "valid.json")
            ),
            "seed": sum(
                len(json.loads((Path(tmp) / "seed" / f).read_text())["annotations"])
                for f in ("train.json", "valid.json")
            ),
        }
    seed, ours = statistics.median(times["seed"]), statistics.median(times["ours"])
    print(f"dataset: {args.root}")
    print(f"seed algorithm: median {seed:.2f} s ({nails['seed']} nails)")
    print(f"nailseg convert: median {ours:.2f} s ({nails['ours']} nails)")
    print(f"ratio ours/seed: {ours / seed:.2f} (target <= 0.50)")
    return 0 if ours / seed <= 0.5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
