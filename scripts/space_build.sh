#!/usr/bin/env bash
# Build the Space's image from the Dockerfile as it is, run it the way a Hugging Face Space does and
# check it, on a machine with no Docker engine and no image registry (docs/spaces.md).
#   scripts/space_build.sh                  build (cached layers reused), run, check; as root
#   scripts/space_build.sh --app-change     then time a rebuild with app.py changed, as a Space owner's
#                                           push does (in an overlay of the checkout: the checkout and
#                                           its app.py stay as they are)
#   scripts/space_build.sh --reuse-mmcv-wheel   hand the build this machine's pip-cached mmcv wheel
#                                           instead of compiling it (not what a Space does: for
#                                           quick runs of the checks; the build line says so)
#   scripts/space_build.sh --clean          remove the images, the container storage and the logs
# Tools: buildah (Debian 12: 1.28) and, once, debootstrap; `apt-get install buildah debootstrap`.
# Settings from the environment:
#   NAILSEG_SPACE_WORK   where the container storage, stand-in base, logs and /data live
#                        (default /var/tmp/nailseg-space: outside the checkout, gigabytes)
#   NAILSEG_SPACE_NICE   niceness of the build (default 10: the machine may be shared)
#   NAILSEG_SPACE_MIRROR Debian mirror for the stand-in base (default http://deb.debian.org/debian)
#   NAILSEG_SPACE_PIP_RETRIES  pip's retries per request in the build (default 1: the torch index
#                        the Dockerfile names is not reachable here, and each retry waits)
#   PIP_FIND_LINKS, PIP_CERT, PIP_DEFAULT_TIMEOUT   this machine's pip settings, handed to the build
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${NAILSEG_SPACE_WORK:-/var/tmp/nailseg-space}
nice_level=${NAILSEG_SPACE_NICE:-10}
mirror=${NAILSEG_SPACE_MIRROR:-http://deb.debian.org/debian}
tag=localhost/nailseg-space:cpu
stand_in_label=org.nailseg.stand-in
# What a Space sets in the container (Hugging Face's Spaces docs, "Helper environment variables").
space_env=(SPACE_ID=nailseg-local/NailSeg SPACE_AUTHOR_NAME=nailseg-local SPACE_REPO_NAME=NailSeg
  SPACE_HOST=nailseg-local-nailseg.hf.space SYSTEM=spaces)

app_change=0 reuse_mmcv=0
for arg in "$@"; do
  case $arg in
    --app-change) app_change=1 ;;
    --reuse-mmcv-wheel) reuse_mmcv=1 ;;
    --clean) clean=1 ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
  esac
done

results=() notes=() failed=0
result() { results+=("$(printf '%-4s  %s' "$1" "$2")"); echo "$1  $2" >&2; [[ $1 == PASS ]] || failed=1; }
note() { notes+=("$*"); echo "note: $*" >&2; }
die() { echo "error: $*" >&2; exit 2; }

# --- the container storage -------------------------------------------------------------------------

# The kernel's overlayfs keeps a layer as the files that changed; vfs (the fallback) copies the whole
# root for every layer, tens of GB for this Dockerfile.
storage_driver() {
  local t
  t=$(mktemp -d "$work/overlay-probe.XXXXXX")
  mkdir "$t"/{lower,upper,work,merged}
  if mount -t overlay overlay -o "lowerdir=$t/lower,upperdir=$t/upper,workdir=$t/work" "$t/merged" 2>/dev/null; then
    umount "$t/merged"; rm -rf "$t"; echo overlay
  else
    rm -rf "$t"; echo vfs
  fi
}

bah() { buildah --root "$work/storage" --runroot "$work/run" --storage-driver "$driver" "$@"; }

clean_all() {
  [[ -d $work ]] || { echo "nothing to clean: no $work"; return; }
  driver=$(cat "$work/driver" 2>/dev/null || echo vfs)
  bah rm --all >/dev/null 2>&1 || true
  bah rmi --all --force >/dev/null 2>&1 || true
  # Storage may hold mounts still (an interrupted run): unmount before removing the folder.
  findmnt -rno TARGET | grep -F "$work/" | sort -r | while read -r m; do umount -l "$m" || true; done
  rm -rf "$work"
  echo "removed $work"
}

