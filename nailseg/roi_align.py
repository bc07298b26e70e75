"""RoIAlign in plain PyTorch: vectorised, every core, forward and backward, any dtype and layout.

mmcv's CPU RoIAlign loops over the output one element at a time on one thread (the OpenMP pragma
in its ``roi_align.cpp`` is commented out), handles float32 only, and reads a ``channels_last``
tensor as if it were contiguous. This computes the same thing (mmcv's definition, which is
Detectron2's: ``aligned`` half-pixel offset, ``sampling_ratio=0`` meaning ceil(roi size / output
size) samples per bin, a sample in ``[-1, 0)`` clamped to the first row, one in ``(size - 1, size]``
to the last, one further out counting zero) with gathers and batched matrix products, which torch
spreads over the cores and autograd differentiates.

Bilinear sampling is separable: a sample's weight on pixel (y, x) is a row weight times a column
weight, so the mean over a bin's samples is ``Wy[i, y] * Wx[j, x]`` summed, where ``Wy[i, y]`` is
the mean over bin row ``i``'s samples of their weight on row ``y`` (and ``Wx`` likewise). A RoI
touches only the rows and columns of its own window, so each RoI's window of the feature map
(``Hw x Ww x C``, gathered once in channels-last order) is reduced by two small matrix products:
``out[:, i, j] = sum_y sum_x Wy[i, y] Wx[j, x] window[y, x, :]``. RoIs are taken in chunks of
similar window size, so one large RoI does not pad the windows of all the others.
"""

from __future__ import annotations

import torch

# RoIs per chunk are bounded so that the gathered windows stay near this many elements: small
# buffers are reused by the allocator, large fresh ones cost a page fault per 4 KiB when first written.
_CHUNK_ELEMENTS = 1 << 18


