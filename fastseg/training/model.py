"""A plain UNet (Ronneberger et al. 2015) with BatchNorm: four pooling stages down, four up, logits out."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import FastsegError

DEPTH = 4  # pooling stages; input sides must divide by 2**DEPTH
# Lightning's precision names and the dtype each computes in
PRECISION_DTYPES = {"32-true": torch.float32, "16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}


def check_size(height: int, width: int) -> None:
    step = 2**DEPTH
    if any(side % step or side < step for side in (height, width)):
        near_h, near_w = (max(step, (side + step // 2) // step * step) for side in (height, width))
        raise FastsegError(f"image size {height}x{width} does not pass the UNet's {DEPTH} poolings: each side must be "
                           f"a multiple of {step} (nearest: {near_h}x{near_w})")


class DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )


class Up(nn.Module):
    """Upsample (bilinear), concatenate the skip connection, double conv."""

    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.conv = DoubleConv(cin + cskip, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    def __init__(self, out_channels: int, in_channels: int = 3, width: int = 64):
        super().__init__()
        widths = [width * 2**i for i in range(DEPTH + 1)]  # 64, 128, 256, 512, 1024 for the classic width
        self.inc = DoubleConv(in_channels, widths[0])
        self.down = nn.ModuleList(DoubleConv(widths[i], widths[i + 1]) for i in range(DEPTH))
        self.up = nn.ModuleList(Up(widths[i + 1], widths[i], widths[i]) for i in reversed(range(DEPTH)))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_size(*x.shape[-2:])
        skips = [self.inc(x)]
        for down in self.down:
            skips.append(down(F.max_pool2d(skips[-1], 2)))
        x = skips.pop()
        for up in self.up:
            x = up(x, skips.pop())
        return self.head(x)
