"""What an anonymous visitor of a Space can send: the app-side rows of issue 27, one test each.

One app process runs as a Space (``SPACE_ID`` set, no sign-in): every visitor is anonymous and
owner actions are off. Visitors use the upload route and the HTTP API with hand-made payloads,
as :mod:`test_security` does for issue 12. Each row's outcome is written down in docs/security.md.
"""

from __future__ import annotations

import json
import shutil
import zipfile

import pytest
from PIL import Image
from support import PHOTOS, AppProcess, OpenWatch, call, damaged_zip, dataset_zip, file_data, upload

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    app = AppProcess(tmp_path_factory.mktemp("space"), extra_env={"SPACE_ID": "someone/nailseg"})
    yield app
    app.stop()


# --- row 1: files come from uploads only ------------------------------------------------------------


def photo_args(payload):
    return [payload, 0.5]


def batch_args(payload):
    return [[payload], 0.5, 0.1, True, 224, "keep", False]


def zip_args(payload):
    return [payload, 0.2, False]


FILE_INPUTS = {"segment": photo_args, "segment_batch": batch_args, "convert_dataset": zip_args}


def hand_made_payloads(app: AppProcess, secret, tmp_path) -> dict[str, dict]:
    """Payloads naming ``secret`` (a photo outside Gradio's folders) in every way a visitor might."""
    link = app.upload_dir / "link" / "photo.jpg"  # a link inside Gradio's folder, to the file outside
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(secret)
    climb = app.upload_dir.joinpath(*[".."] * len(app.upload_dir.parts)).joinpath(*secret.parts[1:])
    return {
        "no-meta": {"path": str(secret), "orig_name": "photo.jpg"},
        "empty-meta": {"path": str(secret), "orig_name": "photo.jpg", "meta": {}},
        "wrong-type": {"path": str(secret), "orig_name": "photo.jpg", "meta": {"_type": "gradio.Other"}},
        "url": {"path": str(secret), "url": f"file://{secret}", "orig_name": "photo.jpg"},
        "url-only": {"path": None, "url": f"file://{secret}", "orig_name": "photo.jpg"},
        "dotdot": file_data(str(climb)),
        "dotdot-no-meta": {"path": str(climb), "orig_name": "photo.jpg"},
        "symlink": file_data(str(link)),
        "symlink-no-meta": {"path": str(link), "orig_name": "photo.jpg"},
    }


REFUSED = "Cannot use `photo.jpg`: it is not a file uploaded to this server"
# Payloads Gradio refuses itself before the app sees them: those marked as its own FileData with a
# path outside its folder, and anything but its own FileData in a gr.File. It answers a bare
# "Error" (its message, which names the path, is hidden from visitors).
GRADIO_REFUSES = {"dotdot", "symlink"}


@pytest.mark.parametrize("api", FILE_INPUTS)
def test_issue27_row1_a_file_input_takes_only_uploads(space, tmp_path, api):
    """Every file input refuses a payload naming a server file, however it is written, and never opens it."""
    secret = tmp_path / "secret.jpg"
    shutil.copyfile(PHOTOS[0], secret)
    watch = OpenWatch(secret)
    try:
        for kind, payload in hand_made_payloads(space, secret, tmp_path).items():
            event, answer = call(space, api, *FILE_INPUTS[api](payload))
            assert event == "error", (kind, answer)
            gradios = kind in GRADIO_REFUSES or api != "segment"
            assert answer["error"] is None if gradios else answer["error"].startswith(REFUSED), (kind, answer)
        assert watch.opens() == 0
    finally:
        watch.close()
    assert space.alive()


