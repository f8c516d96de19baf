"""Batches → a trained UNet: the model, its loss and metrics, the LightningModule, the meter and checkpoints."""
from .losses import out_channels, segmentation_loss
from .meter import flops_per_image, peak_flops
from .model import PRECISION_DTYPES, UNet
from .module import SegModule
from .optim import OptimSettings
from .scoring import Scoring, score_loader

__all__ = ["PRECISION_DTYPES", "OptimSettings", "Scoring", "SegModule", "UNet", "flops_per_image", "out_channels", "peak_flops",
           "score_loader", "segmentation_loss"]
