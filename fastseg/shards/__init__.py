"""Folders of images and masks → verified shard sets: pairs (or datasets) → masks → encode → writer → publish,
run in order by make.shard(); parts write a set on many machines and merge it; verify re-checks a finished set."""
from .encode import encode_sample, storage_for
from .make import shard
from .masks import detect_spec
from .options import ShardOptions
from .pairs import find_pairs
from .synthetic import generate
from .parts import merge, parse_part
from .verify import verify

__all__ = ["ShardOptions", "detect_spec", "encode_sample", "find_pairs", "generate", "merge", "parse_part", "shard",
           "storage_for", "verify"]
