"""The tests' one support module: test data, the weights to use, the app in a subprocess, zips."""

from __future__ import annotations

import ctypes
import importlib.util
import io
import json
import os
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from nailseg.weights import BUNDLED_WEIGHTS, ENV_VAR

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data" / "nails-roboflow"  # six CC BY 4.0 photos, see tests/data/ATTRIBUTION.md
PHOTOS = sorted((DATA / "images").glob("*.jpg"))
COCO_FIXTURES = REPO / "tests" / "data"  # coco-*/: those photos as labelling tools export COCO (scripts/)
SHARED = REPO.parent / "shared" / "data"  # the full data sets: only in the development checkout


def load_bench(name: str):
    """``bench/NAME.py`` as a module (the benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def weights_spec() -> str:
    """``$NAILSEG_WEIGHTS`` if set, else the bundled model (a test fails when that file is missing)."""
    weights = os.environ.get(ENV_VAR) or str(BUNDLED_WEIGHTS)
    if not weights.startswith("hf://") and not Path(weights).is_file():
        pytest.fail(f"no model: {weights} is missing (set {ENV_VAR} or add the bundled weights)")
    return weights


def label_count(photo: Path) -> int:
    """Nails in a photo's YOLO label file (one polygon per non-empty line)."""
    label = DATA / "labels" / f"{photo.stem}.txt"
    return sum(1 for line in label.read_text().splitlines() if line.strip())


def label_masks(photo: Path) -> np.ndarray:
    """``(N, H, W) bool`` true nail masks of a test photo, from its YOLO-seg label."""
    from nailseg.convert import polygons_to_instances
    from nailseg.datasets import load_yolo_polygons
    from nailseg.images import exif_size

    width, height = exif_size(photo)
    polygons = load_yolo_polygons(DATA / "labels" / f"{photo.stem}.txt", width, height)
    masks = polygons_to_instances(polygons, height, width)
    return np.stack(masks) if masks else np.zeros((0, height, width), bool)


def coco_masks(coco: dict, crowd: bool = False) -> dict[str, list[np.ndarray]]:
    """Each photo's annotation masks as pycocotools itself decodes them (``COCO.annToMask``), in
    file order, by the photo's file name (without its folder); crowd regions only with ``crowd``."""
    import contextlib

    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints
        index = COCO()
        index.dataset = json.loads(json.dumps(coco))
        index.createIndex()
    return {
        Path(image["file_name"]).name: [
            index.annToMask(a).astype(bool) for a in index.imgToAnns[image["id"]] if bool(a.get("iscrowd")) == crowd
        ]
        for image in coco["images"]
    }


def same_masks(found: list[np.ndarray], expected: list[np.ndarray] | np.ndarray) -> bool:
    """The same masks in the same order, pixel for pixel."""
    return len(found) == len(expected) and all(np.array_equal(a, b) for a, b in zip(found, expected))


def folder_zip(folder: Path, path: Path) -> Path:
    """A zip of every file under ``folder``, named relative to it (links followed: the COCO
    fixtures' photos are links to the test photos)."""
    with zipfile.ZipFile(path, "w") as zf:
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            zf.write(file, file.relative_to(folder).as_posix())
    return path


def free_port() -> int:
    """A loopback port free now: ``bench/app.py``'s (one implementation for the tests and the benchmark)."""
    return load_bench("app").free_port()


