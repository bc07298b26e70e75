#!/usr/bin/env bash
# Rehearse the Hugging Face Space on a machine without Docker (docs/spaces.md): as uid 1000 with a
# fresh HOME (so no pip cache: mmcv is built again), in a folder holding only what the Dockerfile
# COPYs, run the Dockerfile's own steps and its CMD, then check the page, /segment and where files
# were written.
#   scripts/space_rehearsal.sh [--keep]    the rehearsal, as root (it switches to uid 1000)
#   scripts/space_rehearsal.sh --print-steps [--arg NAME=VALUE]... [--file DOCKERFILE]
#   scripts/space_rehearsal.sh --print-context    the files a build sees (git less .dockerignore)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

# The Dockerfile and .dockerignore readers, kept in Python: quoting, JSON forms, continuation lines.
read -r -d '' helper <<'PY' || true
import json, os, posixpath, re, shlex, shutil, subprocess, sys

REPO = os.environ["REHEARSAL_REPO"]
VAR = re.compile(r"\$(?:\{(\w+)(?::-([^}]*))?\}|(\w+))")


def expand(text, env):
    # Docker substitutes ARG/ENV values in most instructions; an unknown name stays as written,
    # so that a base image variable ($PATH) is left for whoever knows it.
    def sub(m):
        name = m.group(1) or m.group(3)
        if name in env:
            return env[name]
        return m.group(2) if m.group(2) is not None else m.group(0)
    return VAR.sub(sub, text)


def instructions(text):
    out, buf = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):  # comments may sit inside a continued instruction
            continue
        if line.endswith("\\"):
            buf += line[:-1].rstrip() + " "
            continue
        out.append(buf + line)
        buf = ""
    if buf.strip():
        out.append(buf.strip())
    return [(line.split(None, 1)[0].upper(), (line.split(None, 1) + [""])[1].strip()) for line in out]


def words(rest):
    if rest.startswith("["):
        return json.loads(rest), True
    return shlex.split(rest), False


def flags(tokens):
    opts = {}
    while tokens and tokens[0].startswith("--"):
        key, _, value = tokens.pop(0)[2:].partition("=")
        opts[key] = value
    return opts


def steps(path, args, seed_env):
    """The final stage's instructions, with the stages it is built FROM before it."""
    global_args, stages, cur, env = {}, {}, None, {}
    for kw, rest in instructions(open(path).read()):
        if kw == "ARG" and cur is None:
            name, _, default = rest.partition("=")
            global_args[name] = args.get(name, default)
            continue
        if kw == "FROM":
            tokens = shlex.split(expand(rest, global_args))
            flags(tokens)
            base = tokens[0]
            name = tokens[2].lower() if len(tokens) > 2 and tokens[1].lower() == "as" else None
            if base.lower() in stages:
                cur = list(stages[base.lower()]["steps"])
                env = dict(stages[base.lower()]["env"])
            else:
                cur, env = [("FROM", base)], {**seed_env}
            stages[name or f"#{len(stages)}"] = {"steps": cur, "env": env}
            continue
        if kw == "ARG":
            name, has_default, default = rest.partition("=")
            value = args.get(name, expand(default, env) if has_default else global_args.get(name, ""))
            env[name] = value
            cur.append(("ARG", f"{name}={value}"))
        elif kw == "ENV":
            tokens = shlex.split(rest)
            pairs = [t.partition("=")[::2] for t in tokens] if "=" in tokens[0] else [(tokens[0], " ".join(tokens[1:]))]
            for name, value in pairs:
                env[name] = expand(value, env)
                cur.append(("ENV", f"{name}={env[name]}"))
        elif kw == "RUN":
            rest = re.sub(r"^(--\S+\s+)+", "", rest)  # --mount=... and friends
            tokens, exec_form = words(rest)
            cur.append(("RUN", shlex.join(tokens) if exec_form else rest))
        elif kw in ("COPY", "ADD"):
            tokens, _ = words(expand(rest, env))
            opts = flags(tokens)
            if "from" in opts:
                sys.exit(f"{kw} --from={opts['from']} is not supported by the rehearsal")
            workdir = env.get("__WORKDIR__", "/")
            dest = tokens[-1]
            full = posixpath.normpath(posixpath.join(workdir, dest))
            if dest.endswith("/") or dest in (".", "./") or len(tokens) > 2:
                full = full.rstrip("/") + "/"
            for src in tokens[:-1]:
                cur.append(("COPY", src, full, opts.get("chown", "")))
        elif kw == "WORKDIR":
            env["__WORKDIR__"] = posixpath.normpath(posixpath.join(env.get("__WORKDIR__", "/"), expand(rest, env)))
            cur.append(("WORKDIR", env["__WORKDIR__"]))
        elif kw in ("CMD", "ENTRYPOINT"):
            tokens, exec_form = words(rest)
            cur.append((kw, shlex.join(tokens) if exec_form else rest))
        else:
            cur.append((kw, expand(rest, env)))
    return cur


