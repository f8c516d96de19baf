"""Scoring at the labels' resolution (LoaderConfig.original_labels): the mask exactly as the set holds it, the image
resized to its scoring size (`size`, or with keep_ratio its aspect-kept fit: LoaderConfig.scoring_size), no draws;
each sample's sizes (image rows, image columns, label rows, label columns) go with the batch, which pads images
with 0 (after normalization) and masks with ignore to its largest."""
from __future__ import annotations

import numpy as np
from PIL import Image

from .job import Job, Record, Sample


class Scoring(Job):
    name = "scoring"
    sized = True
    reports_sizes = True
    parameters = Record(np.int64, sizes=4)

    def cpu(self, table, number, draws):
        image, mask = table.pixels(number)
        rows, cols = mask.shape
        height, width = table.plan.config.scoring_size(rows, cols)
        if image.shape[:2] != (height, width):
            image = np.array(Image.fromarray(image).resize((width, height), Image.BILINEAR, reducing_gap=None))
        return Sample(image, mask, (height, width, rows, cols))

    def feed_row(self, table, number, draws, row):
        rows, cols = table.shape(number)
        return row + [self.parameters.pack(sizes=[*table.plan.config.scoring_size(rows, cols), rows, cols])]

    def graph(self, ops, image, mask, size, parameters, stop_after):
        image, mask = ops.decode(image, mask, size)
        if stop_after == "decode":
            return image, ops.on_device(mask)
        sizes = self.parameters.read(parameters, "sizes")
        return ops.for_scoring(image, mask, sizes)


SCORING = Scoring()
