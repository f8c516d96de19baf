"""SegModule: the network (the UNet, or your own) as a LightningModule; loss, metrics, optimizer and schedule. Data
and devices are not its business.

Speed options change nothing but speed: channels-last memory format (convolutions on tensor cores without layout
transposes), torch.compile, and the fused AdamW wherever the parameters live on CUDA.
"""
from __future__ import annotations

from dataclasses import asdict

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import FastsegError
from ..format import IGNORE_INDEX
from .losses import out_channels, predict, segmentation_loss
from .metrics import VAL_METRICS, confusion_metric, scores
from .model import UNet, build_model
from .optim import OptimSettings, make_optimizer, make_schedule
from .scoring import Scoring, label_logits, network_stride


class SegModule(pl.LightningModule):
    def __init__(self, class_names: list[str], *, class_colors: list[list[int]], mean: list[float],
                 std: list[float], image_size: tuple[int, int], width: int = 64,
                 optim: OptimSettings | dict | None = None, scoring: Scoring | dict | None = None,
                 dice_weight: float = 0.0, ignore_index: int = IGNORE_INDEX, channels_last: bool = False,
                 compile_model: bool = False, model: nn.Module | None = None, model_path: str | None = None,
                 model_args: dict | None = None, own_model: bool = False, class_weights: list[float] | None = None):
        """model: your own network (an nn.Module mapping N×3×H×W to N×C×H×W logits, C = 1 for two classes, else
        the class count); or model_path 'package.module:function' (+ model_args), which the checkpoint records
        and fastseg-predict rebuilds; default: the UNet of `width`. own_model is set when `model` is given, so that
        loading such a checkpoint asks for the model again. optim: the optimizer and schedule (OptimSettings).
        scoring: how validation batches at the labels' resolution are run (scoring.Scoring: whole or slide, and the
        scale validation fitted images to, which fastseg-predict scores at by default); batches with masks at the
        training size are scored there. Both are kept in the checkpoint as plain dicts."""
        super().__init__()
        self.optim = optim if isinstance(optim, OptimSettings) else OptimSettings(**(optim or {}))
        self.scoring = scoring if isinstance(scoring, Scoring) else Scoring(**(scoring or {}))
        # everything fastseg-predict needs to use a checkpoint alone; the settings objects as dicts, so that a
        # checkpoint loads with this module alone and its hparams.yaml reads as plain values
        self.save_hyperparameters(ignore=["model"])
        self.hparams.optim, self.hparams.scoring = asdict(self.optim), asdict(self.scoring)
        self.num_classes = len(class_names)
        if model is not None:
            self.hparams.own_model = True
        elif own_model:
            raise FastsegError("this checkpoint's network was passed to SegModule as an object; load it with "
                               "SegModule.load_from_checkpoint(path, model=YourNetwork(...))")
        elif model_path:
            model = build_model(model_path, model_args or {}, out_channels(self.num_classes))
        self.model = model if model is not None else UNet(out_channels(self.num_classes), width=width)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weights, persistent=False)
        self.stride = network_stride(self.model)
        self.confusion = confusion_metric(self.num_classes, ignore_index)
        self.last_scores: dict | None = None
        self.preview = None  # (images, truths, predictions) of the first validation batch

    def configure_model(self) -> None:
        if self.hparams.compile_model and self.model._compiled_call_impl is None:
            self.model.compile()  # in place: the state_dict keeps its plain keys, so checkpoints stay portable

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        return self.model(image)

    def _loss(self, batch):
        logits = self(batch["image"])
        return logits, segmentation_loss(logits, batch["mask"], self.hparams.ignore_index, self.hparams.dice_weight,
                                         self.class_weights)

    def training_step(self, batch, batch_index):
        _, loss = self._loss(batch)
        # stays a tensor on the device: Lightning reads it (one host sync) only at the --log-every cadence
        self.log("train_loss", loss.detach(), prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def validation_step(self, batch, batch_index):
        if "sizes" in batch:
            return self._score_at_labels(batch, batch_index)
        logits, loss = self._loss(batch)
        pred = predict(logits)
        self.confusion.update(pred, batch["mask"])
        self.log("val_loss", loss, sync_dist=True, batch_size=batch["image"].shape[0])
        if batch_index == 0:
            self.preview = (batch["image"][:4].detach(), batch["mask"][:4], pred[:4])

    def _score_at_labels(self, batch, batch_index):
        """Each real sample's logits at its label's size, scored against the label as the set holds it."""
        h, losses, preview = self.hparams, [], []
        for index, (small, logits, mask) in enumerate(label_logits(self, batch, self.scoring, self.stride)):
            self.confusion.update(predict(logits), mask)
            losses.append(segmentation_loss(logits, mask, h.ignore_index, h.dice_weight, self.class_weights))
            if batch_index == 0 and len(preview) < 4 and (not preview or small.shape == preview[0][2].shape):
                truth = F.interpolate(mask[None].float(), size=small.shape[-2:], mode="nearest")[0].long()
                preview.append((batch["image"][index, :, :small.shape[-2], :small.shape[-1]], truth[0], small))
        if losses:
            self.log("val_loss", torch.stack(losses).mean(), sync_dist=True, batch_size=len(losses))
        if preview:
            images, truths, smalls = zip(*preview)
            self.preview = (torch.stack(images).detach(), torch.stack(truths), predict(torch.cat(smalls)))

    def on_validation_epoch_end(self):
        found = scores(self.confusion.compute())  # compute() sums the counts over all ranks first
        self.confusion.reset()
        self.last_scores = found
        # the same on every rank already (the counts were summed): the max over ranks changes nothing, and saying
        # sync_dist keeps Lightning from advising it
        for name, key in VAL_METRICS.items():
            self.log(name, found[key], prog_bar=name == "val_miou", sync_dist=True, reduce_fx="max")
        self.log("val_pixels", float(found["pixels"]), sync_dist=True, reduce_fx="max")

    def configure_optimizers(self):
        o = self.optim
        optimizer = make_optimizer(self.parameters(), o.optimizer, o.lr, o.weight_decay, self.device.type == "cuda")
        schedule = make_schedule(optimizer, schedule=o.schedule, epochs=o.epochs, warmup=o.warmup_steps,
                                 min_lr=o.min_lr, lr=o.lr, total_steps=lambda: int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": schedule}


# checkpoints written before the settings objects kept them as flat keywords
_FLAT_OPTIM = ("optimizer", "lr", "weight_decay", "schedule", "warmup_steps", "min_lr", "epochs")
_FLAT_SCORING = {"eval_mode": "mode", "eval_window": "window", "eval_stride": "stride", "eval_size": "size"}


def load_segmodule(path, map_location) -> SegModule:
    """A SegModule from a fastseg-train checkpoint, those written with the settings as flat keywords included."""
    checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    hparams = dict(checkpoint["hyper_parameters"])
    if any(key in hparams for key in (*_FLAT_OPTIM, *_FLAT_SCORING)):
        hparams["optim"] = {key: hparams.pop(key) for key in _FLAT_OPTIM if key in hparams}
        scoring = {new: hparams.pop(old) for old, new in _FLAT_SCORING.items() if old in hparams}
        hparams["scoring"] = {k: v for k, v in scoring.items() if v is not None or k == "size"}
        if hparams["scoring"].get("mode", "whole") == "whole":
            hparams["scoring"].pop("window", None), hparams["scoring"].pop("stride", None)
    module = SegModule(**hparams)
    module.load_state_dict(checkpoint["state_dict"])
    return module
