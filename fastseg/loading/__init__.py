"""Shard sets → batches: one contract (contract.py) over two backends, DALI and a torch DataLoader, with every
option in one LoaderConfig (config.py)."""
from .config import AUGMENTS, BACKENDS, LoaderConfig, native_size
from .datamodule import SegDataModule
from .make import make_loader

__all__ = ["AUGMENTS", "BACKENDS", "LoaderConfig", "SegDataModule", "make_loader", "native_size"]
