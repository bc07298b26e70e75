"""The benchmarks' own models go through the loader the app uses (a bench that cannot run measures nothing)."""

from __future__ import annotations

from support import PHOTOS, load_bench

from nailseg.images import load_image_rgb
from nailseg.inference import load_model


def test_latency_reference_model_loads_as_data_and_segments(tmp_path):
    weights = load_bench("latency").export_reference(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "mask-rcnn_r50_fpn_reference.json",
        "mask-rcnn_r50_fpn_reference.safetensors",
    ]
    segmenter = load_model(str(weights), device="cpu")  # the same call bench/latency.py's worker makes
    assert type(segmenter.model.backbone).__name__ == "ResNet"
    resize = next(t for t in segmenter.pipeline.transforms if type(t).__name__ == "Resize")
    assert tuple(resize.scale) == (432, 432)  # the photos' size, not the stock 1333x800
    nails = segmenter.predict_all(load_image_rgb(PHOTOS[0]))
    assert len(nails) <= 10  # the reference's max_per_img; random weights find anything or nothing
