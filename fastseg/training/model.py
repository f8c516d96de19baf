"""A plain UNet (Ronneberger et al. 2015) with BatchNorm: four pooling stages down, four up, logits out; or your own
network, imported by name (build_model)."""
from __future__ import annotations

import ast
import importlib

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
    stride = 2**DEPTH  # what input sides must divide by (scoring pads to it)

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


def parse_model_args(items: list[str]) -> dict:
    """`--model-arg KEY=VALUE`: VALUE read as a Python literal where it is one (3, 0.5, True, "x", [1, 2]), else as
    the string it is (`encoder_name=resnet34`)."""
    found = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not key.isidentifier():
            raise FastsegError(f"--model-arg {item!r}: write KEY=VALUE, e.g. encoder_name=resnet34")
        try:
            found[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            found[key] = value
    return found


def import_factory(path: str):
    """The function 'package.module:function' names; an error naming the path where it cannot be imported."""
    module_name, colon, function_name = path.partition(":")
    if not colon or not module_name or not function_name:
        raise FastsegError(f"--model {path!r}: write PACKAGE.MODULE:FUNCTION, e.g. mymodels.seg:build")
    try:
        factory = getattr(importlib.import_module(module_name), function_name, None)
    except ImportError as err:
        raise FastsegError(f"--model {path}: cannot import {module_name} ({err}); install it, or put its folder on "
                           "PYTHONPATH") from err
    if not callable(factory):
        raise FastsegError(f"--model {path}: {module_name} has no function {function_name}")
    return factory


def build_model(path: str, args: dict, num_classes: int) -> nn.Module:
    """Your own network: `path` is 'package.module:function', called as function(num_classes=C, **args), which
    returns an nn.Module mapping N×3×H×W images to N×C×H×W logits (C: 1 for a binary set, else the classes)."""
    factory = import_factory(path)
    try:
        model = factory(num_classes=num_classes, **args)
    except TypeError as err:
        raise FastsegError(f"--model {path}: calling it with num_classes={num_classes} and {args} failed ({err})") from err
    if not isinstance(model, nn.Module):
        raise FastsegError(f"--model {path}: returned a {type(model).__name__}, not a torch.nn.Module")
    return model
