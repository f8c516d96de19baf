"""One set written by N workers anywhere (a SLURM array, Ray tasks, a Kubernetes indexed Job), merged exactly.

Every part lists the same sources and makes the same decisions (the splits, including a carved-out validation
split; the mask kind and class table: sources.py), puts each split in the same seeded order, and takes every N-th
pair of it from its own index on. It writes its shards under names no other part uses (`train-p00003-000000.tar`)
and, last, a record (`part-00003-of-00008.json`): its shards as the manifest lists them, the exact integer counts
the statistics are made of (pixel values per channel, stored mask values per split, image sizes), the mask spec,
and a fingerprint of the options and the sources. `merge()` checks that all N records are there, agree and match
their shards (from one listing: no shard is read), adds the counts up and writes the one manifest, last. The
merged set is an ordinary set, equal to a single machine's (the same samples, byte for byte; the same statistics).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

from .. import storage
from ..errors import FastsegError
from ..format import (
    FORMAT_VERSION,
    MANIFEST,
    PART_RECORD,
    PART_SHARD,
    Manifest,
    ShardInfo,
    SplitInfo,
    listing,
    part_record_name,
)
from ..sets import size_problems
from ..settings import declared
from .encode import storage_for
from .masks import MaskSpec
from .options import ShardOptions
from .pairs import Pair
from .publish import publish_files
from .sources import encoding_pool, in_shard_order, pairs_and_spec
from .writer import Stats, manifest_from, write_shards



def parse_part(text: str, environ=os.environ) -> tuple[int, int]:
    """`--part I/N` (0 <= I < N), or `--part auto`: SLURM's array task (SLURM_ARRAY_TASK_ID, counted from
    SLURM_ARRAY_TASK_MIN, of SLURM_ARRAY_TASK_COUNT)."""
    if text == "auto":
        if "SLURM_ARRAY_TASK_ID" not in environ or "SLURM_ARRAY_TASK_COUNT" not in environ:
            raise FastsegError("--part auto reads a SLURM job array's SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT, "
                               "which are not set here; give --part I/N (a Kubernetes indexed Job: "
                               "--part $JOB_COMPLETION_INDEX/N)")
        first = int(environ.get("SLURM_ARRAY_TASK_MIN", 0))
        index, count = int(environ["SLURM_ARRAY_TASK_ID"]) - first, int(environ["SLURM_ARRAY_TASK_COUNT"])
    else:
        index_text, slash, count_text = text.partition("/")
        if not slash or not index_text.isdigit() or not count_text.isdigit():
            raise FastsegError(f"--part {text!r}: write I/N (part I of N, counted from 0), or auto")
        index, count = int(index_text), int(count_text)
    if not 0 <= index < count:
        raise FastsegError(f"--part {index}/{count}: the part number counts from 0 to {count - 1}")
    return index, count


def fingerprint(splits: dict[str, list[Pair]], spec: MaskSpec, opts: ShardOptions) -> str:
    """What every part must agree on: the deciding options, the part count, the mask spec, and the sources (each
    pair's key and file sizes, per split: machines may mount the data under other paths)."""
    options = {spec.name: getattr(opts, spec.name) for spec in declared(ShardOptions) if spec.metadata["deciding"]}
    options["parts"] = opts.part[1]
    options["classes"] = hashlib.sha256(Path(opts.classes).read_bytes()).hexdigest() if opts.classes else None
    sources = {split: [(p.key, p.image.stat().st_size, p.mask.stat().st_size) for p in pairs]
               for split, pairs in splits.items()}
    text = json.dumps([options, asdict(spec), sources], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def write_part(src: Path, out, opts: ShardOptions) -> dict:
    """Write part I of N of the set under OUT (a folder or an object-store prefix): its shards, then its record. A rerun
    replaces this part's files and no other's. Returns the record."""
    index, count = opts.part
    splits, spec, layout = pairs_and_spec(src, opts)
    if spec.kind == "rgb" and not spec.fixed:
        raise FastsegError("colour masks without --classes: each part would take its class ids from the colours of "
                           "its own masks, and parts could disagree; give the classes with --classes FILE (names and "
                           "colours), the same file to every part")
    mine = {split: pairs[index::count] for split, pairs in in_shard_order(splits, opts.seed).items()}
    stored = storage_for(opts.store, splits)
    record = {"format_version": FORMAT_VERSION, "part": index, "parts": count, "storage": stored,
              "fingerprint": fingerprint(splits, spec, opts), "spec": asdict(spec), "layout": layout}
    print(f"part {index} of {count}: {', '.join(f'{s} {len(p)}' for s, p in mine.items())} of "
          f"{', '.join(f'{s} {len(p)}' for s, p in splits.items())}")
    with tempfile.TemporaryDirectory(prefix="fastseg-part-") as tmp:
        folder = Path(tmp)
        with encoding_pool(opts.workers) as pool:
            infos, stats = write_shards(pool, mine, spec, folder, shard_size=opts.shard_size, max_count=opts.max_count,
                                        resize_masks=opts.resize_masks, progress=opts.progress, storage=stored,
                                        part=opts.part)
        record.update(splits={split: asdict(info) for split, info in infos.items()}, stats=stats.to_record())
        (folder / part_record_name(index, count)).write_text(json.dumps(record) + "\n")
        _publish(folder, storage.location(str(out)), index, count, opts.progress)
    print(f"wrote part {index} of {count} to {out}; when all {count} are there: fastseg-shard --merge {out}")
    return record


def _own(name: str, index: int) -> bool:
    """Whether a file of the set belongs to part `index` (its shards and indexes, its record)."""
    found = PART_RECORD.match(name) or PART_SHARD.match(name)
    number = found.group(1) if found and PART_RECORD.match(name) else found.group(2) if found else None
    return number is not None and int(number) == index


def _check_target(names: list[str], where: str) -> None:
    """A part may join a folder of parts (and their merged manifest), nothing else."""
    foreign = sorted(n for n in names if not (n == MANIFEST or PART_RECORD.match(n) or PART_SHARD.match(n)))
    if foreign:
        raise FastsegError(f"{where} holds {listing(foreign)}, which are not parts of a set written with --part; "
                           "choose another OUT for the parts")


def _publish(folder: Path, out, index: int, count: int, progress: bool) -> None:
    """This part's files into OUT (a folder or a prefix), its record last: the merged manifest and this part's own
    earlier files are replaced, no other part's are touched."""
    storage.ensure_folder(out)
    # hidden names are files a killed run was still writing (atomic.partial_path): never part of the set
    existing = {name: size for name, size in storage.sizes(out).items() if not name.startswith(".")}
    _check_target(sorted(existing), str(out))
    own = {name: size for name, size in existing.items() if _own(name, index) or name == MANIFEST}
    publish_files(folder, out, own, progress, last=part_record_name(index, count))  # the record last: complete


def merge(out) -> Manifest:
    """The one manifest of a set written in parts, from their records, written last. Refused, with the parts
    named, while any part is missing, was written with other options or sources, or does not match its record."""
    root = storage.location(str(out))
    sizes = storage.sizes(root, missing=f"{root}: no such folder; write the parts first (fastseg-shard SRC {root} "
                                        "--part I/N)")
    records = []
    for name in sorted(n for n in sizes if PART_RECORD.match(n)):
        text = storage.read(storage.join(root, name)).decode()
        try:
            records.append(json.loads(text))
        except json.JSONDecodeError as err:
            raise FastsegError(f"{name} in {root}: unreadable ({err}); rerun that part") from err
    if not records:
        raise FastsegError(f"{root}: no part records (part-*-of-*.json); write the parts first "
                           f"(fastseg-shard SRC {root} --part I/N, for I = 0 .. N-1)")
    records = _complete(records, root)
    stats = Stats.from_records([r["stats"] for r in records])
    infos = {}
    for split in records[0]["splits"]:
        per_part = [[ShardInfo(**s) for s in r["splits"][split]["shards"]] for r in records]
        _check_shards(records, split, sizes, root)
        # round-robin by part, so that DALI's contiguous rank slices each read from every part
        shards = [part[k] for k in range(max(map(len, per_part))) for part in per_part if k < len(part)]
        infos[split] = SplitInfo(sum(s.samples for s in shards), shards)
    manifest = manifest_from(infos, stats, MaskSpec(**records[0]["spec"]), _storage(records),
                             records[0].get("layout"))
    storage.write_bytes(storage.join(root, MANIFEST), manifest.to_json().encode())  # whole or not at all
    print(f"merged {len(records)} part(s) into {root}: "
          f"{', '.join(f'{s} {i.samples} in {len(i.shards)} shard(s)' for s, i in manifest.splits.items())}; "
          f"{manifest.num_classes} classes")
    return manifest


def _storage(records: list[dict]) -> dict[str, str]:
    """The set's storage as its parts recorded it (their fingerprints agree); a record written before the field
    says its --store, which then named the images' storage alone."""
    return records[0].get("storage") or storage_for(records[0].get("store", "source"), {})


def _complete(records: list[dict], root) -> list[dict]:
    """The records of parts 0..N-1 of one run, in order; an error naming what is missing or disagrees."""
    counts = sorted({r["parts"] for r in records})
    if len(counts) > 1:
        raise FastsegError(f"{root} holds the records of runs in {' and '.join(map(str, counts))} parts; remove the "
                           "records of the run you do not want (part-*-of-N.json) or rerun every part")
    count = counts[0]
    by_index = {r["part"]: r for r in records}
    missing = [i for i in range(count) if i not in by_index]
    if missing:
        raise FastsegError(f"{len(missing)} of {count} parts are missing ({listing([str(i) for i in missing])}: no "
                           f"{part_record_name(missing[0], count)}, …); run them (fastseg-shard SRC {root} --part "
                           f"{missing[0]}/{count}), then merge again")
    ordered = [by_index[i] for i in range(count)]
    other = [r["part"] for r in ordered if r["fingerprint"] != ordered[0]["fingerprint"]]
    if other:
        raise FastsegError(f"part(s) {listing([str(i) for i in other])} were written with other options or sources "
                           f"than part 0; rerun them with the same SRC and options (or rerun every part)")
    return ordered


def _check_shards(records: list[dict], split: str, sizes: dict[str, int], root) -> None:
    """Every shard and index a record lists is there, the shard with the size recorded (from the listing)."""
    for record in records:
        shards = [ShardInfo(**s) for s in record["splits"][split]["shards"]]
        problems = size_problems(str(root), sizes, shards, record="its record")
        if problems:
            raise FastsegError(f"{problems[0]} (part {record['part']}); rerun part {record['part']} and merge again")