def ignore_rules():
    rules = []
    try:
        lines = open(os.path.join(REPO, ".dockerignore")).read().splitlines()
    except FileNotFoundError:
        return rules
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = posixpath.normpath(line.lstrip("!").strip()).lstrip("/")
        rx = ""
        for part in re.split(r"(\*\*/|\*\*|\*|\?)", pattern):
            rx += {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
        rules.append((negate, re.compile(rx)))
    return rules


def context():
    """What `docker build` would see from this repository: git's files (tracked and new, not
    ignored) less .dockerignore, where a pattern on a folder takes everything in it."""
    out = subprocess.run(["git", "-C", REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         check=True, capture_output=True, text=True).stdout
    rules = ignore_rules()
    keep = []
    for path in sorted(set(filter(None, out.split("\0")))):
        if not os.path.isfile(os.path.join(REPO, path)):
            continue
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        excluded = False
        for negate, rx in rules:
            if any(rx.fullmatch(p) for p in prefixes):
                excluded = not negate
        if not excluded:
            keep.append(path)
    return keep


def copy(src, dest, target_root, image_home, uid):
    """COPY src dest into the rehearsal folder (image paths under image_home move to target_root)."""
    files = context()
    src = posixpath.normpath(src)
    src = "" if src == "." else src
    if src in files:
        pairs = [(src, posixpath.basename(src) if dest.endswith("/") else None)]
    else:
        pairs = [(f, f[len(src) + 1:] if src else f) for f in files if not src or f.startswith(src + "/")]
        if not pairs:
            sys.exit(f"COPY {src or '.'}: not in the build context (missing, or excluded by .dockerignore)")
    if not (dest == image_home or dest.startswith(image_home.rstrip("/") + "/")):
        sys.exit(f"COPY to {dest}: the rehearsal only places files under {image_home}")
    base = target_root + dest[len(image_home.rstrip("/")):]
    for rel, inside in pairs:
        if inside is None and os.path.isdir(base):
            inside = posixpath.basename(rel)
        target = base if inside is None else os.path.join(base, inside)
        made = os.path.dirname(target)
        missing = []
        while not os.path.isdir(made):
            missing.append(made)
            made = os.path.dirname(made)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(REPO, rel), target)
        for path in [target, *missing]:
            if uid is not None:
                os.chown(path, uid, uid)


mode, argv = sys.argv[1], sys.argv[2:]
if mode == "steps":
    args, seed, path = {}, {}, os.path.join(REPO, "Dockerfile")
    while argv:
        opt, value = argv.pop(0), argv.pop(0)
        if opt == "--arg":
            args.update([value.split("=", 1)])
        elif opt == "--env":
            seed.update([value.split("=", 1)])
        elif opt == "--file":
            path = value
        else:
            sys.exit(f"unknown option {opt}")
    for step in steps(path, args, seed):
        print("\t".join(step))
elif mode == "context":
    print("\n".join(context()))
elif mode == "copy":
    copy(argv[0], argv[1], argv[2], argv[3], int(argv[4]) if argv[4] else None)
PY
helper() { REHEARSAL_REPO=$repo python3 -c "$helper" "$@"; }

case "${1:-}" in
  --print-steps) shift; helper steps "$@"; exit ;;
  --print-context) helper context; exit ;;
esac
keep=0; [[ "${1:-}" == "--keep" ]] && keep=1
[[ $(id -u) == 0 ]] || { echo "run as root: the rehearsal creates and switches to the uid-1000 user" >&2; exit 2; }

