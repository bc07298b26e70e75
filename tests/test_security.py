"""The app as a hostile visitor sees it: the upload route and the API, one test per row of issue 12.

Three app processes: a private one (loopback: whoever opens it is its owner), a public one (a
Space without sign-in: owner actions are off) and one behind Gradio's login (an owner and a guest).
Each row's outcome is written down in docs/security.md.
"""

from __future__ import annotations

import json
import os
import signal
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import PHOTOS, AppProcess, call, dataset_zip, file_data, png_header_only, rss_mb, upload, weights_spec

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def private(tmp_path_factory):
    app = AppProcess(tmp_path_factory.mktemp("private"))
    yield app
    app.stop()


@pytest.fixture(scope="module")
def public(tmp_path_factory):
    """A Space without Hugging Face sign-in and without NAILSEG_AUTH: owner actions are off."""
    app = AppProcess(tmp_path_factory.mktemp("public"), extra_env={"SPACE_ID": "someone/nailseg"})
    yield app
    app.stop()


# --- rows 1, 2, 6, 12: the server's model and training are the owner's; nothing runs ----------------


OWNER_ACTIONS = [
    ("switch_weights", lambda path: ["/tmp/x.safetensors"]),
    ("train_start", lambda path: [None, "any", None, 0, 4, 0, f"load_from={path}", 1]),
    ("train_stop", lambda path: []),
    ("train_export", lambda path: []),
    ("train_use_model", lambda path: []),
    ("train_push", lambda path: ["me/nails", "hf_token", False]),
]


@pytest.mark.parametrize(("api", "args"), OWNER_ACTIONS, ids=[a for a, _ in OWNER_ACTIONS])
def test_owner_actions_are_refused_on_a_public_server(public, tmp_path, api, args):
    evil = tmp_path / "evil.pth"
    evil.write_bytes(b"not even a pickle")
    event, message = call(public, api, *args(upload(public, evil)))
    assert event == "error" and "for the owner of this server" in str(message), message


def test_row1_uploaded_python_is_never_run_as_a_config(private, tmp_path):
    """Even the owner's weights field takes no code: .safetensors with a JSON config of known types only."""
    marker = tmp_path / "visitor-code-ran"  # where the code would leave its trace, were it run
    code = f"import pathlib; pathlib.Path({str(marker)!r}).touch()\nmodel = dict(type='MaskRCNN')\n"
    config = tmp_path / "evil.py"
    config.write_text(code)
    event, message = call(private, "switch_weights", upload(private, config))
    assert event == "error" and "must be a .safetensors file" in str(message)
    # The same code beside weights (a visitor cannot place files side by side; the owner could).
    weights = tmp_path / "evil.safetensors"
    weights.write_bytes(Path(weights_spec()).read_bytes())
    event, message = call(private, "switch_weights", str(weights))
    assert event == "error" and "evil.json not found" in str(message)
    # A JSON config naming something to import (mmengine's registry would import any dotted name).
    weights.with_suffix(".json").write_text(
        json.dumps({"model": {"type": "os.system", "command": f"touch {marker}"}, "test_pipeline": []})
    )
    event, message = call(private, "switch_weights", str(weights))
    assert event == "error" and "not one this project builds" in str(message)
    assert not marker.exists()


def test_row2_no_path_or_pickle_reaches_training(private, tmp_path):
    from gradio_client import Client, handle_file

    from nailseg.tabs.train import CONFIGS, FROM_CONFIG

    stats, *_ = Client(private.url, verbose=False).predict(
        handle_file(str(dataset_zip(tmp_path / "kept.zip", PHOTOS[:3]))), 0.34, True, api_name="/convert_dataset"
    )
    (name,) = [p.name for p in private.converted_dir.glob("kept-*")]
    evil = tmp_path / "evil.pth"
    evil.write_bytes(b"a pickle would be here")
    evil_path = upload(private, evil)
    config = next(iter(CONFIGS))
    for data, start_from, overrides, refusal in [
        (evil_path, FROM_CONFIG, "", "Pick a converted dataset"),
        (name, evil_path, "", "Pick the weights to start from"),
        (name, FROM_CONFIG, f"load_from={evil_path}", "KEY=VALUE with KEY one of"),
        (name, FROM_CONFIG, "custom_imports.imports=['os']", "KEY=VALUE with KEY one of"),
    ]:
        event, message = call(private, "train_start", config, data, start_from, 0, 4, 0, overrides, 1)
        assert event == "error" and refusal in str(message), message
    event, status = call(private, "train_status")
    assert event == "complete" and "No training yet" in status[0]