# --- the stand-in for the base image ---------------------------------------------------------------

# The base image the Dockerfile's CPU stage names, read from the Dockerfile itself.
base_image() {
  python3 "$repo/scripts/dockerfile.py" steps --arg NAILSEG_HARDWARE=cpu | awk -F'\t' '$1 == "FROM" { print $2; exit }'
}

# No registry is reachable here: python:3.11-slim is stood in for by a Debian 12 root (what that image
# is: Debian with Python 3.11, venv and headers), committed under the base image's own name so that
# the Dockerfile's FROM stands unchanged. Made once, then reused.
make_base() {
  local name=$1 ctr mnt root=$work/base-root start=$SECONDS
  if bah inspect --type image --format "{{index .OCIv1.Config.Labels \"$stand_in_label\"}}" "$name" 2>/dev/null | grep -q .; then
    note "base image $name: the stand-in made earlier ($(bah inspect --type image --format "{{index .OCIv1.Config.Labels \"$stand_in_label\"}}" "$name"))"
    return
  fi
  if bah inspect --type image "$name" >/dev/null 2>&1; then
    note "base image $name: in the storage already (not a stand-in of this script)"
    return
  fi
  command -v debootstrap >/dev/null || die "debootstrap is needed once, for the stand-in base image (apt-get install debootstrap)"
  echo "making the stand-in for $name: debootstrap bookworm into $root..." >&2
  rm -rf "$root"
  # tzdata, netbase and ca-certificates are in python:3.11-slim too.
  nice -n "$nice_level" debootstrap --variant=minbase --include=ca-certificates,netbase,tzdata \
    bookworm "$root" "$mirror" >"$work/logs/debootstrap.log" 2>&1 ||
    { tail -n 20 "$work/logs/debootstrap.log" >&2; die "debootstrap failed (log: $work/logs/debootstrap.log)"; }
  # The official Debian images' sources: the release, its updates and the security archive.
  rm -f "$root/etc/apt/sources.list"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
  ctr=$(bah from --pull-never scratch)
  mnt=$(bah mount "$ctr")
  cp -a "$root/." "$mnt/"
  bah umount "$ctr" >/dev/null
  # python:3.11-slim's Python has venv (ensurepip) and the headers. Installed by apt, not by
  # debootstrap's --include, which does not resolve python3.11-venv's dependencies.
  bah run --isolation chroot --env DEBIAN_FRONTEND=noninteractive "$ctr" -- sh -c \
    'apt-get update -qq && apt-get install -y -qq --no-install-recommends python3.11 python3.11-venv python3.11-dev \
     && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb' >>"$work/logs/debootstrap.log" 2>&1 ||
    { tail -n 20 "$work/logs/debootstrap.log" >&2; die "installing Python 3.11 into the stand-in failed"; }
  bah config --os linux --arch amd64 --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3.11 \
    --label "$stand_in_label=debootstrap bookworm minbase + python3.11, $(date -u +%F)" "$ctr"
  # Committed under the Docker Hub name that the FROM's short name resolves to.
  bah commit --rm --quiet "$ctr" "docker.io/library/$name" >/dev/null
  rm -rf "$root"
  ctr=$(bah from --pull-never "$name")
  note "base image $name: stand-in made in $((SECONDS - start)) s (Debian 12 minbase, $(bah run --isolation chroot "$ctr" -- python3.11 -V 2>&1), not pulled)"
  bah rm "$ctr" >/dev/null
}

# --- the build --------------------------------------------------------------------------------------