w=$(mktemp -d /tmp/nailseg-space.XXXXXX)
chmod 755 "$w"
home=$w/home            # the image's /home/user: fresh, so no pip cache from anyone
tmp=$w/tmp              # the container's own /tmp: this machine's may hold other users' folders
log=$w/install.log
notes=() results=() failed=0 app_pid="" created_user=""
note() { notes+=("$*"); echo "note: $*" >&2; }
result() { results+=("$(printf '%-4s  %s' "$1" "$2")"); [[ $1 == PASS ]] || failed=1; }

user=$(getent passwd 1000 | cut -d: -f1 || true)
if [[ -z $user ]]; then
  user=space; useradd --uid 1000 --user-group --no-create-home --home-dir "$home" "$user"; created_user=$user
  note "created user $user (uid 1000) for the rehearsal"
fi
install -d -o 1000 -g 1000 "$home" "$tmp"
stamp=$w/stamp; touch "$stamp"

cleanup() {
  if [[ -n $app_pid ]] && kill -TERM -- "-$app_pid" 2>/dev/null; then
    sleep 3
    kill -KILL -- "-$app_pid" 2>/dev/null || true
  fi
  if [[ $keep == 0 ]]; then
    # What the rehearsal's user left in /tmp (Gradio's uploads folder...), then the folder itself.
    find /tmp -mindepth 1 -maxdepth 1 -uid 1000 -newer "$stamp" -exec rm -rf {} + 2>/dev/null || true
    rm -rf "$w"
    if [[ -n $created_user ]]; then userdel "$created_user" || true; fi
  fi
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The image's environment as Docker gives it, then this machine's pip settings: they stand in for
# the network the Space has (PIP_FIND_LINKS holds torch's CPU wheel here).
declare -A env=([PATH]=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin [LANG]=C.UTF-8 [TMPDIR]=$tmp)
for k in $(compgen -e | grep '^PIP_' || true); do env[$k]=${!k}; done
user_env() { kv=(); local k; for k in "${!env[@]}"; do kv+=("$k=${env[$k]}"); done; }
as_user() { user_env; runuser -u "$user" -- env -i "${kv[@]}" "$@"; }

img_user="" img_home="" workdir=$home cmd="" install_s=0
while IFS=$'\t' read -r kind a b c; do
  case $kind in
    FROM) note "base image $a: this machine stands in ($(. /etc/os-release && echo "$PRETTY_NAME"), $(PATH=${env[PATH]} command -v python3.11 || echo 'no python3.11'))" ;;
    USER) img_user=$a img_home=/home/$a; env[HOME]=$home env[USER]=$user ;;
    ARG | ENV)
      name=${a%%=*} value=${a#*=}
      [[ -n $img_home ]] && value=${value//$img_home/$home}
      host=$(sed -nE 's#^https?://([^/:]+).*#\1#p' <<<"$value")
      if [[ -n $host ]] && ! getent hosts "$host" >/dev/null; then
        note "$name=$value left unset: $host cannot be reached from here"
        continue
      fi
      env[$name]=$value ;;
    WORKDIR)
      if [[ -z $img_home || $a != "$img_home"* ]]; then
        result FAIL "WORKDIR $a: the rehearsal only places the app under the user's home"; break
      fi
      workdir=$home${a#"$img_home"}; install -d -o 1000 -g 1000 "$workdir" ;;
    COPY)
      uid=""; [[ -n $c ]] && uid=1000
      helper copy "$a" "$b" "$home" "${img_home:-/home/user}" "$uid" ;;
    RUN)
      if [[ -z $img_user ]]; then
        if [[ $a == *"apt-get install"* ]]; then
          pkgs=$(grep -oE 'apt-get install[^&;|]*' <<<"$a" | tr ' ' '\n' | grep -vE '^(apt-get|install|-.*|)$' || true)
          missing=$(for p in $pkgs; do dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || echo "$p"; done)
          note "root step (apt-get) not run; its packages here: ${missing:+missing: }${missing:-all installed}"
        else
          note "root step not run: $a$([[ $a == *useradd* ]] && echo " (uid 1000 is $user here)")"
        fi
        continue
      fi
      echo "RUN $a   (as $user, in ${workdir#$w/}; log: $log)" >&2
      start=$SECONDS
      if ! (cd "$workdir" && as_user sh -c "$a") </dev/null >>"$log" 2>&1; then
        result FAIL "install: RUN $a failed after $((SECONDS - start)) s (the end of its log is above)"
        tail -n 30 "$log" >&2
        break
      fi
      install_s=$((install_s + SECONDS - start)) ;;
    CMD) cmd=$a ;;
    EXPOSE) ;;
    *) note "$kind not rehearsed" ;;
  esac
