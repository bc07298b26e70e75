"""A non-editable install (`pip install .`) carries the configs and the bundled model with it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from support import PHOTOS, REPO


@pytest.mark.slow
def test_an_installed_package_finds_the_bundled_model(tmp_path):
    source = tmp_path / "src"  # a copy: building writes build/ beside the sources
    source.mkdir()
    for part in ("nailseg", "configs", "checkpoints"):
        shutil.copytree(REPO / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / part, source / part)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "wheel", source], check=True)
    (wheel,) = (tmp_path / "wheel").glob("nailseg-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", tmp_path / "site", wheel], check=True)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    env.pop("NAILSEG_WEIGHTS", None)
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import nailseg.paths as p; print(p.__file__); print(p.BUNDLED_WEIGHTS); print(p.DEFAULT_CONFIG)",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert all(path.startswith(str(tmp_path / "site")) for path in where), where  # not the source checkout
    run = subprocess.run(
        [sys.executable, "-m", "nailseg", "predict", str(PHOTOS[0]), "--out", "out"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert str(tmp_path / "site") in run.stdout  # the weights it names are the installed ones
    assert json.loads((tmp_path / "out" / "predictions.json").read_text())


def test_every_nailseg_variable_is_in_the_readme_s_settings_table():
    used = set()
    for path in [
        REPO / "app.py",
        REPO / "Dockerfile",
        *REPO.glob("nailseg/**/*.py"),
        *REPO.glob("scripts/*"),
        *REPO.glob("bench/*.py"),
    ]:
        used |= set(re.findall(r"\bNAILSEG_[A-Z0-9_]+", path.read_text(errors="replace")))
    rows = [line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("| `")]
    documented = {name for row in rows for name in re.findall(r"`(NAILSEG_[A-Z0-9_]+)`", row.split(" | ")[0])}
    assert len(used) > 10
    assert used <= documented, sorted(used - documented)


def test_the_readmes_python_example_runs_on_a_photo():
    """The README's "In Python" block, as written, on a test photo: the public API is what it shows."""
    block = re.search(r"## In Python\n\n```python\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    code = block.replace('"hand.jpg"', repr(str(PHOTOS[0])))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    count = int(run.stdout.split()[0])
    assert count > 0


def test_import_nailseg_exports_its_api_without_loading_torch():
    probe = (
        "import sys, nailseg; print('torch' in sys.modules); "
        "from nailseg import Nails, load_model; print(load_model.__module__, Nails.__module__)"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["False", "nailseg.inference", "nailseg.result"]


def test_no_import_circle_in_the_package():
    """Issue 22: ``hub`` -> ``weights`` -> ``hub`` (and through ``inference``) was a circle. Every
    import counts, those inside functions too: a circle there is a module that cannot be read alone."""
    import ast

    modules = {}
    for path in (REPO / "nailseg").rglob("*.py"):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    edges = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            edges[name] |= {t for t in targets if t in modules and t not in (name, "nailseg")}
    assert len(modules) > 30 and sum(map(len, edges.values())) > 50  # the walk saw the package

    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for target in sorted(edges[name]):
            assert state.get(target) != "open", " -> ".join([*path, name, target])
            if target not in state:
                visit(target, [*path, name])
        state[name] = "done"

    for name in sorted(modules):
        if name not in state:
            visit(name, [])
