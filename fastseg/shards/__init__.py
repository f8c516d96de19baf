"""Folders of images and masks → verified shard sets: pairs (or datasets) → masks → encode → writer → publish,
run in order by make.shard(); verify re-checks a finished set."""
from .encode import encode_sample
from .make import ShardOptions, shard
from .masks import detect_spec
from .pairs import find_pairs
from .verify import verify

__all__ = ["ShardOptions", "detect_spec", "encode_sample", "find_pairs", "shard", "verify"]
