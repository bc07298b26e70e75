"""RoIAlign in plain PyTorch: vectorised, every core, forward and backward, any dtype and layout.

mmcv's CPU RoIAlign loops over the output one element at a time on one thread (the OpenMP pragma
in its ``roi_align.cpp`` is commented out), handles float32 only, and reads a ``channels_last``
tensor as if it were contiguous. This computes the same thing (mmcv's definition, which is
Detectron2's: ``aligned`` half-pixel offset, ``sampling_ratio=0`` meaning ceil(roi size / output
size) samples per bin, samples outside ``[-1, size]`` counting zero) with tensor operations, so
torch spreads it over the cores and autograd gives the backward pass.

Bilinear sampling is separable: a sample's four weights are a product of a row weight and a column
weight. RoIs with the same number of samples per bin are done together; for each, the rows and
columns it samples are gathered once (``index_select``), weighted, and summed over the samples of
each bin.
"""

from __future__ import annotations

import math

import torch

# RoIs per chunk are bounded so that the gathered samples stay near this many elements.
_CHUNK_ELEMENTS = 1 << 25


def _axis(start: torch.Tensor, bin_size: torch.Tensor, pooled: int, grid: int, size: int):
    """Sample positions along one axis -> (low index, high index, low weight, high weight), each (R, pooled*grid).

    The weights are zero for samples outside ``[-1, size]``, as in mmcv's ``bilinear_interpolate``.
    """
    steps = torch.arange(pooled * grid, device=start.device, dtype=start.dtype)
    # sample s of bin p sits at start + p * bin + (s + 0.5) * bin / grid = start + (k + 0.5) * bin / grid
    pos = start[:, None] + (steps[None, :] + 0.5) * (bin_size[:, None] / grid)
    inside = (pos >= -1.0) & (pos <= size)
    pos = pos.clamp(min=0)
    low = pos.floor().long().clamp(max=size - 1)
    at_edge = low >= size - 1
    high = torch.where(at_edge, low, low + 1)
    frac = torch.where(at_edge, torch.zeros_like(pos), pos - low.to(pos.dtype))
    w_high = frac * inside
    w_low = (1 - frac) * inside
    return low, high, w_low, w_high


def _pool_group(features: torch.Tensor, batch: torch.Tensor, box: torch.Tensor, out_h: int, out_w: int,
                grid_h: int, grid_w: int) -> torch.Tensor:  # fmt: skip
    """RoIAlign of RoIs sharing one sample grid: (R, C, out_h, out_w).

    ``box`` is (R, 4): x start, y start, width, height in feature pixels, as mmcv computes them.
    """
    _, channels, height, width = features.shape
    n = box.shape[0]
    if grid_h == 0 or grid_w == 0:  # an empty RoI (aligned): no samples, the output is zero
        return features.new_zeros(n, channels, out_h, out_w)
    with torch.no_grad():
        x0, y0, w_roi, h_roi = box.unbind(1)
        ylo, yhi, wylo, wyhi = _axis(y0, h_roi / out_h, out_h, grid_h, height)
        xlo, xhi, wxlo, wxhi = _axis(x0, w_roi / out_w, out_w, grid_w, width)
        # Flat (image, row) indices into features viewed as (B * H, C, W), then column indices.
        rows = torch.cat([ylo, yhi], 1) + (batch * height)[:, None]  # (R, 2 * Sy)
        wy = torch.cat([wylo, wyhi], 1).to(features.dtype)
        cols = torch.cat([xlo, xhi], 1)  # (R, 2 * Sx)
        wx = torch.cat([wxlo, wxhi], 1).to(features.dtype)
    sy, sx = rows.shape[1], cols.shape[1]
    flat = features.permute(0, 2, 1, 3).reshape(-1, channels, width)  # (B * H, C, W)
    picked = flat.index_select(0, rows.reshape(-1)).view(n, sy, channels, width)
    # Weighted sum over the two rows of each sample and the grid_h samples of each bin first.
    along_y = torch.einsum("rycw,ry->rycw", picked, wy).view(n, 2, out_h, grid_h, channels, width).sum((1, 3))
    # Then the columns: gather the 2 * Sx columns per RoI.
    index = cols[:, None, None, :].expand(n, out_h, channels, sx)
    picked_x = torch.gather(along_y, 3, index)  # (R, out_h, C, 2 * Sx)
    pooled = torch.einsum("rhcx,rx->rhcx", picked_x, wx).view(n, out_h, channels, 2, out_w, grid_w).sum((3, 5))
    return pooled.permute(0, 2, 1, 3) / (grid_h * grid_w)  # (R, C, out_h, out_w)


