"""nailseg.roi_align against mmcv's compiled RoIAlign, and the torchvision-backed mmcv._ext the GPU run uses."""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest
import torch
from support import REPO, load_bench

from nailseg.roi_align import roi_align


@pytest.mark.parametrize("threads", [1, 2])
def test_matches_mmcv_output_and_gradient_within_1e4(threads):
    # Random RoIs, empty ones, ones under a pixel and ones reaching far past the image's edges, at
    # three settings (box head 7x7 at stride 4, mask head 14x14 at stride 8, fixed sampling unaligned),
    # on one thread and on two (torch splits the gathers and products between them).
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        result = load_bench("ops_check").check("cpu")
    finally:
        torch.set_num_threads(before)
    roi_results = {k: v for k, v in result.items() if k.startswith("roi_align")}
    assert len(roi_results) == 3
    for key, diff in roi_results.items():
        assert diff["output"] <= 1e-4 and diff["grad"] <= 1e-4, (key, diff)
    assert result["nms_same_kept"] and result["ok"]


def test_mmcv_differs_where_the_references_are_shifted():
    # The comparison can fail: half a pixel off (aligned vs not) is far beyond the tolerance.
    from mmcv.ops import roi_align as mmcv_roi_align

    features = torch.randn(1, 4, 20, 20)
    rois = torch.tensor([[0.0, 8, 8, 60, 44]])
    ours = roi_align(features, rois, 7, 0.25, 0, aligned=False)
    assert (ours - mmcv_roi_align(features, rois, 7, 0.25, 0, "avg", True)).abs().max() > 1e-2
    assert (ours - mmcv_roi_align(features, rois, 7, 0.25, 0, "avg", False)).abs().max() <= 1e-5


def test_channels_last_and_bf16():
    torch.manual_seed(0)
    features = torch.randn(2, 8, 30, 26)
    rois = torch.tensor([[0.0, 3, 4, 70, 90], [1, 10, 10, 20, 18], [1, -8, -8, 40, 30]])
    expected = roi_align(features, rois, 7, 0.25)
    # mmcv reads a channels_last tensor as if contiguous; this reads it as what it is.
    assert torch.equal(roi_align(features.to(memory_format=torch.channels_last), rois, 7, 0.25), expected)
    half = roi_align(features.bfloat16(), rois, 7, 0.25)
    assert half.dtype == torch.bfloat16
    assert (half.float() - expected).abs().max() < 0.05  # bfloat16 keeps 8 bits of mantissa


@pytest.mark.parametrize("chunk_elements", [1, 1 << 18], ids=["a-chunk-per-roi", "one-chunk"])
def test_backward_is_the_gradient_of_the_forward(monkeypatch, chunk_elements):
    # The backward is written by hand (one gradient for every chunk's gather): torch checks it
    # against finite differences of the forward, with each RoI in a chunk of its own and all in one.
    import nailseg.roi_align

    monkeypatch.setattr(nailseg.roi_align, "_CHUNK_ELEMENTS", chunk_elements)
    torch.manual_seed(0)
    features = torch.randn(2, 3, 9, 8, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor(
        [[0, 1, 2, 20, 30], [1, -4, -4, 12, 10], [1, 5, 5, 6, 6], [0, 0, 0, 35, 31], [1, 30, 2, 34, 9]],
        dtype=torch.float64,
    )
    assert torch.autograd.gradcheck(lambda f: roi_align(f, rois, (3, 2), 0.25), (features,))
    cl = features.detach().to(memory_format=torch.channels_last).requires_grad_()
    assert torch.autograd.gradcheck(lambda f: roi_align(f, rois, 2, 0.25, sampling_ratio=2), (cl,))


def test_no_rois_and_gradient_flow():
    features = torch.randn(1, 3, 10, 10, requires_grad=True)
    out = roi_align(features, torch.zeros(0, 5), (7, 5), 0.5)
    assert out.shape == (0, 3, 7, 5)
    out.sum().backward()  # an image without proposals still trains
    assert features.grad is not None and not features.grad.any()
    with pytest.raises(ValueError, match=r"\(R, 5\)"):
        roi_align(features, torch.zeros(3, 4), 7)


def test_torchvision_ext_keeps_other_ops_loud(monkeypatch):
    # The GPU run's stand-in for mmcv._ext (bench/ops_check.py checks its two ops there, on CUDA):
    # every op it does not provide, and every setting of the two it does not, raises when called.
    monkeypatch.setitem(sys.modules, "torchvision", types.ModuleType("torchvision"))  # not installed here
    spec = importlib.util.spec_from_file_location("ext_tv", REPO / "scripts" / "mmcv_ext_torchvision.py")
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    assert hasattr(ext, "deform_conv_forward")  # what mmcv.ops checks at import
    with pytest.raises(NotImplementedError, match="deform_conv_forward"):
        ext.deform_conv_forward()
    with pytest.raises(NotImplementedError, match="offset 1"):
        ext.nms(torch.zeros(1, 4), torch.ones(1), iou_threshold=0.5, offset=1)
    with pytest.raises(NotImplementedError, match="max pooling"):
        ext.roi_align_forward(*[None] * 5, aligned_height=7, aligned_width=7, spatial_scale=1.0, sampling_ratio=0,
                              pool_mode=0, aligned=True)  # fmt: skip