@pytest.mark.parametrize(
    "spec",
    [
        "hf://o/r/[click me](https://evil.example)/m.safetensors",
        "hf://o/r/`x`\n# Hacked.safetensors",
        "hf://o/r/../../etc/passwd.safetensors",
    ],
)
def test_row6_weights_specs_are_checked_before_anything_happens(private, spec):
    event, message = call(private, "switch_weights", spec)
    assert event == "error" and "expected hf://owner/repo[@revision]/file.safetensors" in str(message)


def test_row12_the_weights_field_reveals_no_server_files(private, public):
    answers = {path: call(private, "switch_weights", path) for path in ("/etc/shadow", "/etc", "/nonexistent")}
    assert len({str(a) for a in answers.values()}) == 3  # each names only what it was given...
    assert all("must be a .safetensors file" in str(m) for _, m in answers.values())  # ...for the same reason
    public_answers = {str(call(public, "switch_weights", path)[1]) for path in ("/etc/shadow", "/etc", "/nonexistent")}
    assert len(public_answers) == 1  # a visitor learns nothing at all


# --- row 3: memory per visitor is bounded -------------------------------------------------------------


@pytest.mark.slow
def test_row3_three_50mp_sessions_keep_memory_bounded(private, tmp_path):
    from gradio_client import Client, handle_file

    rgb = np.asarray(Image.open(PHOTOS[0]).convert("RGB"))
    photo = tmp_path / "big.jpg"
    Image.fromarray(rgb).resize((8660, 5773)).save(photo, quality=90)  # 50 MP
    client = Client(private.url, verbose=False)
    client.predict(handle_file(str(PHOTOS[1])), 0.5, api_name="/segment")  # model loaded, warm
    before = rss_mb(private.proc.pid)
    for _ in range(3):  # three visitors, each with its own session
        Client(private.url, verbose=False).predict(handle_file(str(photo)), 0.05, api_name="/segment")
    time.sleep(1)
    grown = rss_mb(private.proc.pid) - before
    assert grown <= 600, f"RSS grew by {grown:.0f} MB"


# --- row 4, 5: a request touches only its own files ----------------------------------------------------


def test_row4_identical_simultaneous_uploads_all_answered(private):
    from gradio_client import Client, handle_file

    def one(_):
        return Client(private.url, verbose=False).predict(handle_file(str(PHOTOS[2])), 0.5, api_name="/segment")[2]

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(one, range(4)))
    assert len(answers) == 4 and all(a == answers[0] for a in answers)


def test_row5_another_sessions_file_is_not_deleted(private):
    event, outputs = call(private, "segment", file_data(upload(private, PHOTOS[0])), 0.5)
    assert event == "complete"
    zip_server_path = outputs[4]["path"]
    assert Path(zip_server_path).is_file()
    event, message = call(private, "segment", file_data(zip_server_path, "photo.jpg"), 0.5)
    assert event == "error" and "Cannot use `photo.jpg`" in str(message)
    assert Path(zip_server_path).is_file()  # still there for its owner


# --- rows 7, 8, 9: dataset zips ------------------------------------------------------------------------


