"""The app in a real browser (Debian's chromium driven by Playwright): what a user clicks.

Each tab's test also takes a screenshot, into a temporary folder; ``scripts/screenshots.sh`` runs
these tests with ``NAILSEG_SCREENSHOTS=docs/screenshots`` to refresh the committed ones.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import pytest
from support import PHOTOS, dataset_zip, load_bench, traversal_zip

BENCH = load_bench("app")  # one Chromium (path and flags) for these tests and bench/app.py --browser
CHROMIUM, ARGS = BENCH.CHROMIUM, BENCH.CHROMIUM_ARGS
TIMEOUT_MS = 120_000  # two shared CPU cores: a first model run can take a while

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's /usr/bin/chromium (apt-get install chromium)"),
    pytest.mark.timeout(900),
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, app):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app.url)
    page.get_by_role("button", name="Segment", exact=True).wait_for()
    yield page
    context.close()


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


@pytest.fixture
def screenshot(tmp_path):
    """Save a full-page screenshot as NAME.png (see the module's docstring for where) and return it."""
    folder = Path(os.environ.get("NAILSEG_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)

    def take(page, name: str) -> Path:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 10_000  # a real page, not a blank one
        return path

    return take


def download(page, container: str, dest: Path) -> Path:
    with page.expect_download() as info:
        page.locator(f"{container} a[download]").first.click()
    info.value.save_as(dest)
    return dest


def test_segment_a_photo(page, tmp_path, screenshot):
    photo = PHOTOS[0]
    page.locator("#photo input[type=file]").set_input_files(str(photo))
    page.get_by_role("button", name="Segment", exact=True).click()
    status = page.locator("#segment-status")
    status.get_by_text(re.compile(r"nail\(s\) found|No nails found")).wait_for()
    found = re.search(r"(\d+) nail\(s\) found", status.inner_text())
    count = int(found.group(1)) if found else 0
    assert page.locator("#overlay img").first.get_attribute("src")
    if count:
        page.locator("#crops img").first.wait_for()
        assert page.locator("#crops img").count() >= min(count, 1)
    archive = download(page, "#segment-zip", tmp_path / "nails.zip")
    names = set(zipfile.ZipFile(archive).namelist())
    assert {f"{photo.stem}_overlay.png", "predictions.json", f"masks/{photo.stem}_all.png"} <= names
    assert sum(n.endswith("_cutout.png") for n in names) == count
    screenshot(page, "segment")


def test_an_example_photo_twice(page):
    for _ in range(2):  # in two sessions: the example's file must survive the first answer
        page.locator("#examples button.gallery-item").first.click()
        # The example reaches the photo field through a server round trip: a click on Segment before
        # it shows would send no photo (and get "Add a photo first").
        page.locator("#photo img").first.wait_for()
        page.get_by_role("button", name="Segment", exact=True).click()
        page.locator("#segment-status").get_by_text(re.compile(r"model time")).wait_for()
        page.reload()
        page.get_by_role("button", name="Segment", exact=True).wait_for()


def test_a_file_that_is_not_a_photo_gets_a_message(page, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    page.locator("#photo input[type=file]").set_input_files(str(bad))
    page.get_by_role("button", name="Segment", exact=True).click()
    page.get_by_text(re.compile("Cannot use `notes.jpg`: not a readable image")).first.wait_for()
    # and it keeps serving: a real photo afterwards
    page.get_by_role("button", name="Clear").first.click()
    page.locator("#photo input[type=file]").set_input_files(str(PHOTOS[1]))
    page.get_by_role("button", name="Segment", exact=True).click()
    page.locator("#segment-status").get_by_text(re.compile(r"nail\(s\) found|No nails found")).wait_for()


def test_convert_a_dataset_zip(page, tmp_path, screenshot):
    open_tab(page, "Dataset → COCO")
    page.locator("#dataset-zip input[type=file]").set_input_files(str(dataset_zip(tmp_path / "nails.zip")))
    page.get_by_role("button", name="Convert", exact=True).click()
    page.locator("#dataset-stats").get_by_text(f"{len(PHOTOS)} photos").wait_for()
    archive = download(page, "#coco-zip", tmp_path / "coco.zip")
    assert set(zipfile.ZipFile(archive).namelist()) == {"train.json", "valid.json", "manifest.csv"}
    screenshot(page, "dataset")


def test_a_zip_with_dotdot_is_refused(page, tmp_path):
    open_tab(page, "Dataset → COCO")
    page.locator("#dataset-zip input[type=file]").set_input_files(str(traversal_zip(tmp_path / "bad.zip")))
    page.get_by_role("button", name="Convert", exact=True).click()
    page.get_by_text(re.compile(r"Zip refused: path leaving the folder")).first.wait_for()


def test_train_tab(page, screenshot):
    open_tab(page, "Train")
    page.locator("#train-device").get_by_text(re.compile(r"No GPU here|GPU: ")).wait_for()
    page.locator("#train-progress-text").get_by_text("No training yet.").wait_for()
    assert "the config's own start" in page.locator("#train-start-from input").input_value()
    screenshot(page, "train")


def load_weights(page, weights: Path) -> None:
    """The owner loads other weights for everyone (the Segment tab's "Weights" accordion)."""
    field = page.locator("#weights-spec textarea")
    if not field.is_visible():
        page.get_by_text("Weights (owner only)").click()
    field.fill(str(weights))
    page.get_by_role("button", name="Load weights for everyone").click()
    page.locator("#weights-status").get_by_text(
        re.compile(re.escape(weights.name) + ".*default score threshold")
    ).wait_for()


def slider_shows(page, value: str) -> None:
    page.wait_for_function(f"document.querySelector('#score input[type=number]')?.value === '{value}'")


def test_the_threshold_slider_follows_the_model(page, tmp_path):
    """The slider starts at the model's own threshold and moves with the weights the owner loads."""
    import json
    import shutil

    from nailseg.weights import BUNDLED_WEIGHTS

    config = json.loads(BUNDLED_WEIGHTS.with_suffix(".json").read_text())
    slider_shows(page, f"{config['model']['test_cfg']['rcnn']['default_score_thr']:g}")
    other = tmp_path / "other.safetensors"
    shutil.copyfile(BUNDLED_WEIGHTS, other)
    config["model"]["test_cfg"]["rcnn"]["default_score_thr"] = 0.6
    other.with_suffix(".json").write_text(json.dumps(config))
    try:
        load_weights(page, other)
        slider_shows(page, "0.6")
        page.reload()  # a new visitor's page starts there too
        slider_shows(page, "0.6")
    finally:  # the module's app serves the other tests with the bundled model
        load_weights(page, BUNDLED_WEIGHTS)


def test_the_login_page_works_behind_the_login_guard(browser, tmp_path):
    """With Gradio's login on, the middleware closes every route but the login page's: it still logs in."""
    from support import AppProcess

    app = AppProcess(tmp_path, extra_env={"NAILSEG_AUTH": "owner:s3cret", "GRADIO_SERVER_NAME": "0.0.0.0"})
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(app.url)
        page.get_by_label("username").fill("owner")
        page.get_by_label("password").fill("s3cret")
        page.get_by_role("button", name="Login").click()
        page.get_by_role("button", name="Segment", exact=True).wait_for()
    finally:
        context.close()
        app.stop()


def test_a_labelling_tools_coco_export_converts_then_trains_from_the_train_tab(browser, tmp_path_factory):
    """Issue 23: CVAT's "COCO 1.0" export, kept on the server by its owner, trains one iteration
    from the bundled model through the Train tab (in an app of its own: the other tests' app
    shows no training run).

    The app's folder has a short name: the training's data loader passes tensors to its worker
    through a Unix socket under the app's ``$TMPDIR``, and a path over 107 bytes fails there (the
    training then waits for its worker forever)."""
    tmp_path = tmp_path_factory.mktemp("t")
    from support import COCO_FIXTURES, AppProcess, folder_zip, label_count

    from nailseg.jobs import TrainingJobs
    from nailseg.tabs.train import FROM_BUNDLED
    from nailseg.weights import BUNDLED_WEIGHTS

    photos = sorted((COCO_FIXTURES / "coco-cvat-1.0" / "images" / "default").iterdir())
    archive = folder_zip(COCO_FIXTURES / "coco-cvat-1.0", tmp_path / "cvat-task.zip")
    app = AppProcess(tmp_path / "app")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(app.url)
        open_tab(page, "Dataset → COCO")
        page.locator("#dataset-zip input[type=file]").set_input_files(str(archive))
        page.get_by_label(re.compile("Keep the photos on the server")).check()
        page.get_by_role("button", name="Convert", exact=True).click()
        stats = page.locator("#dataset-stats")
        stats.get_by_text(f"{len(photos)} photos, {sum(map(label_count, photos))} nails", exact=True).wait_for()
        assert "layout: coco" in stats.inner_text() and "Kept on the server" in stats.inner_text()

        open_tab(page, "Train")
        page.locator("#train-data-refresh").click()  # the kept dataset joins the list
        # Chosen by hand: a checkout's own ./data datasets are in the list too, and a choice the
        # page already made is kept on refresh.
        page.locator("#train-data input").click()
        page.get_by_role("option", name=re.compile(r"^cvat-task-")).click()
        page.wait_for_function("document.querySelector('#train-data input')?.value.startsWith('cvat-task-')")
        start_from = page.locator("#train-start-from input")
        start_from.fill(FROM_BUNDLED)
        start_from.press("Enter")
        page.get_by_label(re.compile("Config overrides")).fill("train_cfg.max_iters=1")
        page.locator("#train-start").click()
        page.locator("#train-progress-text").get_by_text("finished: iteration 1 / 1").wait_for(timeout=600_000)
        status = TrainingJobs(app.tmp / "work_dirs").status()
        assert status.argv[status.argv.index("--load-from") + 1] == str(BUNDLED_WEIGHTS)
        assert status.checkpoint and Path(status.checkpoint).is_file()
    finally:
        context.close()
        app.stop()
