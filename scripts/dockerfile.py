#!/usr/bin/env python3
"""The Dockerfile and .dockerignore as a build reads them, without a build (stdlib only).

    scripts/dockerfile.py steps [--arg NAME=VALUE]... [--env NAME=VALUE]... [--file DOCKERFILE]
        the steps of the stage a build argument picks (NAILSEG_HARDWARE), with the stages it is
        built FROM before it: one line per step, fields separated by tabs
    scripts/dockerfile.py context
        the files of the build context: git's files (tracked and new, not ignored) less
        .dockerignore, one path a line

tests/test_space.py checks the Dockerfile with ``steps`` in seconds; scripts/space_build.sh
compares what the built image holds with ``context``.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAR = re.compile(r"\$(?:\{(\w+)(?::-([^}]*))?\}|(\w+))")


def expand(text: str, env: dict[str, str]) -> str:
    """Substitute ARG/ENV values as Docker does; an unknown name stays as written, so that a base
    image's variable ($PATH) is left for whoever knows it."""

    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(3)
        if name in env:
            return env[name]
        return m.group(2) if m.group(2) is not None else m.group(0)

    return VAR.sub(sub, text)


def instructions(text: str) -> list[tuple[str, str]]:
    """``(KEYWORD, rest)`` per instruction: continuation lines joined, comments dropped."""
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


def words(rest: str) -> tuple[list[str], bool]:
    if rest.startswith("["):
        return json.loads(rest), True
    return shlex.split(rest), False


def flags(tokens: list[str]) -> dict[str, str]:
    opts = {}
    while tokens and tokens[0].startswith("--"):
        key, _, value = tokens.pop(0)[2:].partition("=")
        opts[key] = value
    return opts


def steps(path: str, args: dict[str, str], seed_env: dict[str, str]) -> list[tuple[str, ...]]:
    """The final stage's instructions, with the stages it is built FROM before it.

    Each step is a tuple: ``("FROM", image)``, ``("ENV", "NAME=value")``, ``("ARG", "NAME=value")``,
    ``("RUN", command)``, ``("COPY", src, absolute dest, chown)`` (one per source),
    ``("WORKDIR", absolute path)``, ``("CMD", command)``, or ``(KEYWORD, rest)`` for the others.
    """
    global_args: dict[str, str] = {}
    stages: dict[str, dict] = {}
    cur: list[tuple[str, ...]] | None = None
    env: dict[str, str] = {}
    with open(path) as f:
        text = f.read()
    for kw, rest in instructions(text):
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
        if cur is None:
            sys.exit(f"{kw} before the first FROM")
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
                sys.exit(f"{kw} --from={opts['from']} is not supported")
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
    return cur or []


def ignore_rules(repo: str = REPO) -> list[tuple[bool, re.Pattern]]:
    """``.dockerignore`` as ``(negated, regex)`` pairs, in order (the last match decides)."""
    rules = []
    try:
        with open(os.path.join(repo, ".dockerignore")) as f:
            lines = f.read().splitlines()
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


def ignored(path: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """Whether .dockerignore keeps ``path`` (relative, with /) out: a pattern on a folder takes
    everything in it."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for negate, rx in rules:
        if any(rx.fullmatch(p) for p in prefixes):
            excluded = not negate
    return excluded


def context(repo: str = REPO) -> list[str]:
    """What a build sees from a clone of this repository: git's files (tracked and new, not
    ignored) less .dockerignore."""
    out = subprocess.run(
        ["git", "-C", repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rules = ignore_rules(repo)
    return [
        path
        for path in sorted(set(filter(None, out.split("\0"))))
        if os.path.isfile(os.path.join(repo, path)) and not ignored(path, rules)
    ]


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in ("steps", "context"):
        sys.exit(__doc__)
    if argv[0] == "context":
        print("\n".join(context()))
        return
    args: dict[str, str] = {}
    seed: dict[str, str] = {}
    path = os.path.join(REPO, "Dockerfile")
    rest = argv[1:]
    while rest:
        if len(rest) < 2:
            sys.exit(f"{rest[0]} needs a value")
        opt, value = rest.pop(0), rest.pop(0)
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


if __name__ == "__main__":
    main(sys.argv[1:])
