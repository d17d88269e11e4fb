"""ResNet-18 and VGG-11-BN as PyTorch modules, built module for module as torchvision builds them.

torchvision cannot be imported beside the CPU build of torch this project tests with (its wheel
for torch 2.13 is a CUDA build), so the architectures that LRP research audits are defined here
with torchvision's module names and structure: ``conv1``/``bn1``/``relu``/``maxpool``,
``layer1``..``layer4`` of :class:`BasicBlock` (``conv1``, ``bn1``, ``relu``, ``conv2``, ``bn2``
and a ``downsample`` shortcut of a 1x1 convolution and a batch norm), ``avgpool``, ``fc``; and
``features``/``avgpool``/``classifier`` for VGG. Model import (``torch.fx``) and the audit treat
these exactly as they would treat torchvision's own modules, and a real torchvision model imports
by the same code where torchvision works.

Weights are random (torch's default initialisation, seeded by the caller); nothing is
downloaded. ``torch`` is imported when a model is built, not when this module is imported.

He et al. (2016), "Deep residual learning for image recognition", CVPR; Simonyan and Zisserman
(2015), "Very deep convolutional networks for large-scale image recognition", ICLR.
"""

from __future__ import annotations

from typing import Any, Sequence

from lrp_num.io.torch_bridge import require_torch

#: VGG-11 ("A"): channels of each 3x3 convolution, "M" a 2x2 max pooling
VGG11_LAYOUT: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


def _classes() -> dict[str, type]:
    """The module classes, created on first use so that torch is imported lazily."""
    if _CLASSES:
        return _CLASSES
    torch = require_torch()
    nn = torch.nn

    class BasicBlock(nn.Module):
        """Two 3x3 convolutions with batch norms; the input (or its 1x1 projection) is added."""

        expansion = 1

        def __init__(self, inplanes: int, planes: int, stride: int = 1,
                     downsample: Any = None) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = downsample
            self.stride = stride

        def forward(self, x):
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            if self.downsample is not None:
                identity = self.downsample(x)
            out += identity
            return self.relu(out)

    class ResNet(nn.Module):
        """A ResNet of :class:`BasicBlock` stages (``layers`` blocks per stage)."""

        def __init__(self, layers: Sequence[int], num_classes: int = 1000, in_channels: int = 3,
                     width: int = 64, stem: str = "imagenet") -> None:
            super().__init__()
            self.inplanes = width
            imagenet = stem == "imagenet"  # else small images: a 3x3 convolution, no pooling
            self.conv1 = nn.Conv2d(in_channels, width, 7 if imagenet else 3, stride=2 if imagenet else 1,
                                   padding=3 if imagenet else 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if imagenet else nn.Identity()
            stages = []
            for index, blocks in enumerate(layers):
                planes = width * 2 ** index
                stages.append(self._make_layer(planes, blocks, stride=1 if index == 0 else 2))
            for index, stage in enumerate(stages, start=1):
                setattr(self, f"layer{index}", stage)
            self.n_stages = len(stages)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(self.inplanes, num_classes)

        def _make_layer(self, planes: int, blocks: int, stride: int):
            downsample = None
            if stride != 1 or self.inplanes != planes:
                downsample = nn.Sequential(
                    nn.Conv2d(self.inplanes, planes, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes))
            modules = [BasicBlock(self.inplanes, planes, stride, downsample)]
            self.inplanes = planes
            modules += [BasicBlock(planes, planes) for _ in range(1, blocks)]
            return nn.Sequential(*modules)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            for index in range(1, self.n_stages + 1):
                x = getattr(self, f"layer{index}")(x)
            x = torch.flatten(self.avgpool(x), 1)
            return self.fc(x)

    class VGG(nn.Module):
        """``features`` (3x3 convolutions with batch norms, max pooling), ``avgpool`` to 7x7,
        ``classifier`` (two 4096-wide dense layers with dropout, then the output layer)."""

        def __init__(self, layout: Sequence[int | str] = VGG11_LAYOUT, num_classes: int = 1000,
                     in_channels: int = 3, batch_norm: bool = True, hidden: int = 4096,
                     pooled: int = 7) -> None:
            super().__init__()
            modules: list[Any] = []
            channels = in_channels
            for entry in layout:
                if entry == "M":
                    modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
                    continue
                modules.append(nn.Conv2d(channels, int(entry), 3, padding=1))
                if batch_norm:
                    modules.append(nn.BatchNorm2d(int(entry)))
                modules.append(nn.ReLU(inplace=True))
                channels = int(entry)
            self.features = nn.Sequential(*modules)
            self.avgpool = nn.AdaptiveAvgPool2d((pooled, pooled))
            self.classifier = nn.Sequential(
                nn.Linear(channels * pooled * pooled, hidden), nn.ReLU(True), nn.Dropout(),
                nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(),
                nn.Linear(hidden, num_classes))

        def forward(self, x):
            x = self.avgpool(self.features(x))
            return self.classifier(torch.flatten(x, 1))

    _CLASSES.update(BasicBlock=BasicBlock, ResNet=ResNet, VGG=VGG)
    return _CLASSES


_CLASSES: dict[str, type] = {}


def __getattr__(name: str) -> type:
    """``BasicBlock``, ``ResNet`` and ``VGG`` as module attributes (created with torch on first use)."""
    if name in ("BasicBlock", "ResNet", "VGG"):
        return _classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _randomised(model: Any, seed: int | None) -> Any:
    """``model`` in eval mode; with a seed, batch-norm statistics and affine parameters drawn at
    random too (fresh torch batch norms are the identity, which would hide folding mistakes)."""
    torch = require_torch()
    if seed is not None:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    n = module.num_features
                    module.weight.copy_(0.5 + torch.rand(n, generator=generator))
                    module.bias.copy_(0.2 * torch.randn(n, generator=generator))
                    module.running_mean.copy_(0.2 * torch.randn(n, generator=generator))
                    module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
    return model.eval()


def resnet18(num_classes: int = 1000, *, seed: int | None = 0, **options: Any) -> Any:
    """ResNet-18 (two basic blocks in each of four stages), random weights, eval mode.

    ``seed`` seeds torch's initialisation and draws random batch-norm statistics (None: torch's
    global random state and fresh batch norms).
    """
    torch = require_torch()
    if seed is not None:
        torch.manual_seed(seed)
    return _randomised(_classes()["ResNet"]((2, 2, 2, 2), num_classes, **options), seed)


def vgg11_bn(num_classes: int = 1000, *, seed: int | None = 0, **options: Any) -> Any:
    """VGG-11 with batch normalisation, random weights, eval mode (dropout inactive)."""
    torch = require_torch()
    if seed is not None:
        torch.manual_seed(seed)
    return _randomised(_classes()["VGG"](VGG11_LAYOUT, num_classes, **options), seed)
