"""The Space's Dockerfile as scripts/dockerfile.py reads it: what it copies, runs and serves, and the
GPU variant's build settings. No Docker, no network. The real build, run and checks are
scripts/space_build.sh's (by hand: it takes a quarter of an hour or more, docs/spaces.md).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MMCV_CUDA_ENV = REPO / "scripts" / "mmcv-cuda.env"
# The GPUs Hugging Face Spaces offer, by CUDA compute capability.
SPACE_GPUS = {"T4": "7.5", "A100": "8.0", "A10G": "8.6", "L4": "8.9", "L40S": "8.9", "H100": "9.0"}

_spec = importlib.util.spec_from_file_location("dockerfile", REPO / "scripts" / "dockerfile.py")
dockerfile = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dockerfile)


def parse(*args: str, file: Path = REPO / "Dockerfile") -> list[tuple[str, ...]]:
    """The steps of the stage the build arguments pick (``"NAME=VALUE"`` each)."""
    return dockerfile.steps(str(file), dict(a.split("=", 1) for a in args), {})


@pytest.fixture(scope="module")
def variants() -> dict[str, list[tuple[str, ...]]]:
    return {"cpu": parse(), "cuda": parse("NAILSEG_HARDWARE=cuda")}


def env_of(steps) -> dict[str, str]:
    return dict(step[1].split("=", 1) for step in steps if step[0] == "ENV")


def after_user(steps) -> list[tuple[str, ...]]:
    kinds = [step[0] for step in steps]
    return steps[kinds.index("USER") + 1 :]


@pytest.fixture(scope="module")
def context() -> set[str]:
    return set(dockerfile.context())


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_every_copied_path_is_in_the_repo_and_the_build_context(variants, context, variant):
    sources = [step[1] for step in variants[variant] if step[0] == "COPY"]
    assert sources
    for src in sources:
        assert (REPO / src).exists(), src
        assert src == "." or src in context or any(f.startswith(src + "/") for f in context), f"{src} is dockerignored"


@pytest.mark.parametrize(
    "made_here",
    [
        line.strip().strip("/").replace("*", "x")
        for line in (REPO / ".gitignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ],
)
def test_what_git_ignores_stays_out_of_the_image(made_here):
    """Made locally (a venv, caches, runs, the GPU check's .gpu/): a Space's clone lacks it, and a
    local build must not copy it either."""
    assert dockerfile.ignored(made_here, dockerfile.ignore_rules())


# `setup.sh --deps-only` reads the pins, pyproject.toml (its stamp hashes it with
# requirements-dev.txt and itself) and, in the CUDA variant, scripts/mmcv-cuda.env.
DEPS_NEEDS = ["requirements.txt", "requirements-dev.txt", "pyproject.toml", "scripts/setup.sh", "scripts/mmcv-cuda.env"]


@pytest.mark.parametrize("needed", DEPS_NEEDS)
def test_the_packages_layer_has_what_it_reads(variants, needed):
    steps = variants["cpu"]
    deps = steps.index(("RUN", "scripts/setup.sh --deps-only"))
    assert needed in [step[1] for step in steps[:deps] if step[0] == "COPY"]


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_the_packages_layer_depends_on_nothing_else(variants, variant):
    """What is copied before ``setup.sh --deps-only`` decides when a Space compiles mmcv again: only
    what it reads, so a push of code, weights or docs reuses the layer; NailSeg is installed after
    everything else is copied."""
    steps = variants[variant]
    deps = steps.index(("RUN", "scripts/setup.sh --deps-only"))
    assert sorted(step[1] for step in steps[:deps] if step[0] == "COPY") == sorted(DEPS_NEEDS)
    install = steps.index(("RUN", "scripts/setup.sh"))
    assert deps < [i for i, step in enumerate(steps) if step[:2] == ("COPY", ".")][0] < install


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_installs_with_setup_as_uid_1000_and_serves_the_app(variants, variant):
    steps = variants[variant]
    user = next(step[1] for step in steps if step[0] == "USER")
    assert any(step[0] == "RUN" and re.search(rf"useradd .*-u 1000 {user}\b", step[1]) for step in steps)
    runs = [step[1] for step in after_user(steps) if step[0] == "RUN"]
    assert runs == ["scripts/setup.sh --deps-only", "scripts/setup.sh"]
    assert [step[1] for step in steps if step[0] == "CMD"] == [".venv/bin/python app.py"]
    assert env_of(steps)["PYTHON"] == "python3.11"


def test_port_is_the_front_matter_app_port(variants):
    app_port = re.search(r"^app_port: (\d+)$", (REPO / "README.md").read_text(), re.M).group(1)
    for steps in variants.values():
        assert env_of(steps)["GRADIO_SERVER_PORT"] == app_port
        assert ("EXPOSE", app_port) in steps


def test_cpu_is_the_default(variants):
    assert parse("NAILSEG_HARDWARE=cpu") == variants["cpu"]
    env = env_of(variants["cpu"])
    assert variants["cpu"][0][1].startswith("python:3.11")
    assert env["NAILSEG_TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
    assert "NAILSEG_MMCV_ENV" not in env


def test_gpu_variant_builds_mmcv_with_the_shared_cuda_settings(variants):
    steps = variants["cuda"]
    major, minor = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-devel-ubuntu[\d.]+", steps[0][1]).groups()
    env = env_of(steps)
    # torch's CUDA wheel must match the toolkit that compiles mmcv against it.
    assert env["NAILSEG_TORCH_INDEX"] == f"https://download.pytorch.org/whl/cu{major}{minor}"
    assert REPO / env["NAILSEG_MMCV_ENV"] == MMCV_CUDA_ENV
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert 'source "$NAILSEG_MMCV_ENV"' in setup and '"$NAILSEG_TORCH_INDEX"' in setup


@pytest.fixture(scope="module")
def mmcv_cuda_env() -> dict[str, str]:
    # Sourced by bash exactly as setup.sh and gpu_check.sh do, so quoting mistakes show here.
    out = subprocess.run(
        ["bash", "-c", 'set -a && source "$1" && env -0', "_", str(MMCV_CUDA_ENV)],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ["PATH"]},
    )
    return dict(item.split("=", 1) for item in out.stdout.split("\0") if item)


def test_mmcv_cuda_env_forces_the_cuda_ops(mmcv_cuda_env):
    assert mmcv_cuda_env["FORCE_CUDA"] == "1"
    assert mmcv_cuda_env["MMCV_WITH_OPS"] == "1"


@pytest.mark.parametrize("gpu", sorted(SPACE_GPUS))
def test_mmcv_cuda_arch_list_covers_space_gpus(mmcv_cuda_env, gpu):
    archs = {a.removesuffix("+PTX") for a in re.split(r"[;\s]+", mmcv_cuda_env["TORCH_CUDA_ARCH_LIST"]) if a}
    assert SPACE_GPUS[gpu] in archs


SAMPLE = """\
# syntax=docker/dockerfile:1
ARG FLAVOUR=small
FROM debian:12 AS small
ENV TOOL=/opt/tool PATH=/opt/tool/bin:$PATH
FROM small AS big
ENV SIZE big
FROM ${FLAVOUR}
WORKDIR /srv
RUN --mount=type=secret,id=TOKEN make \\
    # a comment inside a continued line
    && make install
COPY --chown=app a.txt b.txt ./
COPY lib ./lib
ENV HOME_TOOL="${TOOL}/home dir"
CMD ["python", "serve.py", "--name", "a b"]
"""


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dockerfile") / "Dockerfile"
    path.write_text(SAMPLE)
    return path


@pytest.fixture(scope="module")
def sample_steps(sample) -> list[tuple[str, ...]]:
    return parse(file=sample)


@pytest.mark.parametrize(
    "step",
    [
        ("FROM", "debian:12"),
        ("ENV", "PATH=/opt/tool/bin:$PATH"),  # a base image's variable stays for the shell
        ("WORKDIR", "/srv"),
        ("RUN", "make && make install"),
        ("COPY", "a.txt", "/srv/", "app"),
        ("COPY", "b.txt", "/srv/", "app"),
        ("COPY", "lib", "/srv/lib", ""),
        ("ENV", "HOME_TOOL=/opt/tool/home dir"),
        ("CMD", "python serve.py --name 'a b'"),
    ],
)
def test_parser_reads_dockerfile_syntax(sample_steps, step):
    assert step in sample_steps


def test_parser_follows_the_stage_an_arg_picks(sample, sample_steps):
    assert ("ENV", "SIZE=big") not in sample_steps
    assert ("ENV", "SIZE=big") in parse("FLAVOUR=big", file=sample)
