#!/usr/bin/env bash
# The GPU half, run for real: training (and evaluation and latency) measured by bench/gpu.py on the
# project's lent GPU machine (one H100/H200, 16 cores, Python 3.12 with a CUDA torch and torchvision,
# nvcc; no mmcv/mmengine/mmdet, no internet), and on any such machine. docs/gpu.md has the figures
# and the exact calls.
#
#   scripts/gpu_check.sh prepare   here, with PyPI: cp312 wheels, mmcv's source, our split's COCO
#                                  files and photos into .gpu/ and .gpu-b/ (git-ignored; each fits
#                                  the device tool's 64 MiB with the repository: carry one per call)
#   scripts/gpu_check.sh           on the GPU machine, at least twice: the first call (carry .gpu)
#                                  installs the wheels and mmcv (below) and unpacks the first photos;
#                                  the next (carry .gpu-b) the other photos, then starts bench/gpu.py
#                                  in the background (setsid) and follows it; later calls follow it
#                                  to the end. Every call copies what is ready to $OUT.
#   scripts/gpu_check.sh dry-run   here, on the CPU: the measuring phase with this .venv, the test
#                                  photos and tiny numbers, to check the script itself.
#
# mmcv: NAILSEG_GPU_MMCV=torchvision (default) installs the pure-Python mmcv-lite with
# scripts/mmcv_ext_torchvision.py as its mmcv._ext (RoIAlign and NMS from torchvision's CUDA
# kernels), checked by bench/ops_check.py against plain-PyTorch references first; where that check
# fails, or with NAILSEG_GPU_MMCV=build, mmcv's CUDA ops are built (232 s on the H200).
#
# Settings (environment): OUT (what comes back; default $STATE/out), NAILSEG_GPU_STATE (default
# /tmp/nailseg-gpu; the dry run's: /tmp/nailseg-gpu-dry), NAILSEG_GPU_EPOCHS (8), NAILSEG_GPU_BATCH
# (16), NAILSEG_GPU_MINUTES (unset: the epochs' schedule; else each run trains this long),
# NAILSEG_GPU_CONFIGS (the default config; several train at once, side by side on the GPU),
# NAILSEG_GPU_LR (unset: the config's, scaled by the batch), NAILSEG_GPU_WAIT_S (540: how long a call
# waits and follows), NAILSEG_GPU_SKIP (none; "train-r50 predict evaluate" for a training-only run),
# NAILSEG_GPU_MMCV (torchvision | build), and for prepare NAILSEG_GPU_TRAIN_PHOTOS (0: all of our
# training split).
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
  rm -rf "$GPU" "$GPU-b" && mkdir -p "$GPU/whl" "$GPU/src" "$GPU/photos" "$GPU-b/photos"
  # What mmengine, mmdet and nailseg need that the machine's image lacks (KINDS.md lists what it has);
  # setuptools < 81 because mmcv's setup.py and mmengine import pkg_resources.
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$GPU/whl" mmengine==0.10.7 mmdet==3.3.0 pycocotools==2.0.11 setuptools==80.9.0 \
    shapely terminaltables addict yapf termcolor platformdirs
  "$py" -m pip download -q --no-deps --no-binary=:all: --no-build-isolation -d "$GPU/src" mmcv==2.1.0
  # mmcv-lite: mmcv's Python alone (seconds to build, no CUDA), for NAILSEG_GPU_MMCV=torchvision.
  MMCV_WITH_OPS=0 "$py" -m pip wheel -q --no-deps --no-build-isolation -w "$GPU/mmcv-lite" \
    "$GPU"/src/mmcv-2.1.0.tar.gz
  # Our own split (data/roboflow, seed 0): the validation photos measured here are never trained on there.
  [[ -f data/roboflow/train.json ]] ||
    "$py" -m nailseg convert ../shared/data/nails-roboflow --out data/roboflow --valid-fraction 0.15 --seed 0
  "$py" - "$GPU" "${NAILSEG_GPU_TRAIN_PHOTOS:-0}" <<'PY'