class AppProcess:
    """``python app.py`` on a free loopback port, with its own Gradio temp folder.

    ``extra_env`` adds to (or, with None values, removes from) the app's environment.
    """

    def __init__(self, tmp: Path, timeout_s: float = 300.0, extra_env: dict | None = None) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.upload_dir = tmp / "gradio"
        self.tmp_dir = tmp / "tmp"  # the app's $TMPDIR: what it leaves there can be checked
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.converted_dir = tmp / "converted"  # datasets kept for the Train tab
        env = {
            **os.environ,
            ENV_VAR: weights_spec(),
            "GRADIO_SERVER_NAME": "127.0.0.1",
            "GRADIO_SERVER_PORT": str(self.port),
            "GRADIO_TEMP_DIR": str(self.upload_dir),
            "TMPDIR": str(self.tmp_dir),
            "NAILSEG_CONVERTED_DIR": str(self.converted_dir),
            "GRADIO_ANALYTICS_ENABLED": "False",
            "HF_HUB_OFFLINE": "1",
            "NAILSEG_WORK_DIRS": str(tmp / "work_dirs"),
            "NAILSEG_PERSISTENT_DIR": str(tmp / "no-persistent-storage"),
        }
        for key, value in (extra_env or {}).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        self.log = (tmp / "app.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "app.py"], cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                with urllib.request.urlopen(self.url + "gradio_api/info", timeout=5):
                    return
            except urllib.error.HTTPError:  # it answers (e.g. 401 behind a login): it is up
                return
            except OSError:
                time.sleep(1)
        self.stop()
        raise RuntimeError(f"app not up after {timeout_s} s:\n{self.log_text()}")

    def log_text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()[-5000:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def jpeg_bytes(rgb: np.ndarray, **save_args) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=90, **save_args)
    return buf.getvalue()


def dataset_zip(path: Path, photos: list[Path] = PHOTOS, wrap: str = "nails") -> Path:
    """A YOLO-seg dataset zip (``wrap/images``, ``wrap/labels``) of the test photos."""
    with zipfile.ZipFile(path, "w") as zf:
        for photo in photos:
            zf.write(photo, f"{wrap}/images/{photo.name}")
            zf.write(DATA / "labels" / f"{photo.stem}.txt", f"{wrap}/labels/{photo.stem}.txt")
    return path


def damaged_zip(path: Path, photos: list[Path] = PHOTOS[:3]) -> Path:
    """A YOLO-seg dataset zip of ``photos`` whose first photo fails its checksum (stored, a byte
    changed) and whose second has corrupt deflate data (a block type that does not exist)."""
    with zipfile.ZipFile(path, "w") as zf:
        for k, photo in enumerate(photos):
            zf.write(photo, f"nails/images/{photo.name}", zipfile.ZIP_DEFLATED if k == 1 else zipfile.ZIP_STORED)
            zf.write(DATA / "labels" / f"{photo.stem}.txt", f"nails/labels/{photo.stem}.txt")
        bad_crc, bad_deflate = (zf.getinfo(f"nails/images/{p.name}") for p in photos[:2])
    data = bytearray(path.read_bytes())
    data[_member_data(data, bad_crc) + 100] ^= 0xFF
    data[_member_data(data, bad_deflate)] = 0xFF  # first block: final, type 3 (reserved)
    path.write_bytes(data)
    return path


def _member_data(data: bytes, info: zipfile.ZipInfo) -> int:
    """Where a member's (compressed) bytes start: after its 30-byte local header, name and extra field."""
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
    return info.header_offset + 30 + name_len + extra_len


def bomb_zip(path: Path, mib: int = 300) -> Path:
    """A zip whose one member expands ~1000:1 to ``mib`` MiB of zeros."""
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf,
        zf.open("images/zeros.png", "w", force_zip64=True) as member,
    ):
        chunk = bytes(1024**2)
        for _ in range(mib):
            member.write(chunk)
    return path


def traversal_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("images/a.txt", "x")
        zf.writestr("../evil.txt", "x")
    return path


# --- a visitor's tools: the upload route and the HTTP API, as documented by Gradio -----------------


def upload(app: AppProcess, path: Path, headers: dict | None = None) -> str:
    """POST a file to the upload route; returns the server path Gradio gives back."""
    with open(path, "rb") as f:
        answer = httpx.post(app.url + "gradio_api/upload", files={"files": (path.name, f)}, headers=headers, timeout=60)
    answer.raise_for_status()
    return answer.json()[0]


def file_data(server_path: str, name: str = "photo.jpg") -> dict:
    """Gradio's own file payload, as its clients send it."""
    return {"path": server_path, "orig_name": name, "meta": {"_type": "gradio.FileData"}}


def call(app: AppProcess, api: str, *data, raw_body: str | None = None) -> tuple[str, object]:
    """Call an endpoint over HTTP; returns ``("complete", outputs)`` or ``("error", message)``."""
    body = raw_body or json.dumps({"data": list(data)})
    started = httpx.post(
        app.url + f"gradio_api/call/{api}", content=body, timeout=60, headers={"content-type": "application/json"}
    )
    started.raise_for_status()
    event_id = started.json()["event_id"]
    event, payload = None, None
    with httpx.stream("GET", app.url + f"gradio_api/call/{api}/{event_id}", timeout=600) as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event in ("complete", "error"):
                payload = json.loads(line.removeprefix("data: "))
                break
    return event, payload


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class OpenWatch:
    """Counts the times any process opens one file (Linux inotify): proof that the app never did."""

    IN_OPEN = 0x20
    _EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name

    def __init__(self, path: Path) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK)
        if self.fd < 0 or libc.inotify_add_watch(self.fd, os.fsencode(path), self.IN_OPEN) < 0:
            raise OSError(ctypes.get_errno(), f"inotify cannot watch {path}")
        self.count = 0

    def opens(self) -> int:
        """Opens seen so far."""
        while True:
            try:
                data = os.read(self.fd, 4096)
            except BlockingIOError:
                return self.count
            offset = 0
            while offset < len(data):
                _, mask, _, length = self._EVENT.unpack_from(data, offset)
                self.count += bool(mask & self.IN_OPEN)
                offset += self._EVENT.size + length

    def close(self) -> None:
        os.close(self.fd)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A tiny PNG that claims ``width`` x ``height`` pixels (its data is a few bytes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + _png_chunk(b"IEND", b"")
    )
    return path


def grey_png(path: Path, width: int, height: int) -> Path:
    """A complete, decodable RGB PNG of ``width`` x ``height`` mid-grey pixels, written row by row
    (a 59 MP one takes a few hundred KB and never a full-size array in the test)."""
    row = b"\0" + b"\x80" * (3 * width)  # filter type 0, then the pixels
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")
    )
    return path


