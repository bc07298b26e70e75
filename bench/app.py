"""The app as one visitor and as three heavy visitors see it: round trip and server memory.

    python bench/app.py [--photos N] [--repeats R]

0. How long after start the page answers, against a bare ``python -c "import gradio"``.
1. ``/segment`` round trip through gradio_client against the model's own time for the same photos,
   in the same run (the model time is what the app reports in its status line).
2. Server RSS before and after three visitors each segment one 50 MP photo at threshold 0.05.

Starts ``python app.py`` on a free loopback port with the bundled model (or ``$NAILSEG_WEIGHTS``).
"""

from __future__ import annotations

import argparse
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text)[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=len(PHOTOS), help="test photos to segment")
    parser.add_argument("--repeats", type=int, default=3, help="rounds over the photos")
    args = parser.parse_args()
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
        client.predict(handle_file(str(PHOTOS[0])), 0.5, api_name="/segment")  # warm: model loaded
        round_trips, model_times = [], []
        for _ in range(args.repeats):
            for photo in PHOTOS[: args.photos]:
                t0 = time.perf_counter()
                status = client.predict(handle_file(str(photo)), 0.5, api_name="/segment")[5]
                round_trips.append(time.perf_counter() - t0)
                model_times.append(float(re.search(r"model time ([\d.]+) s", status)[1]))
        rt, mt = statistics.median(round_trips), statistics.median(model_times)
        print(
            f"/segment round trip {rt * 1000:.0f} ms, model alone {mt * 1000:.0f} ms (median of "
            f"{len(round_trips)}): {rt / mt:.2f}x"
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