import gzip, json, shutil, sys
from pathlib import Path
gpu, wanted = Path(sys.argv[1]), int(sys.argv[2])  # wanted: training photos (0: all)
for split, count in (("train", wanted), ("valid", 150)):
    coco = json.loads(Path(f"data/roboflow/{split}.json").read_text())
    root = Path(coco["info"]["dataset_root"])
    images = sorted(coco["images"], key=lambda im: im["file_name"])
    if count and count < len(images):
        images = images[:: len(images) // count][:count]
    ids = {im["id"] for im in images}
    coco = {**coco, "images": images, "annotations": [a for a in coco["annotations"] if a["image_id"] in ids]}
    coco["info"] = {k: v for k, v in coco["info"].items() if k != "dataset_root"}  # set there
    (gpu / f"{split}.json.gz").write_bytes(gzip.compress(json.dumps(coco).encode()))
    for i, im in enumerate(images):
        # Training photos in two halves, one per call: a call carries 64 MiB at most.
        half = gpu.with_name(gpu.name + "-b") if split == "train" and i % 2 else gpu
        (half / "photos" / im["file_name"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / im["file_name"], half / "photos" / im["file_name"])
    print(f"{split}: {len(images)} photos, {len(coco['annotations'])} nails")
PY
  du -sh "$GPU" "$GPU-b"
}

install_mmcv() {  # on the GPU machine: mmcv-lite with torchvision's ops, checked; else mmcv built (background)
  if [[ ${NAILSEG_GPU_MMCV:-torchvision} == torchvision ]]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$STATE/mmcv" \
      "$GPU"/mmcv-lite/*.whl
    cp scripts/mmcv_ext_torchvision.py "$STATE/mmcv/mmcv/_ext.py"
    if python3 bench/ops_check.py --device cuda | tee "$STATE/ops_check.json"; then
      date +%s >"$STATE/build.started" && echo 0 >"$STATE/build.seconds" && echo 0 >"$STATE/build.rc"
      echo "mmcv-lite with torchvision's RoIAlign and NMS: checked"
      return
    fi
    echo "torchvision's ops differ from the references: building mmcv instead" >&2
    rm -rf "$STATE/mmcv"
  fi
  # The flags of the Dockerfile's CUDA image (scripts/mmcv-cuda.env), narrowed to this GPU's
  # architecture only: one target compiles in a fraction of the time of six.
  local arch
  arch=$(python3 -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
  date +%s >"$STATE/build.started"
  setsid bash -c "set -a; source scripts/mmcv-cuda.env; TORCH_CUDA_ARCH_LIST=$arch; MAX_JOBS=$(nproc); set +a
    start=\$(date +%s)
    python3 -m pip install --no-index --no-deps --no-build-isolation --no-cache-dir --target '$STATE/mmcv' \
      '$GPU'/src/mmcv-2.1.0.tar.gz >'$STATE/build.log' 2>&1
    rc=\$?; echo \$(( \$(date +%s) - start )) >'$STATE/build.seconds'; echo \$rc >'$STATE/build.rc'" \
    </dev/null >/dev/null 2>&1 &
  echo "mmcv is building for sm_$arch (log $STATE/build.log)"
}

unpack() {  # $1: a carried folder: its photos, and its COCO files once, their dataset_root set here
  [[ -d "$1/photos" ]] && cp -r "$1/photos/." "$STATE/photos/"
  for split in train valid; do
    [[ -f "$STATE/data/$split.json" || ! -f "$1/$split.json.gz" ]] && continue
    python3 - "$1/$split.json.gz" "$STATE/photos" "$STATE/data/$split.json" <<'PY'
import gzip, json, sys
coco = json.loads(gzip.open(sys.argv[1]).read())
coco["info"]["dataset_root"] = sys.argv[2]
open(sys.argv[3], "w").write(json.dumps(coco))
PY
  done
  return 0
}

missing_photos() {  # how many photos the COCO files name that are not here yet
  python3 - "$STATE/photos" "$STATE/data" <<'PY'
import json, os, sys
photos, data = sys.argv[1:]
names = [im["file_name"] for s in ("train", "valid") for im in json.load(open(f"{data}/{s}.json"))["images"]]
print(sum(not os.path.isfile(os.path.join(photos, n)) for n in names))
PY
}

split_by_list() {  # $1 python, $2 converted folder (all photos in train.json), $3 list of validation names
  "$1" - "$2" "$3" <<'PY'
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
PY
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
    .venv/bin/python bench/gpu.py --data "$STATE/data" --state "$STATE" --out "$OUT" \
      --epochs 1 --r50-epochs 1 --batch-size 2 --workers 1 --photos 2
    ;;
  device)
    if [[ ! -f "$STATE/build.started" && ! -d "$GPU/whl" ]]; then
      echo "error: no .gpu/ here: run 'scripts/gpu_check.sh prepare' and carry .gpu" >&2
      exit 2
    fi
    export PYTHONPATH=$STATE/mmcv:$STATE/site:$REPO PYTHONUNBUFFERED=1
    mkdir -p "$STATE/photos" "$STATE/data" "$STATE/out" "$OUT"
    if [[ ! -f "$STATE/build.started" ]]; then  # phase 1
      nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$STATE/site" "$GPU"/whl/*.whl
      install_mmcv
    fi
    unpack "$GPU"
    unpack "$GPU-b"
    missing=$(missing_photos)
    if [[ $missing != 0 ]]; then
      echo "$missing photos still to come: call again at once with carry=[\".gpu-b\"]"
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
    if [[ ! -f "$STATE/measure.pid" ]]; then  # bench/gpu.py outlives this call: the next calls follow it
      # Word splitting intended: NAILSEG_GPU_SKIP="train-r50 predict evaluate", NAILSEG_GPU_CONFIGS="A B".
      # shellcheck disable=SC2086
      setsid python3 bench/gpu.py --data "$STATE/data" --state "$STATE" --out "$STATE/out" \
        --epochs "${NAILSEG_GPU_EPOCHS:-8}" --batch-size "${NAILSEG_GPU_BATCH:-16}" \
        ${NAILSEG_GPU_MINUTES:+--minutes "$NAILSEG_GPU_MINUTES"} ${NAILSEG_GPU_LR:+--lr "$NAILSEG_GPU_LR"} \
        ${NAILSEG_GPU_CONFIGS:+--configs $NAILSEG_GPU_CONFIGS} --skip ${NAILSEG_GPU_SKIP:-} \
        </dev/null >"$STATE/measure.log" 2>&1 &
      echo $! >"$STATE/measure.pid"
      echo "bench/gpu.py started (log $STATE/measure.log)"
    fi
    waited=0
    while kill -0 "$(cat "$STATE/measure.pid")" 2>/dev/null && [[ $waited -lt ${NAILSEG_GPU_WAIT_S:-540} ]]; do
      sleep 5
      waited=$((waited + 5))
      if ((waited % 60 == 0)); then tail -q -n 1 "$STATE"/work/*.log 2>/dev/null | cut -c1-200 || true; fi
    done
    # At most 8 files come back: the figures and the weights (gpu-commands.log stays in $STATE/out).
    cp "$STATE"/out/*.safetensors "$STATE"/out/*.json "$STATE"/out/gpu.md "$OUT"/ 2>/dev/null || true
    tail -n 25 "$STATE/measure.log"
    if kill -0 "$(cat "$STATE/measure.pid")" 2>/dev/null; then
      echo "bench/gpu.py still running: call again to follow it (what is ready is in \$OUT)"
    fi
    ;;
  *)
    echo "usage: scripts/gpu_check.sh [prepare|dry-run]" >&2
    exit 2
    ;;
esac