def test_issue27_row1_holds_after_an_example_replaced_the_photo_component(space, tmp_path):
    """Loading an example updates the photo component, and Gradio then keeps a new, plain gr.Image
    for that visitor's session: a check living in the component would be gone for the next call."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    secret = tmp_path / "secret.jpg"
    shutil.copyfile(PHOTOS[0], secret)
    watch = OpenWatch(secret)
    try:
        visitor = Client(space.url, verbose=False)
        visitor.predict(0, api_name="/load_example")  # the first example, into this session's photo
        with pytest.raises(AppError, match=REFUSED):
            visitor.predict({"path": str(secret), "orig_name": "photo.jpg"}, 0.5, api_name="/segment")
        assert watch.opens() == 0
    finally:
        watch.close()


@pytest.mark.parametrize("api", FILE_INPUTS)
def test_issue27_row1_answers_never_tell_what_exists_at_a_path(space, tmp_path, api):
    (tmp_path / "folder").mkdir()
    (tmp_path / "empty.jpg").write_bytes(b"")
    shutil.copyfile(PHOTOS[0], tmp_path / "photo.jpg")
    for payload_form in ({}, {"meta": {"_type": "gradio.FileData"}}):
        answers = set()
        for target in ["photo.jpg", "empty.jpg", "folder", "missing.jpg"]:
            payload = {"path": str(tmp_path / target), "orig_name": "photo.jpg", **payload_form}
            answers.add(json.dumps(call(space, api, *FILE_INPUTS[api](payload))))
        (answer,) = answers  # one answer, whatever is at the path
        assert '"error"' in answer


def test_issue27_row1_uploads_still_work_on_every_input(space, tmp_path):
    photo = file_data(upload(space, PHOTOS[0]), PHOTOS[0].name)
    for api, args in [("segment", photo_args(photo)), ("segment_batch", batch_args(photo))]:
        event, outputs = call(space, api, *args)
        assert event == "complete", (api, outputs)
    archive = dataset_zip(tmp_path / "d.zip", PHOTOS[:2])
    event, outputs = call(space, "convert_dataset", *zip_args(file_data(upload(space, archive), "d.zip")))
    assert event == "complete" and outputs[3]["photos"] == 2, outputs


# --- row 2: a visitor's dataset is converted out of the server's process ---------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "1e20"])
def test_issue27_row2_a_hostile_label_costs_one_answer_not_the_server(space, tmp_path, value):
    """pycocotools allocated without bound on these coordinates (an OOM kill, or a segfault when capped)."""
    archive = tmp_path / "hostile.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(PHOTOS[0], f"images/{PHOTOS[0].name}")
        zf.writestr(f"labels/{PHOTOS[0].stem}.txt", f"0 {value} {value} 0.5 0.5 0.2 0.9\n")
    event, answer = call(space, "convert_dataset", file_data(upload(space, archive), "hostile.zip"), 0.2, False)
    if event == "error":  # the child crashed or hit a limit: that visitor is told so
        assert answer["error"].startswith("Not converted: the conversion of `hostile.zip`"), answer
    else:  # the line was found wrong where it was parsed: a listed problem
        assert event == "complete" and answer[3]["problems"], answer
    assert space.alive()
    event, outputs = call(space, "segment", file_data(upload(space, PHOTOS[0]), PHOTOS[0].name), 0.5)
    assert event == "complete" and len(outputs[2]) > 0  # the same server answers the next visitor, with nails


# --- the degraded rows: a clear message each, nothing of the server in what a visitor downloads -----------


def test_issue27_the_coco_download_names_no_server_folder(space, tmp_path):
    archive = dataset_zip(tmp_path / "d.zip", PHOTOS[:2])
    event, outputs = call(space, "convert_dataset", file_data(upload(space, archive), "d.zip"), 0.5, False)
    assert event == "complete", outputs
    coco = zipfile.ZipFile(outputs[2]["path"])
    assert json.loads(coco.read("train.json"))["info"] == {"description": "NailSeg instances", "layout": "yolo"}
    for name in coco.namelist():
        assert str(space.tmp) not in coco.read(name).decode(), name


def test_issue27_a_damaged_zip_lists_its_damaged_photos(space, tmp_path):
    archive = damaged_zip(tmp_path / "damaged.zip", PHOTOS[:3])
    event, outputs = call(space, "convert_dataset", file_data(upload(space, archive), "damaged.zip"), 0.0, False)
    assert event == "complete", outputs
    problems = {p["file"].rsplit("/", 1)[-1]: p["problem"] for p in outputs[3]["problems"]}
    assert problems[PHOTOS[0].name] == "cannot be read from the zip: its checksum does not match (a damaged download?)"
    assert problems[PHOTOS[1].name] == "cannot be read from the zip: its compressed data are corrupt"
    assert outputs[3]["photos"] == 1


@pytest.mark.parametrize("threshold", ['"abc"', "[0.5]", '{"value": 0.5}', "null", "true"])
def test_issue27_a_threshold_that_is_not_a_number_is_named(space, threshold):
    photo = json.dumps(file_data(upload(space, PHOTOS[0]), PHOTOS[0].name))
    event, answer = call(space, "segment", raw_body=f'{{"data": [{photo}, {threshold}]}}')
    assert event == "error" and answer["error"] == "Score threshold must be a number from 0 to 1.", answer


def test_issue27_a_photo_too_thin_for_a_nail_is_named(space, tmp_path):
    """A 1x5000 px photo crashed the model's resize (cv2.error): a bare "Error"."""
    thin = tmp_path / "thin.png"
    Image.new("RGB", (1, 5000)).save(thin)
    event, answer = call(space, "segment", file_data(upload(space, thin), "thin.png"), 0.5)
    expected = "Cannot use `thin.png`: the photo is 1x5000 px: one side is more than 20 times the other."
    assert event == "error" and answer["error"] == expected, answer


# --- row 6: fair shares ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_issue27_row6_one_address_cannot_evict_the_others_kept_photos(space, tmp_path):
    """One client sent 36 segments in 11 s and evicted every other visitor's kept photo (one 256 MB store)."""
    from gradio_client import Client, handle_file

    big = tmp_path / "big.jpg"  # kept at 1,600 px: 7.7 MB a photo
    Image.open(PHOTOS[0]).convert("RGB").resize((1600, 1600)).save(big, quality=90)
    visitor = Client(space.url, verbose=False, headers={"x-forwarded-for": "151.101.20.20"})
    visitor.predict(handle_file(str(big)), 0.5, api_name="/segment")
    flood = file_data(upload(space, big), "big.jpg")
    for _ in range(40):  # 40 sessions from one address: 300 MB of photos, more than the whole store
        assert call(space, "segment", flood, 0.5)[0] == "complete"
    status = visitor.predict(0.6, 0.1, True, 224, "keep", False, api_name="/render")[5]  # no new upload
    assert "found" in status and "big.jpg" in status
