"""Batches → a trained UNet: the model, its loss and metrics, the LightningModule, the meter and checkpoints."""
from .model import UNet
from .module import SegModule

__all__ = ["SegModule", "UNet"]
