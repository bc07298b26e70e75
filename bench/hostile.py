"""Issue 27's heaviest inputs against the app: the worst dataset zip, and two 59 MP PNGs at once.

    python bench/hostile.py [--polygons 500] [--segments 12]

1. The dataset zip is a few hundred bytes: a PNG header claiming 7680 x 7680 pixels (59 MP, under the 60 MP limit;
no pixel data) and a YOLO label file with that many polygons, each covering most of the photo,
so that every polygon is rasterised at 59 MP. Issue 27 measured 66 s of CPU for it, inside the
server, and other visitors' ``/segment`` median going from 0.33 to 0.93 s meanwhile.

Prints the conversion's answer and wall time (it runs in a child process with limits, see
``nailseg/dataset_zip.py``), and the ``/segment`` round trip's median with the server idle and
while the conversion runs.

2. Two visitors send a 59 MP PNG (188 KB each, grey) to ``/segment`` at once: the server's RSS
before and at its peak (sampled every 20 ms), the two model runs included. Issue 27 measured
1.6 -> 3.5 GB when PNGs were decoded whole and copied before shrinking.

Starts ``python app.py`` as the tests do (``tests/support.py``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from support import PHOTOS, AppProcess, call, file_data, grey_png, png_header_only, rss_mb, upload  # noqa: E402


def hostile_zip(path: Path, polygons: int) -> Path:
    """The zip described in the module's docstring."""
    header = png_header_only(path.with_suffix(".png"), 7680, 7680)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(header, "images/big.png")
        zf.writestr("labels/big.txt", "0 0.05 0.05 0.95 0.05 0.95 0.95 0.05 0.95\n" * polygons)
    return path


def round_trips(app: AppProcess, count: int, until: threading.Event | None = None) -> list[float]:
    """``/segment`` round trips over the test photos: ``count`` of them, or as many as fit before ``until``."""
    photos = [file_data(upload(app, p), p.name) for p in PHOTOS]
    times: list[float] = []
    while len(times) < count or (until is not None and not until.is_set()):
        start = time.perf_counter()
        event, _ = call(app, "segment", photos[len(times) % len(photos)], 0.5)
        assert event == "complete"
        times.append(time.perf_counter() - start)
        if until is None and len(times) >= count:
            break
    return times


def peak_rss_mb(app: AppProcess, work) -> tuple[float, float]:
    """The server's RSS before ``work()`` and its peak while it runs (sampled every 20 ms)."""
    before, peak, done = rss_mb(app.proc.pid), [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb(app.proc.pid))
            done.wait(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        work()
    finally:
        done.set()
        sampler.join()
    return before, peak[0]


def two_pngs_at_once(app: AppProcess, png: Path) -> None:
    payloads = [file_data(upload(app, png), f"visitor{k}.png") for k in range(2)]
    visitors = [threading.Thread(target=call, args=(app, "segment", p, 0.5)) for p in payloads]
    for visitor in visitors:
        visitor.start()
    for visitor in visitors:
        visitor.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--polygons", type=int, default=500, help="polygons in the label file")
    parser.add_argument("--segments", type=int, default=12, help="/segment calls with the server idle")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="nailseg-bench-hostile-"))
    archive = hostile_zip(tmp / "hostile.zip", args.polygons)
    app = AppProcess(tmp / "app")
    try:
        round_trips(app, 2)  # the model loaded, warm
        idle = round_trips(app, args.segments)
        done, answer = threading.Event(), {}

        def convert() -> None:
            start = time.perf_counter()
            answer["result"] = call(app, "convert_dataset", file_data(upload(app, archive), archive.name), 0.2, False)
            answer["seconds"] = time.perf_counter() - start
            done.set()

        worker = threading.Thread(target=convert)
        worker.start()
        busy = round_trips(app, 1, until=done)
        worker.join()
        event, payload = answer["result"]
        told = payload.get("error") if isinstance(payload, dict) else f"{payload[3]['photos']} photos converted"
        print(f"zip of {archive.stat().st_size} bytes ({args.polygons} polygons on a 59 MP photo header)")
        print(f"conversion: {event} after {answer['seconds']:.1f} s: {told}")
        print(
            f"/segment median {statistics.median(idle):.2f} s idle ({len(idle)} calls), "
            f"{statistics.median(busy):.2f} s during the conversion ({len(busy)} calls); server alive: {app.alive()}"
        )
        png = grey_png(tmp / "59mp.png", 7680, 7680)
        before, peak = peak_rss_mb(app, lambda: two_pngs_at_once(app, png))
        print(f"two 59 MP PNGs at once: server RSS {before:.0f} MB -> {peak:.0f} MB at peak (+{peak - before:.0f} MB)")
    finally:
        app.stop()


if __name__ == "__main__":
    main()
