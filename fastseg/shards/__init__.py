"""Folders of images and masks → verified shard sets: find_pairs → masks → writer → verify."""
from .verify import verify
from .writer import ShardOptions, shard

__all__ = ["ShardOptions", "shard", "verify"]
