"""What a sample job is: everything done to one sample for one augmentation (or for scoring), in one module each
(job_flip.py: none and flip; job_crop.py; job_mmseg.py; job_rotate.py; job_scoring.py), looked up by the config
(jobs.py). A job holds

- its draws: every random parameter of a sample, from a generator seeded by (seed, epoch, sample) alone;
- its CPU executor: the sample's pixels made from its members and draws, as one `Sample` (what the torch loader's
  workers run, and DALI's feed on the CPU where the job runs there);
- its graph parameters: a vector laid out by a named `Record`, which the feed makes per sample and the DALI graph
  reads by name;
- its graph: the DALI steps, written against `ops` (dali.py's operators, so that this module needs no DALI).

The backends look the job up and run it; they never ask which one it is. docs/development.md shows how to add one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import LoaderConfig


@dataclass
class Sample:
    """One sample as a CPU executor makes it: an H×W×3 and an H×W uint8 array, and where its real content is
    smaller than the arrays (a padded crop) or than the batch (scoring), its sizes: (image rows, image columns,
    label rows, label columns)."""

    image: np.ndarray
    mask: np.ndarray
    sizes: tuple[int, int, int, int] | None = None


class Record:
    """A vector laid out by name: `Record(top=1, window=4)` has the field `top` at [0:1] and `window` at [1:5]; its
    fields are read from a numpy vector or a DALI node alike (`record.read(vector, "window")`), a field of width 1 as
its value."""

    def __init__(self, dtype, **widths: int):
        self.dtype = np.dtype(dtype)
        self.slices, start = {}, 0
        for name, width in widths.items():
            self.slices[name] = slice(start, start + width)
            start += width
        self.width = start

    def pack(self, **values) -> np.ndarray:
        """The vector holding `values` (each a number or a sequence of its field's width), every field given."""
        missing = set(self.slices) - set(values)
        if missing:
            raise ValueError(f"no value for {', '.join(sorted(missing))}")
        vector = np.empty(self.width, self.dtype)
        for name, value in values.items():
            vector[self.slices[name]] = np.ravel(value)
        return vector

    def read(self, vector, name: str):
        """The field `name` of `vector`: a value where its width is 1, else a slice."""
        found = self.slices[name]
        return vector[found.start] if found.stop - found.start == 1 else vector[found]


class Job:
    """A sample job's defaults: no draws, no graph parameters, run where the backend runs (see the module's
    docstring for what each method is)."""

    name: str
    parameters: Record | None = None  # what the feed hands the graph per sample, if anything
    mask_layout = ""  # "HWC" where the feed hands the graph a decoded mask (mmseg's crop)
    in_feed_on_cpu = False  # DALI on the CPU: the feed runs the CPU executor, the graph only pads and normalizes
    sized = False  # samples carry `Sample.sizes`: batched padded to the largest, padding zeroed after normalizing
    reports_sizes = False  # the batch carries "sizes" (scoring)

    def draw(self, rng: np.random.Generator, config: LoaderConfig) -> np.ndarray | None:
        return None

    def padded_to(self, config: LoaderConfig) -> tuple[int, int]:
        """The least (rows, columns) a batch of a `sized` job's samples is padded to (beyond: to its largest)."""
        return 0, 0

    def cpu(self, table, number: int, draws: np.ndarray | None) -> Sample:
        raise NotImplementedError

    def feed_row(self, table, number: int, draws: np.ndarray | None, row: list[np.ndarray]) -> list[np.ndarray]:
        """The columns the feed hands the graph for one sample (its members, `row`), and its parameters."""
        return row

    def graph(self, ops, image, mask, size, parameters, stop_after: str | None):
        """The DALI steps from a sample's stored members to a normalized image and a uint8 H×W mask (and what else
        the batch holds), cut after `stop_after` ("decode", "augment", "normalize") for benchmarks/dali_stages.py."""
        raise NotImplementedError
