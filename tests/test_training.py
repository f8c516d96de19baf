"""UNet and your own model, losses, metrics and the schedules on small tensors, against values worked out by hand."""
from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from fastseg.errors import FastsegError
from fastseg.training.losses import out_channels, predict, segmentation_loss
from fastseg.training.metrics import confusion_metric, scores
from fastseg.training.model import UNet


@pytest.mark.parametrize("size", [(16, 16), (32, 48), (64, 80)])
def test_unet_shapes(size):
    model = UNet(out_channels=5, width=4)
    assert model(torch.randn(2, 3, *size)).shape == (2, 5, *size)


def test_unet_gradients_reach_every_layer():
    model = UNet(out_channels=1, width=4)
    loss = segmentation_loss(model(torch.randn(2, 3, 32, 32)), torch.randint(0, 2, (2, 32, 32)))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_unet_names_the_nearest_valid_size():
    with pytest.raises(FastsegError, match=r"100x72 .* multiple of 16 \(nearest: 96x80\)"):
        UNet(out_channels=1, width=4)(torch.randn(1, 3, 100, 72))


def test_loss_picks_by_class_count_and_ignores():
    assert out_channels(2) == 1 and out_channels(3) == 3
    logits = torch.randn(2, 1, 4, 4)
    mask = torch.randint(0, 2, (2, 4, 4))
    mask[0, 0] = 255
    valid = mask != 255
    expected = F.binary_cross_entropy_with_logits(logits[:, 0][valid], mask[valid].float())
    torch.testing.assert_close(segmentation_loss(logits, mask), expected)
    logits3 = torch.randn(2, 3, 4, 4)
    mask3 = torch.randint(0, 3, (2, 4, 4))
    mask3[1, :2] = 255
    torch.testing.assert_close(segmentation_loss(logits3, mask3), F.cross_entropy(logits3, mask3, ignore_index=255))
    everything_ignored = segmentation_loss(logits3.requires_grad_(), torch.full((2, 4, 4), 255))
    assert everything_ignored.item() == 0 and everything_ignored.requires_grad  # padding batches: no NaN
    assert segmentation_loss(logits3, mask3, dice_weight=1.0) > segmentation_loss(logits3, mask3)
    assert predict(torch.tensor([[[[-1.0, 2.0]]]])).tolist() == [[[0, 1]]]


def test_metrics_from_counts_by_hand():
    truth = torch.tensor([[0, 0, 1, 1, 2, 255]])
    pred = torch.tensor([[0, 1, 1, 1, 0, 2]])  # the last pixel is ignored whatever is predicted there
    metric = confusion_metric(3, 255)
    metric.update(pred[:, :3], truth[:, :3])  # counts accumulate over batches
    metric.update(pred[:, 3:], truth[:, 3:])
    found = scores(metric.compute())
    # class 0: tp 1, fp 1 (the 2 predicted as 0), fn 1 → IoU 1/3; class 1: tp 2, fp 1, fn 0 → 2/3; class 2: 0
    torch.testing.assert_close(found["iou"], torch.tensor([1 / 3, 2 / 3, 0.0], dtype=torch.float64))
    torch.testing.assert_close(found["dice"], torch.tensor([0.5, 0.8, 0.0], dtype=torch.float64))
    assert math.isclose(found["miou"], 1 / 3) and math.isclose(found["pixel_acc"], 3 / 5)
    torch.testing.assert_close(found["precision"], torch.tensor([0.5, 2 / 3, float("nan")], dtype=torch.float64),
                               equal_nan=True)  # nothing predicted as 2: precision has no value
    assert math.isclose(found["precision_mean"], (0.5 + 2 / 3) / 2) and found["pixels"] == 5
    assert math.isclose(found["recall_mean"], (0.5 + 1.0 + 0.0) / 3)