# --- functions for nailseg.sandbox's child process to run (it imports this module by name) -------------


def child_echo(**kwargs) -> dict:
    print("what a library prints")  # goes to the log, not into the answer
    return kwargs


def child_allocate(gib: float) -> int:
    return len(bytearray(int(gib * 1024**3)))


def child_spin() -> None:
    while True:
        pass


def child_sleep(seconds: float, pid_file: str = "") -> None:
    """Sleep, after starting a grandchild that sleeps too (its pid in ``pid_file``, when given)."""
    if pid_file:
        grandchild = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])
        Path(pid_file).write_text(str(grandchild.pid))
    time.sleep(seconds)


def child_crash() -> None:
    ctypes.string_at(0)  # reads address 0: SIGSEGV, as a C library fed bad data would


def child_refuse(message: str) -> None:
    raise ValueError(message)


def child_bug() -> None:
    raise KeyError("a bug, not the data's fault")


def convert_test_photos(out: Path, valid_fraction: float = 0.34) -> Path:
    """The test photos converted as `nailseg convert` would (train.json, valid.json) into ``out``."""
    from nailseg.datasets import convert_dataset, save_report

    save_report(convert_dataset(DATA, valid_fraction=valid_fraction, seed=0, workers=1), out)
    return out


def weights_with(folder: Path, score_thr: float | None = None, name: str = "model") -> Path:
    """A copy of the bundled model whose config states ``score_thr`` (None: states none)."""
    import json
    import shutil

    weights = folder / f"{name}.safetensors"
    shutil.copyfile(BUNDLED_WEIGHTS, weights)
    config = json.loads(BUNDLED_WEIGHTS.with_suffix(".json").read_text())
    rcnn = config["model"]["test_cfg"]["rcnn"]
    rcnn.pop("default_score_thr", None)
    if score_thr is not None:
        rcnn["default_score_thr"] = score_thr
    weights.with_suffix(".json").write_text(json.dumps(config))
    return weights


def fake_checkpoint(path: Path, cfg: str | None = None, **meta) -> Path:
    """An mmengine-style checkpoint of the bundled model: its state dict and, as ``meta.cfg``, the
    default config as mmengine dumps it (or ``cfg``); ``meta`` adds other keys (``config``...)."""
    import torch
    from mmengine.config import Config

    from nailseg.paths import DEFAULT_CONFIG
    from nailseg.weights import load_state_dict

    cfg = cfg if cfg is not None else Config.fromfile(str(DEFAULT_CONFIG), import_custom_modules=False).pretty_text
    torch.save({"state_dict": load_state_dict(BUNDLED_WEIGHTS), "meta": {"cfg": cfg, **meta}}, path)
    return path


def ddp_probe(data: Path, work_dir: Path, out: Path, iters: int) -> None:
    """One worker of a test training on several processes (run by torchrun: ``support.py ddp-probe``).

    Trains through nailseg's own distributed path (``build_config(launcher="pytorch")`` and
    ``train``), with ``iters`` iterations of one photo per process, and leaves in ``out`` what the
    test compares: ``rank<R>.pt``, this rank's weights before and after training, and
    ``rank<R>.json``, the photos it trained on and the files it opened for writing in ``work_dir``
    (seen through Python's audit hook, so nothing in the training is changed to report them).
    """
    import json

    import torch
    from mmdet.registry import HOOKS
    from mmengine.hooks import Hook

    from nailseg.distributed import rank, world_size
    from nailseg.paths import DEFAULT_CONFIG
    from nailseg.train import build_config, train

    written: list[str] = []

    def audit(event: str, args: tuple) -> None:
        # "open" carries (path, mode, flags) for open() and os.open() alike.
        if event != "open" or not isinstance(args[0], str) or not args[0].startswith(str(work_dir)):
            return
        if args[2] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            written.append(Path(args[0]).name)

    sys.addaudithook(audit)
    weights: dict[str, dict] = {}
    photos: list[str] = []

    @HOOKS.register_module(force=True)
    class ProbeHook(Hook):
        def before_train(self, runner) -> None:
            weights["start"] = {k: v.detach().clone() for k, v in runner.model.module.state_dict().items()}

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            photos.extend(Path(s.img_path).name for s in data_batch["data_samples"])

        def after_train(self, runner) -> None:
            weights["end"] = {k: v.detach().clone() for k, v in runner.model.module.state_dict().items()}

    options = {"train_cfg.max_iters": iters, "train_cfg.val_interval": iters, "default_hooks.logger.interval": 1}
    cfg = build_config(
        DEFAULT_CONFIG,
        data,
        work_dir,
        batch_size=1,
        cfg_options=options,
        launcher="pytorch",
        world_size=world_size("pytorch"),
    )
    cfg.custom_hooks = [*cfg.get("custom_hooks", []), dict(type="ProbeHook")]
    train(cfg)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(weights, out / f"rank{rank()}.pt")
    (out / f"rank{rank()}.json").write_text(json.dumps({"photos": photos, "written": written}))


if __name__ == "__main__" and sys.argv[1:2] == ["ddp-probe"]:
    ddp_probe(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5]))