def test_row7_a_huge_photo_header_is_a_listed_problem(private, tmp_path):
    from gradio_client import Client, handle_file

    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    png_header_only(root / "images" / "huge.png", 13000, 13000)
    (root / "labels" / "huge.txt").write_text("0 0.1 0.1 0.9 0.1 0.9 0.9\n" * 4)
    with zipfile.ZipFile(tmp_path / "small.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for file in root.rglob("*.*"):
            zf.write(file, file.relative_to(root).as_posix())
    assert (tmp_path / "small.zip").stat().st_size < 1000
    before = rss_mb(private.proc.pid)
    client = Client(private.url, verbose=False)
    stats, _, _, summary = client.predict(
        handle_file(str(tmp_path / "small.zip")), 0.2, False, api_name="/convert_dataset"
    )
    assert summary["problems"] == [
        {"file": "images/huge.png", "problem": "the photo is 13000x13000 (169 MP); the limit is 60 MP"}
    ]
    assert rss_mb(private.proc.pid) - before < 200


def test_row8_a_bomb_split_into_members_is_refused(private, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    with zipfile.ZipFile(tmp_path / "split.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for k in range(20):
            with zf.open(f"images/{k}.png", "w") as member:
                for _ in range(49):
                    member.write(bytes(1024**2))
    with pytest.raises(AppError, match="Zip refused: zip bomb: the zip expands"):
        Client(private.url, verbose=False).predict(
            handle_file(str(tmp_path / "split.zip")), 0.2, True, api_name="/convert_dataset"
        )
    assert not list(private.converted_dir.glob("split-*"))  # kept nothing


def test_row9_bomb_photos_and_odd_names_are_listed_and_nothing_leaks(private, tmp_path):
    from gradio_client import Client, handle_file

    archive = dataset_zip(tmp_path / "odd.zip", PHOTOS[:2])
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("nails/images/bomb.png", png_header_only(tmp_path / "b.png", 20000, 20000).read_bytes())
        zf.writestr("nails/labels/bomb.txt", "0 0.1 0.1 0.9 0.1 0.9 0.9\n")
        zf.writestr("nails/labels/" + "n" * 300 + ".txt", "0 0.1 0.1 0.9 0.1 0.9 0.9\n")
        zf.writestr("nails/images\\" + PHOTOS[0].name, b"a second file of the same name")
    stats, _, _, summary = Client(private.url, verbose=False).predict(
        handle_file(str(archive)), 0.0, True, api_name="/convert_dataset"
    )
    problems = {p["file"].rsplit("/", 1)[-1][:20]: p["problem"] for p in summary["problems"]}
    assert "decompression-bomb" in problems["bomb.png"]
    assert "longer than 255 bytes" in problems["n" * 20]
    assert "clashes" in problems["images\\" + PHOTOS[0].name[:13]]
    assert summary["photos"] == 2
    (kept,) = private.converted_dir.glob("odd-*")
    assert (kept / "train.json").is_file()


# --- rows 10, 11 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_row10_non_finite_thresholds_are_refused(private, raw):
    photo = json.dumps(file_data(upload(private, PHOTOS[0])))
    event, message = call(private, "segment", raw_body=f'{{"data": [{photo}, {raw}]}}')
    # Gradio's slider refuses infinities itself; NaN passes its range check and reaches ours.
    clear = ("Score threshold must be a number from 0 to 1", "than maximum value 1.0", "than minimum value 0.05")
    assert event == "error" and any(text in str(message) for text in clear), message


def test_row11_sigterm_leaves_no_scratch_folder(tmp_path):
    from gradio_client import Client, handle_file

    app = AppProcess(tmp_path)
    try:
        Client(app.url, verbose=False).predict(handle_file(str(PHOTOS[0])), 0.5, api_name="/segment")
        assert list(app.tmp_dir.glob("nailseg-app-*"))
        os.kill(app.proc.pid, signal.SIGTERM)
        assert app.proc.wait(60) == 0
        assert list(app.tmp_dir.glob("nailseg-app-*")) == []
    finally:
        app.stop()


def test_scratch_of_a_killed_app_goes_at_the_next_start(tmp_path):
    stale = tmp_path / "tmp" / "nailseg-app-999999999-abc"  # no such pid
    stale.mkdir(parents=True)
    app = AppProcess(tmp_path)
    try:
        assert not stale.exists()
    finally:
        app.stop()


# --- Gradio's login: the owner may, a guest may not ------------------------------------------------------


def test_gradio_login_owner_and_guest(tmp_path):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    env = {"GRADIO_SERVER_NAME": "0.0.0.0", "NAILSEG_AUTH": "owner:s3cret,guest:guest", "NAILSEG_OWNERS": "owner"}
    app = AppProcess(tmp_path, extra_env=env)
    try:
        guest = Client(app.url, auth=("guest", "guest"), verbose=False)
        with pytest.raises(AppError, match="for the owner of this server"):
            guest.predict(weights_spec(), api_name="/switch_weights")
        owner = Client(app.url, auth=("owner", "s3cret"), verbose=False)
        assert Path(weights_spec()).name in owner.predict(weights_spec(), api_name="/switch_weights")
    finally:
        app.stop()
