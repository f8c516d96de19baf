"""augment="mmseg": MMSegmentation's standard training recipe (recipe.py says what each draw means): random resize
of `base_size` by `ratio_range` with the aspect kept, a `size` crop (padded where the image is smaller) drawn again
while one class fills more than `cat_max_ratio` of it, flips, and with `photometric` the colour steps.

Draws: [hflip, vflip, ratio, brightness, contrast, saturation, hue, DRAWS corner pairs] (draws.py). The crop is
chosen from the mask, so on a GPU the feed chooses it and hands the graph the mask's crop, the image's region to
decode, the window inside it and the colour transform."""
from __future__ import annotations

import numpy as np

from . import recipe
from .draws import COLOUR, CORNERS, DRAWS, HFLIP, RATIO, VFLIP, coins, photometric_draws
from .job import Job, Record, Sample
from .windows import decode_region, inside


class MMSeg(Job):
    name = "mmseg"
    in_feed_on_cpu = True
    sized = True  # a crop of an image resized below `size` is smaller: padded, its padding zeroed
    mask_layout = "HWC"  # the feed hands the graph the mask's crop, decoded
    # region: what the graph decodes; window: the crop inside it (pixel edges); colour: [M | t], 3×4
    parameters = Record(np.float32, region=4, window=4, colour=12)

    def draw(self, rng, config):
        draws = np.empty(CORNERS.stop, np.float32)
        draws[RATIO] = rng.uniform(*config.ratio_range)
        draws[HFLIP], draws[VFLIP] = coins(rng, config)
        draws[COLOUR] = photometric_draws(rng)
        draws[CORNERS] = rng.uniform(size=2 * DRAWS)
        return draws

    def padded_to(self, config):
        return config.size  # every batch at the output size, whatever its crops

    def cpu(self, table, number, draws):
        """The crop of the image and of the mask, at most `size` (the batch pads), and its (rows, columns)."""
        config = table.plan.config
        labels, window = recipe.crop_geometry(table.mask(number), draws, config.base_size, config.size,
                                              config.cat_max_ratio)
        image, box = table.image_window(number, window, labels.shape, config.window_decode)
        picture = recipe.resample_window(image, inside(window, box), labels.shape)
        if config.photometric:
            picture = recipe.photometric(picture, draws[COLOUR])
        return Sample(picture, labels, (*labels.shape, *labels.shape))

    def feed_row(self, table, number, draws, row):
        config = table.plan.config
        rows, cols = table.row_shape(row)
        labels, window = recipe.crop_geometry(table.row_mask(row), draws, config.base_size, config.size,
                                              config.cat_max_ratio)
        row[1] = labels[..., None]
        box = decode_region(window, (rows, cols), labels.shape, table.windowed)
        return row + [self.parameters.pack(region=[box.top, box.left, box.bottom, box.right],
                                           window=inside(window, box),
                                           colour=recipe.colour_transform(draws[COLOUR]).ravel())]

    def graph(self, ops, image, mask, size, parameters, stop_after):
        read = self.parameters.read
        image = ops.region_decoded(image, size, read(parameters, "region"))
        image = ops.resample_like(image, mask, read(parameters, "window"))  # bilinear, no antialiasing: mmseg's
        if ops.plan.config.photometric:
            image = ops.colour(image, read(parameters, "colour"))
        mask = ops.on_device(mask)
        if stop_after in ("decode", "augment"):
            return image, mask
        return ops.normalize_into(image, mask, ops.plan.config.size)


MMSEG = MMSeg()
