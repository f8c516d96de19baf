#!/usr/bin/env bash
# The main job end to end, from a fresh clone, with no download: install fastseg into .venv, generate a synthetic
# set (textured shapes, JPEG images, PNG masks, 4 classes, two image sizes), shard it, train a UNet with the DALI
# loader, predict masks for images it has never seen, and say where everything is. A few minutes on 2 CPU cores.
#   bash tools/demo.sh [OUT=demo]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-demo}
bash tools/setup.sh
bin=.venv/bin
rm -rf "$out"
"$bin/python" -m fastseg.shards.synthetic "$out/data" --count 240 --seed 0
"$bin/python" -m fastseg.shards.synthetic "$out/unseen" --count 6 --seed 1
"$bin/fastseg-shard" "$out/data" "$out/shards" --classes "$out/data/classes.json"
"$bin/fastseg-shard" --verify "$out/shards"
"$bin/fastseg-train" --shards "$out/shards" --out "$out/run" --loader dali --epochs 20 --image-size 128 \
    --width 16 --batch-size 16 --lr 3e-3
"$bin/fastseg-predict" --checkpoint "$out/run/checkpoints/best.ckpt" --input "$out/unseen/images" \
    --out "$out/predictions" --overlay
cat <<DONE

fastseg demo finished. Look at:
  $out/shards/manifest.json           the shard set: classes, mean/std, shards with sha256
  $out/shards/report.html             the set at a glance: class shares, sizes, samples, warnings
  $out/run/metrics.json               validation mIoU, Dice, precision, recall, F1, per-class IoU
  $out/run/previews/                  image | truth | prediction, one PNG per validation epoch
  $out/run/curves.png                 loss, mIoU, images/s and data stall by epoch (and per_class_iou.png)
  $out/run/checkpoints/best.ckpt      the best model by validation mIoU
  $out/predictions/                   palette masks and overlays for images the model never saw
  $out/run/logs/                      TensorBoard (.venv/bin/tensorboard --logdir $out/run/logs) and CSV logs
DONE
