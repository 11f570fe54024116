"""Seed 004's small CIFAR ResNet ("ResNet24": 4 stages of 3, 3, 2, 3 basic blocks with
64, 128, 128, 256 channels, 3x3 kernels, 1x1 skip convolutions, global average pooling).
Sized for 32x32 RGB images; the GPU-sized model of the pipeline."""

from __future__ import annotations

from torch import Tensor, nn

from smartaug.models.common import ModelError, Normalize

CIFAR10_MEAN = (0.491, 0.482, 0.447)
CIFAR10_STD = (0.247, 0.243, 0.261)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.skip(x))


class ResNet(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        image_size: int = 32,
        *,
        blocks: tuple[int, ...] = (3, 3, 2, 3),
        widths: tuple[int, ...] = (64, 128, 128, 256),
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
    ):
        super().__init__()
        if len(blocks) != len(widths):
            raise ValueError("blocks and widths need the same length")
        if image_size < 2 ** (len(blocks) - 1):
            raise ModelError(f"image_size {image_size} is too small for {len(blocks)} stages")
        if mean is None and in_channels == 3:
            mean, std = CIFAR10_MEAN, CIFAR10_STD
        self.normalize = Normalize(in_channels, mean, std)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        layers, cin = [], widths[0]
        for i, (n, w) in enumerate(zip(blocks, widths, strict=True)):
            for j in range(n):
                layers.append(BasicBlock(cin, w, stride=2 if (i > 0 and j == 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(cin, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """x: [N, C, H, W] float in [0, 1] -> [N, widths[-1]], the input of ``head``."""
        return self.pool(self.layers(self.stem(self.normalize(x))))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def resnet(num_classes: int, in_channels: int = 3, image_size: int = 32, **kw) -> ResNet:
    return ResNet(num_classes, in_channels, image_size, **kw)