# This machine's pip settings, for the build's RUN steps only (mounts, never in a layer): the
# certificate bundle under another path (over the image's own it would break Debian's
# ca-certificates), a pip.conf naming it, and the find-links folders (torch's CPU wheel lies there:
# download.pytorch.org, the Dockerfile's torch index, is not reachable here).
build_mounts() {
  local cert=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt} links=() dir i=0 conf=$work/pip.conf
  mounts=()
  {
    echo "[global]"
    if [[ -f $cert ]]; then echo "cert = /run/host-ca.crt"; mounts+=(--volume "$cert:/run/host-ca.crt:ro"); fi
    [[ -n ${PIP_DEFAULT_TIMEOUT:-} ]] && echo "timeout = $PIP_DEFAULT_TIMEOUT"
    # The Dockerfile's torch index is not reachable from here: one retry, not five, per package.
    echo "retries = ${NAILSEG_SPACE_PIP_RETRIES:-1}"
    for dir in ${PIP_FIND_LINKS:-}; do
      [[ -d $dir ]] || continue
      links+=("/run/host-links-$i"); mounts+=(--volume "$dir:/run/host-links-$i:ro"); i=$((i + 1))
    done
    if ((reuse_mmcv)); then
      links+=(/run/host-mmcv); mounts+=(--volume "$work/mmcv-wheel:/run/host-mmcv:ro")
    fi
    ((${#links[@]} == 0)) || echo "find-links = ${links[*]}"
  } >"$conf"
  mounts+=(--volume "$conf:/etc/pip.conf:ro")
}

# mmcv's wheel from this machine's pip cache, built there against the same torch (--reuse-mmcv-wheel).
stage_mmcv_wheel() {
  local pin wheel
  pin=$(grep -E '^mmcv==' "$repo/requirements.txt" | cut -d= -f3)
  wheel=$(find "${PIP_CACHE_DIR:-$HOME/.cache/pip}" -name "mmcv-$pin-cp311-*.whl" 2>/dev/null | head -n 1)
  [[ -n $wheel ]] || die "--reuse-mmcv-wheel: no mmcv-$pin cp311 wheel in pip's cache here"
  rm -rf "$work/mmcv-wheel"; install -d "$work/mmcv-wheel"; cp "$wheel" "$work/mmcv-wheel/"
  note "mmcv: this machine's cached wheel ($(basename "$wheel")), not compiled: the build time is not a Space's"
}

# Each line of the build's output with the time it came, so that steps and stages can be timed.
timestamped() {
  local line
  while IFS= read -r line; do
    printf '%s\t%s\n' "$EPOCHREALTIME" "$line"
    if [[ $line == *"STEP "[0-9]* ]]; then echo "  ${line:0:110}" >&2; fi
  done
}

# build TAG CONTEXT LOG: buildah bud of the repository's Dockerfile, CPU variant, as it is.
build() {
  local tag=$1 context=$2 log=$3 rc=0
  build_start=$EPOCHREALTIME
  nice -n "$nice_level" buildah --root "$work/storage" --runroot "$work/run" --storage-driver "$driver" \
    bud --isolation chroot --layers --pull-never --build-arg NAILSEG_HARDWARE=cpu \
    "${mounts[@]}" --file "$context/Dockerfile" --tag "$tag" "$context" 2>&1 | timestamped >"$log" || rc=$?
  build_s=$(awk -v a="$build_start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
  return "$rc"
}

# Seconds per step and per stage from a timestamped build log: "stage<TAB>seconds<TAB>cached<TAB>step".
step_times() {
  awk -F'\t' -v OFS='\t' '
    function close_step(t) { if (step != "") print stage, sprintf("%.1f", t - start), (cached ? "cached" : "built"), step; step = "" }
    { t = $1; line = $2 }
    match(line, /STEP [0-9]+\/[0-9]+: /) {
      close_step(t)
      key = substr(line, 1, RSTART - 1); step = substr(line, RSTART + RLENGTH)
      if (step ~ /^FROM /) { name = step; if (!sub(/.* [Aa][Ss] /, "", name)) name = key; names[key] = name }
      stage = names[key]; start = t; cached = 0; next
    }
    line ~ /^--> Using cache/ { cached = 1 }
    END { close_step(t) }' "$1"
}

report_build() {
  local log=$1 what=$2 stages
  echo "$what: per step (s, seconds over 1):" >&2
  step_times "$log" | awk -F'\t' '$2 >= 1 { printf "  %-5s %7s  %-6s %s\n", $1, $2, $3, substr($4, 1, 90) }' >&2
  stages=$(step_times "$log" | awk -F'\t' '{ s[$1] += $2; if (!($1 in o)) { o[$1] = ++n; k[n] = $1 } }
    END { for (i = 1; i <= n; i++) printf "%s%s %.0f s", (i > 1 ? ", " : ""), k[i], s[k[i]] }')
  echo "$stages"
}

# --- running the image as a Space does ------------------------------------------------------------

# The image's own entrypoint and command (what a Space starts), as NUL-separated words.
image_command() {
  # buildah 1.28's --format has no json function: the whole inspection, read here.
  bah inspect --type image "$tag" | python3 -c 'import json, sys
c = json.load(sys.stdin)["OCIv1"]["config"]
sys.stdout.write("\0".join((c.get("Entrypoint") or []) + (c.get("Cmd") or [])))'
}

front_matter_port() { sed -n '1,/^---$/{/^---$/!p}' "$repo/README.md" | sed -n 's/^app_port: *\([0-9]*\).*/\1/p'; }

# Everything that runs in the container shares these: uid 1000 (or root for the checks), /data
# writable, the Space's variables, and a network namespace of its own (this machine's port 7860 may
# be someone else's). run_argv USER fills `argv` with the command line, less the command to run.
run_argv() {
  local kv
  argv=(nsenter --net="/run/netns/$netns" buildah --root "$work/storage" --runroot "$work/run" --storage-driver "$driver"
    run --isolation chroot --user "$1" --volume "$work/data:/data:rw")
  for kv in "${space_env[@]}"; do argv+=(--env "$kv"); done
  argv+=("$ctr" --)
}
run_in() { local argv; run_argv "$1"; shift; "${argv[@]}" "$@"; }

stop_app() {
  [[ -n ${app_pid:-} ]] || return 0
  local i pid
  kill -TERM -- "-$app_pid" 2>/dev/null || true
  for i in $(seq 20); do kill -0 "$app_pid" 2>/dev/null || break; sleep 1; done
  # What is left of the session setsid gave it (the app's own children included): by process id.
  for pid in $(ps -o pid= -s "$app_pid" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  app_pid=""
}

# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  stop_app
  if [[ -n ${ctr:-} ]]; then bah rm "$ctr" >/dev/null 2>&1 || true; fi
  if [[ -n ${netns:-} ]]; then ip netns del "$netns" 2>/dev/null || true; fi
  if [[ -n ${overlay_dir:-} ]]; then umount "$overlay_dir/merged" 2>/dev/null || true; rm -rf "$overlay_dir"; fi
  return 0
}

# The visitor's side, over HTTP as a browser or gradio_client does (stdlib only, so the host needs
# no Gradio): page, /segment on an example photo, owner actions. Prints "PASS|FAIL<TAB>what" lines.
read -r -d '' probe <<'PY' || true
import json, os, sys, time, urllib.error, urllib.request, uuid

mode, base = sys.argv[1], sys.argv[2]


def request(path, body=None, headers=None, timeout=60):
    return urllib.request.urlopen(urllib.request.Request(base + path, data=body, headers=headers or {}), timeout=timeout)


def call(api, data, timeout=600):
    """Gradio's documented two-step call: POST the inputs, then read the event stream."""
    body = json.dumps({"data": data}).encode()
    with request(f"gradio_api/call/{api}", body, {"Content-Type": "application/json"}) as answer:
        event_id = json.load(answer)["event_id"]
    event = None
    with request(f"gradio_api/call/{api}/{event_id}", timeout=timeout) as stream:
        for raw in stream:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: ") and event in ("complete", "error"):
                return event, json.loads(line[len("data: "):])
    return event, None


def upload(path):
    boundary = uuid.uuid4().hex
    with open(path, "rb") as f:
        data = f.read()
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{os.path.basename(path)}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n").encode()
    body = head + data + f"\r\n--{boundary}--\r\n".encode()
    with request("gradio_api/upload", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}) as answer:
        return json.load(answer)[0]


if mode == "page":  # wait for the page while the app's process lives
    app_pid, limit = int(sys.argv[3]), float(sys.argv[4])
    start, last = time.monotonic(), "no answer"
    while time.monotonic() - start < limit:
        try:
            os.kill(app_pid, 0)
        except ProcessLookupError:
            print(f"FAIL\tpage: the app exited after {time.monotonic() - start:.0f} s (its log is above)")
            sys.exit()
        try:
            with request("", timeout=10) as answer:
                page = answer.read().decode(errors="replace")
                if answer.status == 200 and "NailSeg" in page:
                    print(f"PASS\tpage: HTTP 200 (NailSeg), {time.monotonic() - start:.0f} s after the start")
                    sys.exit()
                last = f"HTTP {answer.status}"
        except urllib.error.HTTPError as err:
            last = f"HTTP {err.code}"
        except OSError as err:
            last = str(err)
        time.sleep(1)
    print(f"FAIL\tpage: no NailSeg page within {limit:.0f} s (last: {last})")
elif mode == "segment":
    photo = sys.argv[3]
    start = time.monotonic()
    event, out = call("segment", [{"path": upload(photo), "orig_name": os.path.basename(photo),
                                   "meta": {"_type": "gradio.FileData"}}, 0.5])
    seconds = time.monotonic() - start
    if event == "complete" and out[2]:
        said = [o for o in out if isinstance(o, str) and "found" in o]  # the status line
        status = " ".join(said[0].split()) if said else "?"
        print(f"PASS\t/segment: {len(out[2])} nails on {os.path.relpath(photo, sys.argv[4])}, first call {seconds:.1f} s"
              f' (upload included; "{status}")')
    else:
        print(f"FAIL\t/segment: {event} after {seconds:.1f} s: {str(out)[:300]}")
elif mode == "owner":  # owner actions an anonymous visitor asks for: each must be refused
    actions = [("switch_weights", [sys.argv[3]]), ("train_stop", []), ("train_export", []),
               ("train_use_model", []), ("train_push", ["me/nails", "hf_token", False])]
    refused, other = [], []
    for api, data in actions:
        event, message = call(api, data)
        (refused if event == "error" and "for the owner of this server" in str(message) else other).append(
            f"{api}: {event} {str(message)[:160]}")
    if other:
        print("FAIL\towner refusal: not refused to an anonymous visitor: " + "; ".join(other))
    else:
        print(f"PASS\towner refusal: {len(refused)} owner actions refused to an anonymous visitor "
              f"({', '.join(a for a, _ in actions)}): \"{refused[0].split(' ', 2)[2]}\"")
PY

# What the image holds against what it should: the build context (git's files less .dockerignore)
# file for file, with the same content; plus what setup.sh and Python make there.
read -r -d '' contents_check <<'PY' || true
import hashlib, os, sys

sys.path.insert(0, os.path.join(sys.argv[1], "scripts"))
import dockerfile

repo, listing, venv_cfg = sys.argv[1], sys.argv[2], sys.argv[3]
# Made in the image, not copied: setup.sh's venv and `pip install -e .`'s metadata, Python's caches.
def made_here(path):
    parts = path.split("/")
    return parts[0] == ".venv" or parts[0].endswith(".egg-info") or "__pycache__" in parts

image = {}
with open(listing) as f:
    for line in f:
        digest, path = line.rstrip("\n").split("  ", 1)
        image[path.removeprefix("./")] = digest
expected = dockerfile.context(repo)
missing = [p for p in expected if p not in image]
changed = [p for p in expected if p in image and
           hashlib.sha256(open(os.path.join(repo, p), "rb").read()).hexdigest() != image[p]]
extra = sorted(p for p in image if p not in set(expected) and not made_here(p))
rules = dockerfile.ignore_rules(repo)
kept_out = sorted({p.split("/")[0] for p in os.listdir(repo) if dockerfile.ignored(p, rules)})
home = dict(line.split(" = ", 1) for line in open(venv_cfg).read().splitlines() if " = " in line).get("home", "?")
problems = []
if missing: problems.append(f"missing from the image: {missing[:10]}")
if changed: problems.append(f"differs from the checkout: {changed[:10]}")
if extra: problems.append(f"in the image but not in the build context: {extra[:10]}")
if not home.startswith("/usr/"): problems.append(f".venv is not the image's own (pyvenv.cfg home = {home})")
made = len([p for p in image if made_here(p)])
if problems:
    print("FAIL\timage contents: " + "; ".join(problems))
else:
    print(f"PASS\timage contents: the build context's {len(expected)} files, byte for byte, and nothing else "
          f"in /home/user/app but what the image made ({made} files: .venv with home = {home}, "
          f"*.egg-info, __pycache__); kept out as .dockerignore says: {' '.join(kept_out) or 'nothing here'}")
PY

# Run inside the container as root: every file or folder the app (uid 1000) changed since the stamp, outside the
# places a Space lets the app write and outside the mounts (the runtime's /proc, /dev, /etc/hosts...).
# shellcheck disable=SC2016  # expanded by the container's shell
writes_check='
stamp=$1; home=$2
set -- -path /tmp -prune -o -path /data -prune -o -path "$home" -prune -o -path /home/user/app -prune
for m in $(awk "{ print \$5 }" /proc/self/mountinfo | sort -u); do
  [ "$m" = / ] || set -- "$@" -o -path "$m" -prune
done
find / \( "$@" \) -o -user 1000 -newer "$stamp" -print 2>/dev/null | head -n 20
'

# The image's size, layer by layer with the step that made it (layers of a local build are
# uncompressed tars), and the biggest parts of the running container's file system.
report_image() {
  local size
  size=$(bah images --noheading --format '{{.Size}}' "$tag" | head -n 1)
  echo "image $tag: $size (buildah's figure, uncompressed)"
  bah inspect --type image "$tag" | python3 -c '
import json, sys
i = json.load(sys.stdin)
layers = i["OCIv1Manifest"]["layers"] if "OCIv1Manifest" in i else json.loads(i["Manifest"])["layers"]
steps = [h.get("created_by", "") for h in i["OCIv1"]["history"] if not h.get("empty_layer")]
total = sum(l["size"] for l in layers)
print(f"  {len(layers)} layers, {total / 1e9:.2f} GB in all; over 1 MB:")
for layer, step in zip(layers, steps):
    if layer["size"] > 1e6:
        size, text = layer["size"] / 1e6, " ".join(step.split())[:100]
        print(f"  {size:9.1f} MB  {text}")'
  echo "in the running container (du, MB):"
  run_in 0:0 sh -c 'du -xsm /usr /var /etc /home/user/app/.venv 2>/dev/null
    du -xsm --exclude=.venv /home/user/app; du -xsm --exclude=app /home/user
    echo "largest in the venv:"; du -xsm /home/user/app/.venv/lib/python3.11/site-packages/* | sort -rn | head -n 6' |
    sed 's/^/  /'
}

# --- the cached rebuild after an app.py change ------------------------------------------------------

# The checkout seen through an overlay with app.py changed: what a Space owner's push of an app.py
# edit builds, with the checkout itself untouched.
rebuild_after_app_change() {
  local log=$work/logs/build-app-change.log cached built
  overlay_dir=$(mktemp -d "$work/app-change.XXXXXX")
  mkdir "$overlay_dir"/{upper,work,merged}
  mount -t overlay overlay -o "lowerdir=$repo,upperdir=$overlay_dir/upper,workdir=$overlay_dir/work" "$overlay_dir/merged"
  printf '\n# space_build.sh --app-change, %s\n' "$(date -u +%FT%TZ)" >>"$overlay_dir/merged/app.py"
  echo "rebuilding with app.py changed (log: $log)..." >&2
  if build "$tag-app-change" "$overlay_dir/merged" "$log"; then
    cached=$(step_times "$log" | awk -F'\t' '$3 == "cached"' | wc -l)
    built=$(step_times "$log" | awk -F'\t' '$3 == "built" && $4 !~ /^FROM / { sub(/ .*/, "", $4); printf "%s%s", (n++ ? ", " : ""), $4 }')
    if step_times "$log" | awk -F'\t' '$4 ~ /setup\.sh --deps-only/ && $3 == "cached" { found = 1 } END { exit !found }'; then
      result PASS "cached rebuild after an app.py change: ${build_s} s, $cached steps from the cache (the packages, setup.sh --deps-only, among them), rebuilt: $built"
    else
      result FAIL "cached rebuild after an app.py change: the packages layer (setup.sh --deps-only) was built again (${build_s} s)"
    fi
  else
    tail -n 30 "$log" >&2
    result FAIL "cached rebuild after an app.py change failed after ${build_s} s (log: $log)"
  fi
  umount "$overlay_dir/merged"; rm -rf "$overlay_dir"; overlay_dir=""
  bah rmi "$tag-app-change" >/dev/null 2>&1 || true
}

# --- main ---------------------------------------------------------------------------------------------

main() {
  [[ $(id -u) == 0 ]] || die "run as root: buildah's chroot isolation and the network namespace need it"
  if [[ ${clean:-0} == 1 ]]; then clean_all; return; fi
  local tool
  for tool in buildah python3 git ip nsenter; do command -v "$tool" >/dev/null || die "$tool is needed (apt-get install buildah iproute2)"; done
  install -d "$work/logs"
  driver=$(cat "$work/driver" 2>/dev/null || storage_driver)
  echo "$driver" >"$work/driver"
  note "buildah $(buildah --version | awk '{ print $3 }'), storage $driver in $work, chroot isolation"
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  local base dockerfile_sum log=$work/logs/build.log stages
  base=$(base_image)
  make_base "$base"
  ((reuse_mmcv)) && stage_mmcv_wheel
  build_mounts
  dockerfile_sum=$(sha256sum "$repo/Dockerfile")
  echo "building $tag from $repo (log: $log)..." >&2
  if ! build "$tag" "$repo" "$log"; then
    tail -n 40 "$log" | cut -f2- >&2
    result FAIL "build: buildah bud failed after ${build_s} s (log: $log)"
    return
  fi
  [[ $(sha256sum "$repo/Dockerfile") == "$dockerfile_sum" ]] || result FAIL "build: the Dockerfile changed during the build"
  stages=$(report_build "$log" build)
  result PASS "build: ${build_s} s ($stages), CPU variant of the Dockerfile as it is$( ((reuse_mmcv)) && echo ', mmcv NOT compiled (--reuse-mmcv-wheel)')"

  # The container, as a Space starts it.
  local port photo cmd=() stamp=/tmp/.space-build-start home line
  port=$(front_matter_port)
  photo=$(find "$repo/examples" -maxdepth 1 -name '*.jpg' | sort | head -n 1)
  mapfile -d '' -t cmd < <(image_command)
  netns=nailseg-space-$$
  ip netns add "$netns"
  ip netns exec "$netns" ip link set lo up
  rm -rf "$work/data"; install -d -o 1000 -g 1000 "$work/data"   # a new Space's persistent storage
  ctr=$(bah from --pull-never --name "nailseg-space-run-$$" "$tag")
  bah mount "$ctr" >/dev/null   # held for the whole run: every command below shares this file system
  run_in 1000:1000 touch "$stamp"
  # shellcheck disable=SC2016  # the container's shell expands these
  home=$(run_in 1000:1000 sh -c 'echo "$HOME"')
  # shellcheck disable=SC2016
  note "container: $(run_in 1000:1000 sh -c 'echo "uid $(id -u), HOME $HOME, in $(pwd)"'), /data from $work/data, ${space_env[0]}, port $port (README front matter) in a network namespace of its own; command: ${cmd[*]}"
  echo "starting the app (log: $work/logs/app.log)..." >&2
  local argv
  run_argv 1000:1000
  # Its own session (setsid), so that the app and all it starts stop together.
  setsid "${argv[@]}" "${cmd[@]}" </dev/null >"$work/logs/app.log" 2>&1 &
  app_pid=$!
  sleep 1

  local url=http://127.0.0.1:$port/ weights
  weights=$(find "$repo/checkpoints" -maxdepth 1 -name '*.safetensors' | sort | head -n 1)
  while IFS=$'\t' read -r status line; do result "$status" "$line"; done < <(
    nsenter --net="/run/netns/$netns" python3 -c "$probe" page "$url" "$app_pid" 600)
  if [[ $failed == 0 ]]; then
    while IFS=$'\t' read -r status line; do result "$status" "$line"; done < <(
      nsenter --net="/run/netns/$netns" python3 -c "$probe" segment "$url" "$photo" "$repo")
    while IFS=$'\t' read -r status line; do result "$status" "$line"; done < <(
      nsenter --net="/run/netns/$netns" python3 -c "$probe" owner "$url" "/home/user/app/${weights#"$repo/"}")
  else
    tail -n 30 "$work/logs/app.log" >&2
  fi

  # From inside the running container: its files, and where the app has written.
  run_in 0:0 sh -c 'cd /home/user/app && find . -path ./.venv -prune -o -type f -print0 | xargs -0r sha256sum' \
    >"$work/logs/image-files.txt"
  run_in 0:0 cat /home/user/app/.venv/pyvenv.cfg >"$work/logs/pyvenv.cfg"
  while IFS=$'\t' read -r status line; do result "$status" "$line"; done < <(
    python3 -c "$contents_check" "$repo" "$work/logs/image-files.txt" "$work/logs/pyvenv.cfg")
  local leftovers
  # Mount points of the build that buildah may leave as empty stubs: empty is fine, content is not.
  # shellcheck disable=SC2016
  leftovers=$(run_in 0:0 sh -c 'for p in /etc/pip.conf /run/host-ca.crt /run/host-mmcv /run/host-links-*; do
    if [ -d "$p" ]; then [ -n "$(ls -A "$p")" ] && echo "$p"; elif [ -s "$p" ]; then echo "$p"; fi; done; true')
  [[ -z $leftovers ]] || result FAIL "image contents: the build's mounts left files in the image: $leftovers"
  local stray
  stray=$(run_in 0:0 sh -c "$writes_check" _ "$stamp" "$home")
  if [[ $home != /?* || $home == / ]]; then
    result FAIL "writes: \$HOME is '$home' in the container, not a home folder"
  elif [[ -z $stray ]]; then
    result PASS "writes: nothing outside /home/user/app, \$HOME ($home), /tmp and /data; the app wrote $(
      find "$work/data" -mindepth 1 | wc -l) files under /data, $(run_in 0:0 sh -c "find /tmp -mindepth 1 -newer $stamp | wc -l") under /tmp"
  else
    result FAIL "writes outside /home/user/app, \$HOME, /tmp and /data: $(echo "$stray" | xargs)"
  fi
  report_image | tee "$work/logs/image.txt" >&2
  stop_app
  bah rm "$ctr" >/dev/null; ctr=""

  ((app_change)) && rebuild_after_app_change
  return 0
}

main
if [[ ${clean:-0} != 1 ]]; then
  echo
  echo "== Space image: $( ((failed)) && echo FAIL || echo PASS ) =="
  printf '%s\n' "${results[@]}"
  echo "notes:"
  printf '  - %s\n' "${notes[@]}"
fi
exit "$failed"
