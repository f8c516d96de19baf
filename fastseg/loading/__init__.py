"""Shard sets → batches: one contract (contract.py) and one sample layer (members.py: a member's bytes and pixels;
the sample jobs, one module each: job_flip.py, job_crop.py, job_mmseg.py, job_rotate.py, job_scoring.py, each its
draws, its CPU executor and its DALI graph (job.py says what a job is; jobs.py finds a config's); draws.py: the
draws' parts; recipe.py: what the mmseg recipe's draws mean; windows.py: the region of an image a crop keeps) under
two backends that only run the jobs, DALI (dali.py, fed by feed.py) and a torch DataLoader, with every option in
one LoaderConfig (config.py)."""
from . import draws, jobs, recipe, windows
from .config import AUGMENTS, BACKENDS, LoaderConfig, native_size
from .draws import draw_crop
from .jobs import job_for, sample_draws
from .make import make_loader
from .members import decode_image, member_pixels

__all__ = ["AUGMENTS", "BACKENDS", "LoaderConfig", "SegDataModule", "build_pipeline", "decode_image",
           "draw_crop", "draws", "job_for", "jobs", "make_loader", "member_pixels", "native_size", "recipe",
           "sample_draws", "windows"]


def __getattr__(name: str):
    """Imported when first asked for: the DALI pipeline (loading.dali), so that the torch backend works without DALI
    installed, and SegDataModule, so that what only reads sets (fastseg-shard's report) does not import Lightning
    (seconds of a command's start)."""
    if name == "build_pipeline":
        from .dali import build_pipeline

        return build_pipeline
    if name == "SegDataModule":
        from .datamodule import SegDataModule

        return SegDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
