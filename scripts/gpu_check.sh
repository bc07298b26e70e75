#!/usr/bin/env bash
# The GPU half, run for real: mmcv with its CUDA ops built there, then training, evaluation and
# latency measured by bench/gpu.py. Written for the project's lent GPU machine (one H100/H200,
# 16 cores, Python 3.12 with a CUDA torch, nvcc; no mmcv/mmengine/mmdet, no internet), and for
# any such machine. docs/gpu.md has the figures and the exact calls.
#
#   scripts/gpu_check.sh prepare   here, with PyPI: cp312 wheels, mmcv's source and a photo subset
#                                  into .gpu/ (git-ignored, ~40 MB; carry it to the GPU machine)
#   scripts/gpu_check.sh           on the GPU machine, twice: the first call installs the wheels,
#                                  converts the photos and starts the mmcv build in the background
#                                  (setsid); the next calls wait for the build, then measure. Safe to
#                                  call again: every step that finished is skipped.
#   scripts/gpu_check.sh dry-run   here, on the CPU: the measuring phase with this .venv, the test
#                                  photos and tiny numbers (no build), to check the script itself.
#
# Settings (environment): OUT (what comes back; default $STATE/out), NAILSEG_GPU_STATE (default
# /tmp/nailseg-gpu; the dry run's: /tmp/nailseg-gpu-dry), NAILSEG_GPU_EPOCHS (8), NAILSEG_GPU_BATCH (16), NAILSEG_GPU_WAIT_S (540),
# NAILSEG_GPU_SKIP (none; "train-r50 predict evaluate" for a training-only run), and for prepare
# NAILSEG_GPU_PHOTO_OFFSET (0: every second training photo by name from the first; 1: the others).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
GPU=$REPO/.gpu
STATE=${NAILSEG_GPU_STATE:-/tmp/nailseg-gpu}
OUT=${OUT:-$STATE/out}