done < <(helper steps --env HOME=/home/user --env "PATH=${env[PATH]}")

if [[ $failed == 0 ]]; then
  result PASS "install: the Dockerfile's RUN steps as uid 1000 ($user) took ${install_s} s"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  env[GRADIO_SERVER_NAME]=0.0.0.0 env[GRADIO_SERVER_PORT]=$port
  echo "CMD $cmd   (port $port; log: $w/app.log)" >&2
  start=$SECONDS
  user_env
  # Its own process group (setsid), so that the app and anything it started stop together.
  (cd "$workdir" && exec setsid runuser -u "$user" -- env -i "${kv[@]}" sh -c "$cmd") </dev/null >"$w/app.log" 2>&1 &
  app_pid=$!
  code=000
  while ((SECONDS - start < 600)) && kill -0 "$app_pid" 2>/dev/null; do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/" || true)
    [[ $code == 200 ]] && break
    sleep 1
  done
  if [[ $code == 200 ]]; then
    result PASS "page: HTTP 200 after $((SECONDS - start)) s"
    photo=$(cd "$workdir" && ls examples/*.jpg | head -n 1)
    probe='import sys, time
from gradio_client import Client, handle_file
client = Client(sys.argv[1], verbose=False)
start = time.monotonic()
result = client.predict(handle_file(sys.argv[2]), 0.5, api_name="/segment")
print(len(result[2]), f"{time.monotonic() - start:.1f}", (result[-1] or "").replace("\n", " "), sep="\t")'
    install -d -o 1000 -g 1000 "$w/client"
    # The client's downloads and its staging folders, apart from what the app leaves in /tmp.
    env[GRADIO_TEMP_DIR]=$w/client env[TMPDIR]=$w/client
    if out=$(cd "$workdir" && as_user .venv/bin/python -c "$probe" "http://127.0.0.1:$port/" "$photo" \
        2>>"$w/client.log"); then
      IFS=$'\t' read -r nails seconds status <<<"$out"
      if ((nails > 0)); then
        result PASS "/segment: $nails nails on $photo, first call ${seconds} s (\"$status\")"
      else
        result FAIL "/segment: no nails on $photo (\"$status\")"
      fi
    else
      result FAIL "/segment: the client failed (the end of its log is above)"; tail -n 20 "$w/client.log" >&2
    fi
  else
    result FAIL "page: no HTTP 200 within $((SECONDS - start)) s, last answer $code (the end of the app's log is above)"
    tail -n 30 "$w/app.log" >&2
  fi

  # Everything uid 1000 created or changed since the start lies in its own files, so one pass over
  # the disk, owner and time filtered, needs no before-snapshot and ignores other users' work.
  stray=$(find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp -o -path /data \
    -o -path "$home" \) -prune -o -uid 1000 -newer "$stamp" -print 2>/dev/null | head -n 20 || true)
  if [[ -z $stray ]]; then
    result PASS "writes: nothing outside the app folder, \$HOME, /tmp and /data"
  else
    result FAIL "writes outside the app folder, \$HOME, /tmp and /data:"$'\n'"$stray"
  fi
  in_tmp=$(cd "$tmp" && find . -mindepth 1 -maxdepth 1 | sed 's#^\./#/tmp/#' | sort | xargs || true)
  note "left in the container's /tmp (\$TMPDIR here): ${in_tmp:-nothing}"
fi

echo
echo "== Space rehearsal: $( ((failed)) && echo FAIL || echo PASS ) =="
printf '%s\n' "${results[@]}"
echo "notes:"
printf '  - %s\n' "${notes[@]}"
exit "$failed"
