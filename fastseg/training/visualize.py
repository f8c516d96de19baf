"""Pictures people look at: class-coloured masks, overlays, and image | truth | prediction strips."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..format import IGNORE_INDEX

IGNORE_COLOR = (255, 0, 255)


def palette_image(indices: np.ndarray, colors: list[list[int]]) -> Image.Image:
    """A 'P' PNG whose indices are the class ids, so a viewer shows colours and a reader gets the ids back."""
    image = Image.fromarray(indices.astype(np.uint8), "P")
    flat = [v for c in colors for v in c[:3]]
    flat += [0] * (3 * IGNORE_INDEX - len(flat)) + list(IGNORE_COLOR)
    image.putpalette(flat)
    return image


def colorize(indices: np.ndarray, colors: list[list[int]]) -> np.ndarray:
    table = np.zeros((256, 3), np.uint8)
    table[: len(colors)] = np.array(colors, np.uint8)[:, :3]
    table[IGNORE_INDEX] = IGNORE_COLOR
    return table[indices]


def overlay(image: np.ndarray, indices: np.ndarray, colors: list[list[int]], alpha: float = 0.5) -> np.ndarray:
    """The mask blended over the image; background (class 0) left clear."""
    tinted = colorize(indices, colors).astype(np.float32)
    weight = np.where(indices[..., None] == 0, 0.0, alpha)
    return (image * (1 - weight) + tinted * weight).astype(np.uint8)


def denormalize(image: torch.Tensor, mean: list[float], std: list[float]) -> np.ndarray:
    """C×H×W normalized tensor → H×W×3 uint8."""
    m = torch.tensor(mean, device=image.device).view(3, 1, 1)
    s = torch.tensor(std, device=image.device).view(3, 1, 1)
    return (image.float() * s + m).clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy()


def save_strip(path: Path, images: torch.Tensor, truths: torch.Tensor, preds: torch.Tensor, colors, mean, std,
               limit: int = 4) -> None:
    """One row per sample: image | truth | prediction."""
    rows = []
    for image, truth, pred in list(zip(images, truths, preds))[:limit]:
        picture = denormalize(image, mean, std)
        rows.append(np.concatenate([picture, colorize(truth.cpu().numpy(), colors),
                                    colorize(pred.cpu().numpy(), colors)], axis=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)