# --- the recipes' schedule, class weights, your own model ---------------------------------------------------------
def test_poly_and_warmup_follow_the_formula():
    from fastseg.training.optim import lr_factor

    total, warmup = 100, 10
    assert lr_factor(0, schedule="poly", total=total, warmup=warmup) == pytest.approx(1 / 10)
    assert lr_factor(4, schedule="poly", total=total, warmup=warmup) == pytest.approx(5 / 10)
    for step in (10, 37, 99):
        assert lr_factor(step, schedule="poly", total=total, warmup=warmup) == pytest.approx((1 - step / total) ** 0.9)
    assert lr_factor(50, schedule="poly", total=total, min_ratio=0.1) == pytest.approx(0.1 + 0.9 * 0.5 ** 0.9)
    assert lr_factor(total, schedule="cosine", total=total, min_ratio=0.2) == pytest.approx(0.2)
    assert lr_factor(total // 2, schedule="cosine", total=total) == pytest.approx(0.5)


def test_median_frequency_weights_and_the_weighted_loss():
    from fastseg.training.optim import median_frequency_weights

    weights = median_frequency_weights([600, 300, 100, 0])
    assert weights == pytest.approx([0.5, 1.0, 3.0, 0.0])  # median of 0.6, 0.3, 0.1 is 0.3; an absent class: 0
    logits, mask = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
    mask[0, :2] = 255
    w = torch.tensor([0.5, 1.0, 3.0])
    expected = torch.nn.functional.cross_entropy(logits, mask, weight=w, ignore_index=255)
    assert segmentation_loss(logits, mask, class_weights=w) == pytest.approx(expected.item(), rel=1e-5)


def test_your_own_model_is_built_by_name_with_clear_errors():
    from fastseg.training.model import build_model, parse_model_args

    net = build_model("tests.custom_model:build", parse_model_args(["width=6", "depth=1"]), 3)
    assert net(torch.zeros(1, 3, 16, 16)).shape == (1, 3, 16, 16) and net[0].out_channels == 6
    assert parse_model_args(["name=resnet34", "ratio=0.5", "pretrained=None"]) == {
        "name": "resnet34", "ratio": 0.5, "pretrained": None}
    for path, message in (("nope.nowhere:build", "cannot import nope.nowhere"), ("tests.custom_model", "write"),
                          ("tests.custom_model:missing", "has no function missing"),
                          ("tests.custom_model:not_a_module", "returned a str, not a torch.nn.Module")):
        with pytest.raises(FastsegError, match=message):
            build_model(path, {}, 3)
    with pytest.raises(FastsegError, match="KEY=VALUE"):
        parse_model_args(["width"])


def test_settings_travel_as_objects_and_older_flat_checkpoints_still_load(tmp_path):
    from fastseg.training import OptimSettings, Scoring, SegModule
    from fastseg.training.module import load_segmodule

    common = dict(class_colors=[[0, 0, 0]] * 3, mean=[0.5] * 3, std=[0.25] * 3, image_size=(32, 32), width=4)
    module = SegModule(["a", "b", "c"], optim=OptimSettings(optimizer="sgd", lr=0.02), **common,
                       scoring=Scoring(mode="slide", window=(16, 16), stride=(8, 8), size=(40, 40)))
    assert module.hparams.optim["lr"] == 0.02 and module.hparams.scoring["window"] == (16, 16)  # plain values
    path = tmp_path / "new.ckpt"
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, path)
    again = load_segmodule(path, "cpu")
    assert again.optim == module.optim and again.scoring == module.scoring
    # written before the settings objects: the same settings as flat keywords
    flat = {k: v for k, v in module.hparams.items() if k not in ("optim", "scoring")}
    flat.update(optimizer="sgd", lr=0.02, weight_decay=1e-4, schedule="cosine", warmup_steps=0, min_lr=0.0, epochs=20,
                eval_mode="slide", eval_window=(16, 16), eval_stride=(8, 8), eval_size=(40, 40))
    torch.save({"hyper_parameters": flat, "state_dict": module.state_dict()}, tmp_path / "old.ckpt")
    old = load_segmodule(tmp_path / "old.ckpt", "cpu")
    assert old.optim == module.optim and old.scoring == module.scoring
    torch.testing.assert_close(old.model.inc[0].weight, module.model.inc[0].weight)
    with pytest.raises(FastsegError, match="unknown optimizer"):
        OptimSettings(optimizer="adam")