def roi_align(features: torch.Tensor, rois: torch.Tensor, output_size, spatial_scale: float = 1.0,
              sampling_ratio: int = 0, aligned: bool = True) -> torch.Tensor:  # fmt: skip
    """Average RoIAlign as ``mmcv.ops.roi_align(..., pool_mode='avg')``; differentiable in ``features``.

    Args:
        features: (B, C, H, W), any memory format, float32 / bfloat16 / float16 / float64.
        rois: (R, 5) as (image index, x1, y1, x2, y2) in input pixels.
        output_size: int or (out_h, out_w).
        spatial_scale: feature size / input size.
        sampling_ratio: samples per bin along each axis; 0 for ceil(RoI size / output size).
        aligned: shift by half a pixel (Detectron2's correction); without it RoIs are at least 1 px.

    Returns:
        (R, C, out_h, out_w), the dtype of ``features``.
    """
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(f"rois must be (R, 5) as (index, x1, y1, x2, y2), got {tuple(rois.shape)}")
    offset = 0.5 if aligned else 0.0
    n, channels = rois.shape[0], features.shape[1]
    out = features.new_zeros(n, channels, out_h, out_w)
    if n == 0:
        return out + features.sum() * 0  # keeps the graph for an empty batch of RoIs
    with torch.no_grad():
        # mmcv's arithmetic, in float32 (float64 for float64 features): start and end, then the size.
        coords = rois[:, 1:].to(torch.float64 if features.dtype == torch.float64 else torch.float32)
        start, end = coords[:, :2] * spatial_scale - offset, coords[:, 2:] * spatial_scale - offset
        size = end - start
        if not aligned:
            size = size.clamp(min=1)
        box = torch.cat([start, size], 1)  # x0, y0, w, h
        batch = rois[:, 0].long()
        if sampling_ratio > 0:
            grids = torch.full((n, 2), sampling_ratio, dtype=torch.long, device=rois.device)
        else:
            # ceil(h / out_h), ceil(w / out_w); a negative size (aligned) has no samples, as in mmcv.
            grids = torch.stack([(size[:, 1] / out_h).ceil(), (size[:, 0] / out_w).ceil()], 1).clamp(min=0).long()
        keys, inverse = torch.unique(grids, dim=0, return_inverse=True)
    parts, where = [], []
    for key_index, (grid_h, grid_w) in enumerate(keys.tolist()):
        members = (inverse == key_index).nonzero().squeeze(1)
        # Each RoI gathers 2 * out_h * grid_h rows of C * W values: chunk to bound the memory.
        per_roi = 2 * out_h * max(grid_h, 1) * channels * features.shape[3]
        step = max(1, _CHUNK_ELEMENTS // max(per_roi, 1))
        for start in range(0, members.numel(), step):
            chunk = members[start : start + step]
            parts.append(_pool_group(features, batch[chunk], box[chunk], out_h, out_w, grid_h, grid_w))
            where.append(chunk)
    order = torch.cat(where)
    return out.index_copy(0, order, torch.cat(parts))


def samples_per_bin(rois: torch.Tensor, output_size: int, spatial_scale: float) -> int:
    """The largest adaptive sample grid among ``rois`` (for tests and benchmarks)."""
    size = (rois[:, 3:5] - rois[:, 1:3]).float() * spatial_scale
    return int(math.ceil(float(size.max()) / output_size)) if rois.numel() else 0
