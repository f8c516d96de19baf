"""`shard()`: image/mask folders → a verified shard set, the stages in order: find the pairs and decide how masks
become class ids (sources.py), encode them in a worker pool (encode.py), write shards, indexes and manifest
(writer.py), the report (report.py), and put the set in place on disk or in a bucket (publish.py). With a part (I of N), write that part
and its record instead, for `merge()` to make one set of (parts.py).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .. import storage
from ..format import REPORT, Manifest
from .encode import storage_for
from .options import ShardOptions
from .parts import write_part
from .publish import bucket_target, local_target, publish_files
from .sources import discover_classes, encoding_pool, in_shard_order, pairs_and_spec
from .writer import write_set


def shard(src: Path, out, opts: ShardOptions) -> Manifest | None:
    """Shard SRC into OUT: a folder, or a prefix in an object store (written locally first, then uploaded, manifest
    last).
    With `opts.part`, only that part is written (its shards and record; no manifest: None is returned)."""
    if opts.part is not None:
        write_part(src, out, opts)
        return None
    start = time.perf_counter()
    storage.check_writable(out)
    if storage.at(out).uploads:  # nothing can be renamed in an object store: uploaded, the manifest last
        root = str(out).rstrip("/")
        existing = bucket_target(root, opts.overwrite)  # before any work: an unreachable bucket fails in seconds
        with tempfile.TemporaryDirectory(prefix="fastseg-shard-") as tmp:
            manifest = _write(src, Path(tmp), opts, root)
            _summary(manifest, f"{root} (uploading)", time.perf_counter() - start)
            publish_files(Path(tmp), root, existing, opts.progress)
        print(f"uploaded to {root}, manifest last")
        return manifest
    with local_target(out, opts.overwrite) as tmp:
        manifest = _write(src, tmp, opts, str(out))
    _summary(manifest, out, time.perf_counter() - start)
    return manifest


def _write(src: Path, folder: Path, opts: ShardOptions, name: str) -> Manifest:
    """The set in `folder`, with its report.html (read back from the finished set, as fastseg-report reads any;
    `name`: where the set goes)."""
    from .report import write_report

    splits, spec, layout = pairs_and_spec(src, opts)
    with encoding_pool(opts.workers) as pool:
        discover_classes(pool, splits, spec)
        manifest = write_set(pool, in_shard_order(splits, opts.seed), spec, folder, shard_size=opts.shard_size,
                             max_count=opts.max_count, resize_masks=opts.resize_masks, progress=opts.progress,
                             storage=storage_for(opts.store, splits), layout=layout)
    write_report(folder, folder / REPORT, seed=opts.seed, name=name)
    return manifest


def _summary(manifest: Manifest, out: Path, seconds: float) -> None:
    samples = sum(s.samples for s in manifest.splits.values())
    nbytes = sum(sh.bytes for s in manifest.splits.values() for sh in s.shards)
    per_split = ", ".join(f"{name} {s.samples} in {len(s.shards)} shard(s)" for name, s in manifest.splits.items())
    stored = f"images {manifest.storage['image']}, masks {manifest.storage['mask']}"
    print(f"wrote {out}: {per_split}; {nbytes / 1e6:.1f} MB ({stored}); {manifest.num_classes} classes "
          f"({', '.join(c.name for c in manifest.classes[:12])}{' …' if manifest.num_classes > 12 else ''}); "
          f"{seconds:.1f} s, {samples / max(seconds, 1e-9):.1f} samples/s")
    for line in manifest.statistics.get("warnings", []):
        print(f"warning: {line}")
