#!/usr/bin/env bash
# Create .venv/ and install NailSeg in the order that works; a second run takes seconds.
#   scripts/setup.sh          runtime packages (the app, the CLI)
#   scripts/setup.sh --dev    plus test tools and, as root, Debian's chromium for browser tests
#   scripts/setup.sh --deps-only   the packages NailSeg needs, not NailSeg (the Dockerfile's cached
#                             layer: it reads only requirements*.txt, pyproject.toml and this file)
# The Dockerfile picks torch's build and mmcv's CUDA ops with two variables (unset: as here):
#   NAILSEG_TORCH_INDEX  an extra index for torch, e.g. https://download.pytorch.org/whl/cu126
#   NAILSEG_MMCV_ENV     a file of mmcv build variables to source, e.g. scripts/mmcv-cuda.env
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0 deps_only=0
case "${1:-}" in
  --dev) dev=1 ;;
  --deps-only) deps_only=1 ;;
esac
py=${PYTHON:-python3.11}
venv=.venv
stamp="$venv/.nailseg-setup-$(cat requirements.txt requirements-dev.txt pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)-$dev"

if [[ ! -f "$stamp" ]]; then
  [[ -x "$venv/bin/python" ]] || "$py" -m venv "$venv"
  pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
  pin() { grep -E "^$1==" requirements.txt; }
  # 1. torch (the CPU wheel on this machine's disk), numpy and a setuptools that still has
  #    pkg_resources: mmcv's setup.py and mmengine import it.
  torch_index=()
  if [[ -n "${NAILSEG_TORCH_INDEX:-}" ]]; then torch_index=(--extra-index-url "$NAILSEG_TORCH_INDEX"); fi
  "${pip[@]}" install "${torch_index[@]}" "$(pin torch)" "$(pin numpy)" "$(pin setuptools)" wheel
  # 2. mmcv 2.1.0 exists only as source: build it against that torch (pip caches the wheel, so a
  #    fresh venv later installs it in seconds).
  if ! "$venv/bin/python" -c "import mmcv, mmcv.ops" 2>/dev/null; then
    echo "installing mmcv 2.1.0 (built from source the first time on a machine: about 10 minutes)..." >&2
    if [[ -n "${NAILSEG_MMCV_ENV:-}" ]]; then
      # pip's wheel cache may hold a CPU-only mmcv of the same version: build this one afresh.
      (set -a && source "$NAILSEG_MMCV_ENV" && set +a &&
        MAX_JOBS=${MAX_JOBS:-$(nproc)} "${pip[@]}" install --no-cache-dir --no-build-isolation "$(pin mmcv)")
    else
      MAX_JOBS=${MAX_JOBS:-$(nproc)} "${pip[@]}" install --no-build-isolation "$(pin mmcv)"
    fi
  fi
  # 3. everything else, pinned; then nailseg itself (editable, no dependency resolution).
  "${pip[@]}" install -r requirements.txt
  if [[ $dev == 1 ]]; then "${pip[@]}" install -r requirements-dev.txt; fi
  if [[ $deps_only == 1 ]]; then exit 0; fi  # no stamp: the next run installs NailSeg itself
  "${pip[@]}" install --no-deps --no-build-isolation -e .
  rm -f "$venv"/.nailseg-setup-*
  touch "$stamp"
fi

if [[ $dev == 1 && ! -x /usr/bin/chromium ]]; then
  if [[ $(id -u) == 0 ]]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "note: browser tests need Debian's chromium (sudo apt-get install chromium chromium-driver)" >&2
  fi
fi
