"""Shard sets → batches: one contract (contract.py) over two backends, DALI and a torch DataLoader, with every
option in one LoaderConfig (config.py)."""
from .checks import check_shards
from .config import AUGMENTS, BACKENDS, LoaderConfig, native_size
from .datamodule import SegDataModule
from .make import make_loader
from .torch_backend import decode_image, draw_crop, member_pixels

# The DALI pipeline itself (loading.dali: DaliLoader, build_pipeline) is imported where it is used, so that the
# torch backend works without DALI installed.
__all__ = ["AUGMENTS", "BACKENDS", "LoaderConfig", "SegDataModule", "check_shards", "decode_image", "draw_crop",
           "make_loader", "member_pixels", "native_size"]
