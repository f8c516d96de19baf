"""The sample jobs by name (job.py says what a job is): the one a config runs, and its draws for a sample."""
from __future__ import annotations

import numpy as np

from .config import LoaderConfig
from .job import Job
from .job_crop import CROP
from .job_flip import FLIP, NONE
from .job_mmseg import MMSEG
from .job_rotate import ROTATE
from .job_scoring import SCORING

JOBS = {job.name: job for job in (NONE, FLIP, CROP, MMSEG, ROTATE, SCORING)}


def job_for(config: LoaderConfig) -> Job:
    """What a (decided) config runs per sample: its augmentation's job, or scoring's (LoaderConfig.mode)."""
    return JOBS[config.mode]


def sample_draws(config: LoaderConfig, epoch: int, sample: int) -> np.ndarray | None:
    """Sample `sample` (its number in the split) of `epoch`: its parameters under the config's job, made from
    (seed, epoch, sample) alone, or None where the job draws nothing (none, and scoring)."""
    return job_for(config).draw(np.random.default_rng((config.seed, epoch, sample)), config)
