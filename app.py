#!/usr/bin/env python
"""NailSeg web app: segment fingernails, convert datasets to COCO, train.

Serve with ``python app.py``; host and port come from ``GRADIO_SERVER_NAME`` and
``GRADIO_SERVER_PORT`` (default 127.0.0.1:7860). Weights: ``$NAILSEG_WEIGHTS`` (local path or
``hf://owner/repo[@revision]/file.safetensors``), else the bundled model.
"""

from __future__ import annotations

import os
from pathlib import Path

import gradio as gr

from nailseg.serving import STORE
from nailseg.tabs.dataset import dataset_tab
from nailseg.tabs.segment import segment_tab

try:  # the Train tab is optional (and lands separately)
    from nailseg.tabs.train import train_tab
except ImportError:
    train_tab = None

EXAMPLES = sorted(str(p) for p in (Path(__file__).parent / "examples").glob("*.jpg"))
DESCRIPTION = """# NailSeg
One mask and one box per fingernail. Drop a photo to get the nails numbered, a table, crops for a
classifier and a zip of everything. Photos are processed in memory and uploads are deleted after
each answer. Example photos: Roboflow Universe *nails_segmentation* (CC BY 4.0, see `examples/ATTRIBUTION.md`).
"""

STORE.current  # noqa: B018 - load the model once, at start-up, not on the first request

with gr.Blocks(title="NailSeg", delete_cache=(300, 900)) as demo:
    gr.Markdown(DESCRIPTION)
    with gr.Tab("Segment", id="segment"):
        segment_tab(EXAMPLES)
    with gr.Tab("Dataset → COCO", id="dataset"):
        dataset_tab()
    with gr.Tab("Train", id="train"):
        if train_tab is None:
            gr.Markdown("Training from the browser is not available in this build (`nailseg train` works).")
        else:
            train_tab()

if __name__ == "__main__":
    # A bounded queue; uploads (dataset zips) up to 2 GB. Concurrency per event is set in the tabs.
    demo.queue(max_size=int(os.environ.get("NAILSEG_QUEUE_SIZE", "32")), default_concurrency_limit=1).launch(
        max_file_size="2gb"
    )
