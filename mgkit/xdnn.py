"""X-DNN ResNets (Hesse et al., NeurIPS 2021): bias-free, normalisation-free Fixup ResNets.

Every operation in the body (bias-free convolutions, ReLU, max/average pooling, residual sums) is
positively homogeneous, so f(a*x) = a*f(x) for a > 0. For such a function the gradient is constant along
the ray {a*x}, which makes Integrated Gradients with a zero baseline equal to input x gradient exactly:
one backward pass instead of many (paper spec §13).

Module names follow torchvision (``conv1``, ``layer1.0.conv1``, ``layer1.0.downsample`` as a bare conv,
``fc``) so the authors' ImageNet checkpoint ``xfixup_resnet50_model_best.pth.tar`` loads by name.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["XBasicBlock", "XBottleneck", "XDNNResNet", "xdnn_resnet18", "xdnn_resnet50"]


def _conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    # bias=False everywhere: an additive term would break homogeneity and with it IntGrad = IxG
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)


def _he_normal_(conv: nn.Conv2d, factor: float = 1.0) -> None:
    """Fixup's N(0, 2 / (out_channels * k^2)) initialisation, times `factor`."""
    out_channels, _, kh, kw = conv.weight.shape
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / (out_channels * kh * kw)) * factor)


class XBasicBlock(nn.Module):
    """Two 3x3 convolutions with a ReLU between them, plus the (optionally projected) identity."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Conv2d | None = None):
        super().__init__()
        self.conv1 = _conv(inplanes, planes, 3, stride)
        self.conv2 = _conv(planes, planes, 3)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(F.relu(self.conv1(x)))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)

    def fixup_init_(self, num_blocks: int) -> None:
        # Fixup for a branch of m=2 layers: scale L^(-1/(2m-2)) = L^(-1/2), last layer zero
        _he_normal_(self.conv1, num_blocks ** -0.5)
        nn.init.zeros_(self.conv2.weight)


class XBottleneck(nn.Module):
    """1x1 -> 3x3 (strided, torchvision's v1.5 placement) -> 1x1 expansion, plus the identity."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Conv2d | None = None):
        super().__init__()
        self.conv1 = _conv(inplanes, planes, 1)
        self.conv2 = _conv(planes, planes, 3, stride)
        self.conv3 = _conv(planes, planes * self.expansion, 1)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        out = self.conv3(out)
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)

    def fixup_init_(self, num_blocks: int) -> None:
        # Fixup for a branch of m=3 layers: scale L^(-1/(2m-2)) = L^(-1/4), last layer zero
        _he_normal_(self.conv1, num_blocks ** -0.25)
        _he_normal_(self.conv2, num_blocks ** -0.25)
        nn.init.zeros_(self.conv3.weight)


class XDNNResNet(nn.Module):
    """Bias-free Fixup ResNet; `fc` has no bias either (the ImageNet X-DNN head)."""

    def __init__(self, block: type[XBasicBlock] | type[XBottleneck], layers: list[int], num_classes: int = 1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], stride=1)
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes, bias=False)

        # Fixup initialisation replaces normalisation layers: the stem keeps PyTorch's default init,
        # residual branches are scaled down by the number of blocks and end in a zero layer, so every
        # block starts as the identity; projections are He-normal; the classifier starts at zero.
        num_blocks = sum(layers)
        for m in self.modules():
            if isinstance(m, (XBasicBlock, XBottleneck)):
                m.fixup_init_(num_blocks)
                if m.downsample is not None:
                    _he_normal_(m.downsample)
        nn.init.zeros_(self.fc.weight)

    def _make_layer(self, block: type[XBasicBlock] | type[XBottleneck], planes: int, blocks: int,
                    stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = _conv(self.inplanes, planes * block.expansion, 1, stride)
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(F.relu(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def xdnn_resnet18(num_classes: int = 1000) -> XDNNResNet:
    """X-DNN ResNet-18 (basic blocks [2, 2, 2, 2]); no ImageNet checkpoint exists for it."""
    return XDNNResNet(XBasicBlock, [2, 2, 2, 2], num_classes)


def xdnn_resnet50(num_classes: int = 1000) -> XDNNResNet:
    """X-DNN ResNet-50 (bottlenecks [3, 4, 6, 3]), the architecture of xfixup_resnet50_model_best.pth.tar."""
    return XDNNResNet(XBottleneck, [3, 4, 6, 3], num_classes)
