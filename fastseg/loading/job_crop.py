"""augment="crop": a random scale-crop (area fraction in `scale`, aspect in [3/4, 4/3]) resized to the output size,
flipped through the same window.

Draws: [hflip, vflip, top, left, bottom, right] (the window as fractions of the image, unflipped). On the CPU (the
torch loader's workers, DALI's feed) only the image's region that the window reads is decoded (windows.py) and
resampled there; on a GPU the graph decodes that region (nvJPEG) and resamples it from the window, whose edges are
swapped along a flipped axis so that resampling flips."""
from __future__ import annotations

import numpy as np
from PIL import Image

from . import recipe
from .draws import coins, crop_box, crop_window, roi
from .job import Job, Record, Sample
from .job_flip import flipped
from .windows import decode_region, inside


class Crop(Job):
    name = "crop"
    in_feed_on_cpu = True
    # region: what the graph decodes (rows top..bottom, columns left..right); window: the crop inside it (pixel
    # edges, flipped edges swapped); mask_window: the crop over the whole mask, relative
    parameters = Record(np.float32, region=4, window=4, mask_window=4)

    def draw(self, rng, config):
        window = crop_window(rng, config.scale)
        return np.array([*coins(rng, config), *window], np.float32)

    def cpu(self, table, number, draws):
        """The drawn window resized to `size` (the image bilinearly at pixel centres, antialiased where it shrinks,
        as Pillow's BILINEAR; where it is enlarged along both axes, as at the native size, by OpenCV, whose bilinear
        is then the same filter at several times Pillow's speed; the mask by nearest neighbour), then flipped."""
        config = table.plan.config
        height, width = config.size
        mask = table.mask(number)
        x0, y0, x1, y1 = crop_box(draws, mask.shape[1], mask.shape[0])
        image, box = table.image_window(number, (y0, x0, y1, x1), config.size, config.window_decode)
        top, left, bottom, right = inside((y0, x0, y1, x1), box)
        if bottom - top <= height and right - left <= width:  # enlarged along both axes: antialiasing is moot
            image = recipe.resample_window(image, (top, left, bottom, right), (height, width))
        else:
            image = np.array(Image.fromarray(image).resize((width, height), Image.BILINEAR,
                                                           box=(left, top, right, bottom), reducing_gap=None))
        mask = np.array(Image.fromarray(mask).resize((width, height), Image.NEAREST, box=(x0, y0, x1, y1)))
        return Sample(flipped(image, draws), flipped(mask, draws))

    def feed_row(self, table, number, draws, row):
        rows, cols = table.row_shape(row)
        relative = roi(draws)
        window = relative * np.array([rows, cols, rows, cols], np.float32)  # pixel edges, flips swapped
        box = decode_region(window, (rows, cols), table.plan.config.size, table.windowed)
        return row + [self.parameters.pack(region=[box.top, box.left, box.bottom, box.right],
                                           window=inside(window, box), mask_window=relative)]

    def graph(self, ops, image, mask, size, parameters, stop_after):
        read = self.parameters.read
        image = ops.region_decoded(image, size, read(parameters, "region"))
        mask = ops.on_device(ops.decode(None, mask, size)[1])
        window, mask_window = read(parameters, "window"), read(parameters, "mask_window")
        image, mask = ops.resize(image, mask, ops.plan.size,
                                 dict(roi_start=window[0:2], roi_end=window[2:4], roi_relative=False),
                                 dict(roi_start=mask_window[0:2], roi_end=mask_window[2:4], roi_relative=True))
        if stop_after in ("decode", "augment"):
            return image, mask
        return ops.normalize_into(image, mask, ops.plan.config.size)


CROP = Crop()