prepare() {  # here: everything the GPU machine cannot fetch
  local py=.venv/bin/python platforms=()
  for p in manylinux_2_28_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 any; do
    platforms+=(--platform "$p")
  done
  rm -rf "$GPU" && mkdir -p "$GPU/whl" "$GPU/src" "$GPU/nails-roboflow/images" "$GPU/nails-roboflow/labels"
  # What mmengine, mmdet and nailseg need that the machine's image lacks (KINDS.md lists what it has);
  # setuptools < 81 because mmcv's setup.py and mmengine import pkg_resources.
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$GPU/whl" mmengine==0.10.7 mmdet==3.3.0 pycocotools==2.0.11 setuptools==80.9.0 \
    shapely terminaltables addict yapf termcolor platformdirs
  "$py" -m pip download -q --no-deps --no-binary=:all: --no-build-isolation -d "$GPU/src" mmcv==2.1.0
  # Photos: our own split (data/roboflow, seed 0), so that a model trained there never saw the
  # validation photos we measure on here. 1,000 training photos and 150 validation photos.
  [[ -f data/roboflow/train.json ]] ||
    "$py" -m nailseg convert ../shared/data/nails-roboflow --out data/roboflow --valid-fraction 0.15 --seed 0
  "$py" - "$GPU" "${NAILSEG_GPU_PHOTO_OFFSET:-0}" <<'EOF'
import json, shutil, sys
from pathlib import Path
gpu, offset = Path(sys.argv[1]), int(sys.argv[2])  # offset: another 1,000 training photos (1 = the odd ones)
chosen = {}
for split, count, start in (("train", 1000, offset), ("valid", 150, 0)):
    coco = json.loads(Path(f"data/roboflow/{split}.json").read_text())
    root = Path(coco["info"]["dataset_root"])
    images = sorted(im["file_name"] for im in coco["images"])
    chosen[split] = images[start :: max(1, len(images) // count)][:count]
    for name in chosen[split]:
        shutil.copy2(root / name, gpu / "nails-roboflow" / name)
        label = Path("labels") / (Path(name).stem + ".txt")
        if (root / label).is_file():
            shutil.copy2(root / label, gpu / "nails-roboflow" / label)
(gpu / "valid.txt").write_text("\n".join(Path(n).name for n in chosen["valid"]) + "\n")
print(f"photos: {len(chosen['train'])} train, {len(chosen['valid'])} valid")
EOF
  cp ../shared/data/nails-roboflow/data.yaml "$GPU/nails-roboflow/" 2>/dev/null || true
  du -sh "$GPU"
}

split_by_list() {  # $1 python, $2 converted folder (all photos in train.json), $3 list of validation names
  "$1" - "$2" "$3" <<'EOF'
import json, sys
from pathlib import Path
out, names = Path(sys.argv[1]), set(Path(sys.argv[2]).read_text().split())
coco = json.loads((out / "train.json").read_text())
parts = {"train": lambda n: n not in names, "valid": lambda n: n in names}
for split, keep in parts.items():
    images = [im for im in coco["images"] if keep(Path(im["file_name"]).name)]
    ids = {im["id"] for im in images}
    part = {**coco, "images": images, "annotations": [a for a in coco["annotations"] if a["image_id"] in ids]}
    (out / f"{split}.json").write_text(json.dumps(part))
    print(f"{split}: {len(images)} photos")
EOF
}

measure() {  # $1 python; the rest goes to bench/gpu.py
  local py=$1
  shift
  "$py" bench/gpu.py --data "$STATE/data" --state "$STATE" --out "$OUT" "$@"
}

case "${1:-device}" in
  prepare)
    prepare
    ;;
  dry-run)
    STATE=${NAILSEG_GPU_STATE:-/tmp/nailseg-gpu-dry} OUT=${NAILSEG_GPU_DRY_OUT:-$STATE/out}
    rm -rf "$STATE" && mkdir -p "$STATE/data" "$OUT"
    .venv/bin/python -m nailseg convert tests/data/nails-roboflow --out "$STATE/data" --valid-fraction 0 >/dev/null
    ls tests/data/nails-roboflow/images | tail -n 2 >"$STATE/valid.txt"
    split_by_list .venv/bin/python "$STATE/data" "$STATE/valid.txt"
    measure .venv/bin/python --epochs 1 --r50-epochs 1 --batch-size 2 --workers 1 --photos 2
    ;;
  device)
    [[ -d "$GPU/whl" ]] || { echo "error: no .gpu/ here: run 'scripts/gpu_check.sh prepare' and carry .gpu" >&2; exit 2; }
    export PYTHONPATH=$STATE/mmcv:$STATE/site:$REPO PYTHONUNBUFFERED=1
    mkdir -p "$STATE" "$OUT"
    if [[ ! -f "$STATE/build.started" ]]; then  # phase 1
      nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$STATE/site" "$GPU"/whl/*.whl
      # The flags of the Dockerfile's CUDA image (scripts/mmcv-cuda.env), narrowed to this GPU's
      # architecture only: one target compiles in a fraction of the time of six.
      arch=$(python3 -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
      date +%s >"$STATE/build.started"
      setsid bash -c "set -a; source scripts/mmcv-cuda.env; TORCH_CUDA_ARCH_LIST=$arch; MAX_JOBS=$(nproc); set +a
        start=\$(date +%s)
        python3 -m pip install --no-index --no-deps --no-build-isolation --no-cache-dir --target '$STATE/mmcv' \
          '$GPU'/src/mmcv-2.1.0.tar.gz >'$STATE/build.log' 2>&1
        rc=\$?; echo \$(( \$(date +%s) - start )) >'$STATE/build.seconds'; echo \$rc >'$STATE/build.rc'" \
        </dev/null >/dev/null 2>&1 &
      rm -rf "$STATE/data" && mkdir -p "$STATE/data"
      python3 -m nailseg convert "$GPU/nails-roboflow" --out "$STATE/data" --valid-fraction 0 --workers 4 |
        tail -n 3
      split_by_list python3 "$STATE/data" "$GPU/valid.txt"
      echo "phase 1 done: mmcv is building for sm_$arch (log $STATE/build.log); call again to measure"
      exit 0
    fi
    waited=0  # phase 2
    while [[ ! -f "$STATE/build.rc" && $waited -lt ${NAILSEG_GPU_WAIT_S:-540} ]]; do
      sleep 10
      waited=$((waited + 10))
    done
    cp "$STATE/build.log" "$OUT/mmcv-build.log" 2>/dev/null || true
    if [[ ! -f "$STATE/build.rc" ]]; then
      echo "mmcv still building after ${waited} s more; call again" && tail -n 5 "$STATE/build.log" && exit 3
    fi
    if [[ $(cat "$STATE/build.rc") != 0 ]]; then
      echo "mmcv build failed (exit $(cat "$STATE/build.rc")); its log ends:" && tail -n 40 "$STATE/build.log" && exit 4
    fi
    echo "mmcv built in $(cat "$STATE/build.seconds") s"
    # NAILSEG_GPU_SKIP="train-r50 predict evaluate": a training-only run (word splitting intended).
    # shellcheck disable=SC2086
    measure python3 --epochs "${NAILSEG_GPU_EPOCHS:-8}" --batch-size "${NAILSEG_GPU_BATCH:-16}" \
      --skip ${NAILSEG_GPU_SKIP:-}
    ;;
  *)
    echo "usage: scripts/gpu_check.sh [prepare|dry-run]" >&2
    exit 2
    ;;
esac
