#!/usr/bin/env python
"""NailSeg web app: segment fingernails, convert datasets to COCO, train.

Serve with ``python app.py``; host and port come from ``GRADIO_SERVER_NAME`` and
``GRADIO_SERVER_PORT`` (default 127.0.0.1:7860). Weights: ``$NAILSEG_WEIGHTS`` (local path or
``hf://owner/repo[@revision]/file.safetensors``), else the bundled model. The page answers at
once; the model loads in the background and the first photo waits for it. Who may do what on a
public server: see :mod:`nailseg.access`.
"""

from __future__ import annotations

import os
from pathlib import Path

import gradio as gr

from nailseg import access, middleware
from nailseg.files import remove_older_than
from nailseg.paths import converted_root, keep_hours
from nailseg.serving import Shared, exit_on_sigterm, scratch_root
from nailseg.tabs.dataset import dataset_tab
from nailseg.tabs.segment import segment_tab
from nailseg.tabs.train import train_tab

EXAMPLES = sorted(str(p) for p in (Path(__file__).parent / "examples").glob("*.jpg"))
DESCRIPTION = """# NailSeg
One mask and one box per fingernail. Drop a photo to get the nails numbered, a table, crops for a
classifier and a zip of everything. Uploads and answers are deleted from the server within ten
minutes; a shrunk copy of your last photo is kept for fifteen, so that moving the threshold needs
no new upload. Example photos: Roboflow Universe *nails_segmentation* (CC BY 4.0, see
`examples/ATTRIBUTION.md`).
"""


def build_demo(shared: Shared) -> gr.Blocks:
    """The page: three tabs over what requests share (the model in use, visitors' kept photos, the
    training run: :class:`nailseg.serving.Shared`)."""
    # Gradio's cache (uploads, answers' files): checked every 2 minutes, files older than 10 go.
    with gr.Blocks(title="NailSeg", delete_cache=(120, 600)) as demo:
        gr.Markdown(DESCRIPTION)
        if access.oauth_enabled():
            gr.LoginButton()
        with gr.Tab("Segment", id="segment"):
            follow_model = segment_tab(EXAMPLES, shared.store, shared.sessions)
        with gr.Tab("Dataset → COCO", id="dataset"):
            dataset_tab()
        with gr.Tab("Train", id="train"):
            used = train_tab(demo, shared.store, shared.jobs)
        follow_model(used)  # "use this model": the Segment tab's slider and status line follow at once
    return demo


SHARED = Shared()  # costs nothing: the model loads once the page answers (below)
demo = build_demo(SHARED)

if __name__ == "__main__":
    exit_on_sigterm()
    remove_older_than(converted_root(), keep_hours())  # kept datasets past their time
    scratch_root()  # this process's folder of answers' files; those of dead app processes go now
    # A bounded queue; uploads (dataset zips) up to 2 GB, within each address's share (middleware).
    # Concurrency per event is set in the tabs.
    demo.queue(max_size=int(os.environ.get("NAILSEG_QUEUE_SIZE", "32")), default_concurrency_limit=1).launch(
        max_file_size="2gb",
        auth=access.auth_pairs(),
        app_kwargs={"middleware": middleware.stack()},
        prevent_thread_lock=True,
    )
    SHARED.store.load_in_background()  # once the page answers: importing torch and mmdet takes seconds
    demo.block_thread()