class _Axis:
    """Bilinear sampling along one axis for each RoI: where its samples fall and what they weigh.

    ``low``, ``high`` (R, K): the two pixels of each of up to K samples; ``w_low``, ``w_high``:
    their weights, already divided by the samples per bin (zero for samples outside ``[-1, length]``
    and for padding: RoIs with fewer samples than K); ``bins`` (R, K): the output bin of each
    sample; ``first`` (R,): the RoI's first pixel; ``span`` (R,): pixels from ``first`` to its last.
    """

    def __init__(self, start: torch.Tensor, size: torch.Tensor, out: int, grid: torch.Tensor, length: int):
        per_roi = out * grid  # samples of each RoI along this axis
        k = torch.arange(max(int(per_roi.max()), 1) if len(grid) else 1, device=start.device)
        real = k[None, :] < per_roi[:, None]
        pos = start[:, None] + (k[None, :] + 0.5) * (size / per_roi.clamp(min=1))[:, None]
        inside = real & (pos >= -1) & (pos <= length)
        pos = pos.clamp(min=0)
        low = pos.floor().long().clamp(max=length - 1)
        at_edge = low >= length - 1
        self.high = torch.where(at_edge, low, low + 1)
        frac = torch.where(at_edge, torch.zeros_like(pos), pos - low.to(pos.dtype))
        weight = inside.to(pos.dtype) / grid.clamp(min=1)[:, None]  # the mean over a bin's samples
        self.low, self.w_low, self.w_high = low, (1 - frac) * weight, frac * weight
        self.bins = (k[None, :] // grid.clamp(min=1)[:, None]).clamp(max=out - 1)
        far = torch.full_like(low, length)
        self.first = torch.where(inside, low, far).amin(1).clamp(max=length - 1)
        self.span = (torch.where(inside, self.high, self.first[:, None]).amax(1) - self.first + 1).clamp(min=1)
        self.out = out

    def matrix(self, chunk: torch.Tensor, span: int, dtype: torch.dtype) -> torch.Tensor:
        """(len(chunk), out, span): the weight of each bin on each pixel of the RoI's window."""
        n, k = chunk.numel(), self.low.shape[1]
        weights = torch.zeros(n, self.out, span, dtype=dtype, device=self.low.device)
        rows = torch.arange(n, device=self.low.device)[:, None].expand(n, k)
        first = self.first[chunk][:, None]
        for index, w in ((self.low, self.w_low), (self.high, self.w_high)):
            # Samples that count lie inside the window; the rest weigh zero wherever they land.
            where = (index[chunk] - first).clamp(0, span - 1)
            weights.index_put_((rows, self.bins[chunk], where), w[chunk].to(dtype), accumulate=True)
        return weights


def roi_align(features: torch.Tensor, rois: torch.Tensor, output_size, spatial_scale: float = 1.0,
              sampling_ratio: int = 0, aligned: bool = True) -> torch.Tensor:  # fmt: skip
    """Average RoIAlign as ``mmcv.ops.roi_align(..., pool_mode='avg')``; differentiable in ``features``.

    Args:
        features: (B, C, H, W), any memory format (``channels_last`` is read without a copy), any
            floating dtype (the weights are computed in float32, or float64 for float64).
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
    n, channels, height, width = rois.shape[0], *features.shape[1:]
    if n == 0:
        return features.new_zeros(0, channels, out_h, out_w) + features.sum() * 0  # keeps the graph
    with torch.no_grad():
        # mmcv's arithmetic, in float32 (float64 for float64 features): start and end, then the size.
        coords = rois[:, 1:].to(torch.float64 if features.dtype == torch.float64 else torch.float32)
        offset = 0.5 if aligned else 0.0
        start, end = coords[:, :2] * spatial_scale - offset, coords[:, 2:] * spatial_scale - offset
        size = end - start
        if not aligned:
            size = size.clamp(min=1)
        if sampling_ratio > 0:
            grid = torch.full((n, 2), sampling_ratio, dtype=torch.long, device=rois.device)
        else:  # ceil(h / out_h), ceil(w / out_w); a negative size (aligned) has no samples, as in mmcv
            grid = torch.stack([(size[:, 1] / out_h).ceil(), (size[:, 0] / out_w).ceil()], 1).clamp(min=0).long()
        ys = _Axis(start[:, 1], size[:, 1], out_h, grid[:, 0], height)
        xs = _Axis(start[:, 0], size[:, 0], out_w, grid[:, 1], width)
        batch = rois[:, 0].long()
        order = (ys.span * xs.span).argsort(descending=True)  # chunks of similar window size, largest first
    # (B * H * W, C): each pixel's channels in one row (a view of channels_last, else one copy).
    pixels = features.permute(0, 2, 3, 1).reshape(-1, channels)
    chunks = []
    begin = 0
    with torch.no_grad():
        while begin < n:
            # As many RoIs as fit the budget at the window size of the first (the largest) among them.
            span_y, span_x = int(ys.span[order[begin]]), int(xs.span[order[begin]])
            step = max(1, _CHUNK_ELEMENTS // (span_y * span_x * channels))
            chunk = order[begin : begin + step]
            span_y, span_x = int(ys.span[chunk].max()), int(xs.span[chunk].max())
            rows = (ys.first[chunk][:, None] + torch.arange(span_y, device=rois.device)).clamp(max=height - 1)
            cols = (xs.first[chunk][:, None] + torch.arange(span_x, device=rois.device)).clamp(max=width - 1)
            flat = ((batch[chunk] * height)[:, None, None] + rows[:, :, None]) * width + cols[:, None, :]
            wy, wx = ys.matrix(chunk, span_y, features.dtype), xs.matrix(chunk, span_x, features.dtype)
            chunks.append((flat.reshape(-1), wy, wx))
            begin += len(chunk)
    return _PooledWindows.apply(pixels, chunks, out_h, out_w)[order.argsort()]


class _PooledWindows(torch.autograd.Function):
    """Each chunk's windows gathered from ``pixels`` and reduced by its weights, RoIs in chunk order.

    ``chunks``: ``(flat pixel indices, Wy, Wx)`` per chunk. Autograd would differentiate each
    chunk's gather on its own, each into a zeroed gradient the size of the whole feature map, then
    add those up; with a few dozen chunks per call that zeroing was a tenth of a training step. The
    backward here scatters every chunk into one gradient.
    """

    @staticmethod
    def forward(ctx, pixels, chunks, out_h: int, out_w: int):
        ctx.chunks, ctx.rows = chunks, pixels.shape[0]
        channels = pixels.shape[1]
        parts = []
        for flat, wy, wx in chunks:
            r, span_y, span_x = len(wy), wy.shape[2], wx.shape[2]
            window = pixels.index_select(0, flat)  # (r * Hw * Ww, C): whole rows of channels
            along_y = torch.bmm(wy, window.view(r, span_y, span_x * channels))  # (r, out_h, Ww * C)
            along_y = along_y.view(r, out_h, span_x, channels).transpose(1, 2)  # (r, Ww, out_h, C)
            pooled = torch.bmm(wx, along_y.reshape(r, span_x, out_h * channels))  # (r, out_w, out_h * C)
            parts.append(pooled.view(r, out_w, out_h, channels).permute(0, 3, 2, 1))
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad_out):
        _, channels, out_h, out_w = grad_out.shape
        grad_pixels = grad_out.new_zeros(ctx.rows, channels)
        begin = 0
        for flat, wy, wx in ctx.chunks:
            r, span_x = len(wy), wx.shape[2]
            grad = grad_out[begin : begin + r].permute(0, 3, 2, 1).reshape(r, out_w, out_h * channels)
            grad = torch.bmm(wx.transpose(1, 2), grad)  # (r, Ww, out_h * C)
            grad = grad.view(r, span_x, out_h, channels).transpose(1, 2).reshape(r, out_h, span_x * channels)
            grad = torch.bmm(wy.transpose(1, 2), grad)  # (r, Hw, Ww * C)
            grad_pixels.index_add_(0, flat, grad.view(-1, channels))
            begin += r
        return grad_pixels, None, None, None
