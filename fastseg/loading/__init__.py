"""Shard sets → batches: one contract (contract.py) over two backends, DALI and a torch DataLoader."""
from .datamodule import SegDataModule
from .make import make_loader

__all__ = ["SegDataModule", "make_loader"]
