"""LeNet-5 variants with batch norm, for small grayscale or RGB images."""

from __future__ import annotations

from torch import Tensor, nn

from smartaug.models.common import ModelError, Normalize


def _out(size: int, kernel: int, pad: int = 0) -> int:
    return size + 2 * pad - kernel + 1


class LeNet(nn.Module):
    """conv(c1, 5x5) -> BN -> ReLU -> maxpool 2 -> conv(c2, 5x5) -> BN -> ReLU -> maxpool 2
    -> fc(f1) -> BN -> ReLU -> fc(f2) -> BN -> ReLU -> head(f2 -> num_classes).

    The first conv pads by 2, so a 28x28 input gives LeNet-5's classic 16 x 5 x 5 = 400 features
    into the fully connected layers. ``features`` returns the f2-dim input of ``head``.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        *,
        channels: tuple[int, int] = (6, 16),
        hidden: tuple[int, int] = (120, 84),
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
    ):
        super().__init__()
        c1, c2 = channels
        f1, f2 = hidden
        side = _out(_out(image_size, 5, pad=2) // 2, 5) // 2
        if side < 1:
            raise ModelError(f"image_size {image_size} is too small for LeNet (needs >= 12)")
        self.normalize = Normalize(in_channels, mean, std)
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, padding=2, bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, bias=False),
            nn.BatchNorm2d(c2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.fc = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * side * side, f1, bias=False),
            nn.BatchNorm1d(f1),
            nn.ReLU(inplace=True),
            nn.Linear(f1, f2, bias=False),
            nn.BatchNorm1d(f2),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(f2, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """x: [N, C, H, W] float in [0, 1] -> [N, f2], the input of ``head``."""
        return self.fc(self.conv(self.normalize(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # (N, num_classes)


def lenet5(num_classes: int, in_channels: int = 1, image_size: int = 28, **kw) -> LeNet:
    """Classic LeNet-5 (6, 16 conv; 120, 84 fc) with batch norm."""
    return LeNet(num_classes, in_channels, image_size, channels=(6, 16), hidden=(120, 84), **kw)


def lenet5_wide(num_classes: int, in_channels: int = 1, image_size: int = 28, **kw) -> LeNet:
    """Seed 000's network: conv 32, conv 64, fc 512, fc 64, head, batch norm."""
    return LeNet(num_classes, in_channels, image_size, channels=(32, 64), hidden=(512, 64), **kw)
