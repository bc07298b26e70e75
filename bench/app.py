"""The app as one visitor and as three heavy visitors see it: round trip and server memory.

    python bench/app.py [--photos N] [--repeats R]

0. How long after start the page answers, against a bare ``python -c "import gradio"``.
1. ``/segment`` round trip against the model's own time for the same photos, in the same run (the
   model time is what the app reports in its status line), two ways, alternated photo by photo:
   over plain HTTP as a browser page or ``curl`` talks to the app (upload, call, the answer's
   event stream, then every file the answer names fetched), and through ``gradio_client``.
2. Server RSS before and after three visitors each segment one 50 MP photo at threshold 0.05.

Starts ``python app.py`` on a free loopback port with the bundled model (or ``$NAILSEG_WEIGHTS``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
PHOTOS = sorted((REPO / "tests" / "data" / "nails-roboflow" / "images").glob("*.jpg"))
CHROMIUM = Path("/usr/bin/chromium")  # Debian's; never a downloaded browser (the browser tests use these too)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def files_named(answer) -> list[str]:
    """The URLs of the files in an answer's JSON (a picture, a gallery's pictures, a download)."""
    if isinstance(answer, dict):
        own = [answer["url"]] if answer.get("url") else []
        return own + [url for value in answer.values() for url in files_named(value)]
    if isinstance(answer, list):
        return [url for value in answer for url in files_named(value)]
    return []


def http_segment(http, photo: Path, score_thr: float) -> tuple[float, list, int]:
    """One ``/segment`` call over plain HTTP (Gradio's ``/gradio_api/call`` API), with one open
    ``httpx.Client``: the photo uploaded, the call queued, its answer read from the event stream and
    every file it names fetched. Returns ``(seconds, answer, files fetched)``."""
    start = time.perf_counter()
    with photo.open("rb") as f:
        path = http.post("/gradio_api/upload", files={"files": (photo.name, f, "image/jpeg")}).json()[0]
    sent = {"path": path, "orig_name": photo.name, "meta": {"_type": "gradio.FileData"}}
    event_id = http.post("/gradio_api/call/segment", json={"data": [sent, score_thr]}).json()["event_id"]
    event, answer = None, None
    with http.stream("GET", f"/gradio_api/call/segment/{event_id}") as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.partition(":")[2].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                answer = json.loads(line.partition(":")[2])
                break
    if event != "complete":
        raise RuntimeError(f"/segment answered {event}: {answer}")
    urls = files_named(answer)
    for url in urls:
        http.get(url).raise_for_status()
    return time.perf_counter() - start, answer, len(urls)


def model_seconds(status: str) -> float:
    return float(re.search(r"model time ([\d.]+) s", status)[1])


SHOWN = """([before, name]) => {
    const overlay = document.querySelector('#overlay img');
    const status = document.querySelector('#segment-status').innerText;
    const pictures = [...document.querySelectorAll('#overlay img, #crops img')];
    return overlay && overlay.src !== before && status.includes(name) && status.includes('model time')
        && pictures.every((img) => img.complete && img.naturalWidth > 0);
}"""


UPLOADED = """(old) => {
    const img = document.querySelector('#photo img');
    return img && img.src !== old && img.complete;
}"""
POLL_MS = 10  # the page is checked every 10 ms (each check is a little CPU taken from the two cores the server has)


def src(page, selector: str) -> str:
    """The ``src`` of the first picture ``selector`` finds on the page ('' if none)."""
    return page.locator(selector).first.get_attribute("src") if page.locator(selector).count() else ""


def browser_segment(url: str, photos: list[Path], repeats: int) -> tuple[list[float], list[float]]:
    """Each photo dropped on the page in Chromium (``/usr/bin/chromium``), then timed from the click
    on Segment until the overlay and every crop are drawn. Returns ``(seconds, model seconds)``."""
    from playwright.sync_api import sync_playwright

    times, model_times = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(120_000)
        page.goto(url)
        segment = page.get_by_role("button", name="Segment", exact=True)
        for _ in range(repeats):
            for photo in photos:
                shown = src(page, "#photo img")
                page.locator("#photo input[type=file]").set_input_files(str(photo))
                page.wait_for_function(UPLOADED, arg=shown)
                before = src(page, "#overlay img")
                start = time.perf_counter()
                segment.click()
                page.wait_for_function(SHOWN, arg=[before, photo.name], polling=POLL_MS)
                times.append(time.perf_counter() - start)
                model_times.append(model_seconds(page.locator("#segment-status").inner_text()))
        browser.close()
    return times, model_times


def rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text)[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=len(PHOTOS), help="test photos to segment")
    parser.add_argument("--repeats", type=int, default=3, help="rounds over the photos")
    parser.add_argument("--browser", action="store_true", help="also time the page in Chromium (/usr/bin/chromium)")
    args = parser.parse_args()
    import httpx
    from gradio_client import Client, handle_file

    imports = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import gradio"], check=True, capture_output=True)
        imports.append(time.perf_counter() - t0)
    bare = statistics.median(imports)
    tmp = Path(tempfile.mkdtemp(prefix="nailseg-bench-app-"))
    port = free_port()
    env = {
        **os.environ,
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_TEMP_DIR": str(tmp / "gradio"),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
    }
    start = time.perf_counter()
    app = subprocess.Popen(
        [sys.executable, "app.py"], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                time.sleep(0.05)
        page = time.perf_counter() - start
        print(
            f"page answers {page:.2f} s after start; a bare `import gradio` takes {bare:.2f} s (median of 3): "
            f"+{page - bare:.2f} s"
        )
        client = Client(url, verbose=False)
        http = httpx.Client(base_url=url, timeout=120)
        client.predict(handle_file(str(PHOTOS[0])), 0.5, api_name="/segment")  # warm: model loaded
        http_segment(http, PHOTOS[0], 0.5)
        over_http, through_client, model_times, files = [], [], [], []
        for _ in range(args.repeats):
            for photo in PHOTOS[: args.photos]:
                seconds, answer, fetched = http_segment(http, photo, 0.5)
                over_http.append(seconds)
                files.append(fetched)
                model_times.append(model_seconds(answer[5]))
                t0 = time.perf_counter()
                status = client.predict(handle_file(str(photo)), 0.5, api_name="/segment")[5]
                through_client.append(time.perf_counter() - t0)
                model_times.append(model_seconds(status))
        mt = statistics.median(model_times)
        for how, times in (("over HTTP", over_http), ("through gradio_client", through_client)):
            rt = statistics.median(times)
            print(
                f"/segment round trip {how} {rt * 1000:.0f} ms, model alone {mt * 1000:.0f} ms "
                f"(medians of {len(times)} and {len(model_times)}): {rt / mt:.2f}x"
            )
        print(f"files fetched per answer over HTTP: median {statistics.median(files):.0f}, at most {max(files)}")
        if args.browser:
            times, browser_models = browser_segment(url, PHOTOS[: args.photos], args.repeats)
            rt, bm = statistics.median(times), statistics.median(browser_models)
            print(
                f"/segment in Chromium, click to overlay and crops drawn {rt * 1000:.0f} ms, model alone "
                f"{bm * 1000:.0f} ms (medians of {len(times)}): {rt / bm:.2f}x"
            )

        big = tmp / "50mp.jpg"
        Image.fromarray(np.asarray(Image.open(PHOTOS[0]).convert("RGB"))).resize((8660, 5773)).save(big, quality=90)
        before = rss_mb(app.pid)
        for _ in range(3):
            Client(url, verbose=False).predict(handle_file(str(big)), 0.05, api_name="/segment")
        time.sleep(1)
        after = rss_mb(app.pid)
        grown = after - before
        print(f"server RSS {before:.0f} MB -> {after:.0f} MB after three 50 MP sessions at 0.05 (+{grown:.0f} MB)")
    finally:
        app.terminate()
        app.wait(30)


if __name__ == "__main__":
    main()
