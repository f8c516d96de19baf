"""A set written in parts, as N machines would (one process each), and merged: equal to a single machine's set,
refused while a part is missing, stale or written otherwise, on disk and (test_s3.py) in a bucket."""
from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import tarfile
from types import SimpleNamespace

import numpy as np
import pytest

from fastseg.cli import run_cli
from fastseg.cli.shard import main as shard_main
from fastseg.errors import FastsegError
from fastseg.loading import make_loader
from fastseg.sets import load_manifest
from fastseg.shards import ShardOptions, merge, parse_part, shard, verify

from .conftest import disk_mask, make_dataset, save, textured

QUIET = dict(progress=False, workers=1, max_count=3)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("parts") / "data", count=20, mask="index", classes=3)


def part_cli(src, out, part: str, *extra) -> SimpleNamespace:
    """One part as a machine of a job array runs it: the command, with its exit status and what it printed to
    stderr (in this process: the concurrent parts of the first test are processes of their own)."""
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
        status = run_cli("fastseg-shard", shard_main, [str(src), str(out), "--part", part, "--workers", "1",
                                                       "--max-count", "3", "--quiet", *map(str, extra)])
    return SimpleNamespace(returncode=status, stderr=errors.getvalue())


def samples(root) -> dict[str, dict[str, bytes]]:
    """Every sample of every split, by split and key: its members' bytes."""
    found = {}
    for split, info in load_manifest(root).splits.items():
        for s in info.shards:
            with tarfile.open(root / s.name) as tar:
                for member in tar:
                    key, _, ext = member.name.partition(".")
                    found.setdefault(split, {}).setdefault(key, {})[ext] = tar.extractfile(member).read()
    return found


def test_parts_merge_into_the_set_one_machine_writes(data, tmp_path, capsys):
    single = shard(data, tmp_path / "single", ShardOptions(**QUIET))
    runs = [subprocess.Popen([sys.executable, "-m", "fastseg.cli.shard", str(data), str(tmp_path / "parts"), "--part",
                              f"{i}/3", "--workers", "1", "--max-count", "3", "--quiet"], stderr=subprocess.PIPE,
                             text=True) for i in range(3)]  # concurrently, as three machines would
    assert [run.wait(timeout=120) for run in runs] == [0, 0, 0], [run.stderr.read() for run in runs]
    assert not (tmp_path / "parts" / "manifest.json").exists()  # parts alone never look like a finished set
    merged = merge(tmp_path / "parts")
    assert {s: i.samples for s, i in merged.splits.items()} == {s: i.samples for s, i in single.splits.items()}
    assert [c.name for c in merged.classes] == [c.name for c in single.classes]
    assert merged.class_pixels == single.class_pixels and merged.sizes == single.sizes
    assert merged.mean == pytest.approx(single.mean, abs=1e-6) and merged.std == pytest.approx(single.std, abs=1e-6)
    assert samples(tmp_path / "parts") == samples(tmp_path / "single")  # the same keys, byte for byte
    # shards listed round-robin by part, so that each rank's contiguous slice reads from every part
    first = [s.name for s in merged.splits["train"].shards[:3]]
    assert first == ["train-p00000-000000.tar", "train-p00001-000000.tar", "train-p00002-000000.tar"]
    # an ordinary set: --verify, both loaders
    assert verify(tmp_path / "parts") == []
    for backend in ("dali", "torch"):
        keys = [k for b in make_loader(tmp_path / "parts", backend=backend, batch_size=4, workers=0, shuffle=False,
                                       return_keys=True) for k in b["key"][: b["real"]]]
        assert sorted(keys) == sorted(samples(tmp_path / "single")["train"])
    # merging twice writes the same manifest
    before = (tmp_path / "parts" / "manifest.json").read_text()
    merge(tmp_path / "parts")
    assert (tmp_path / "parts" / "manifest.json").read_text() == before


def test_a_merge_refuses_missing_stale_and_mismatched_parts(data, tmp_path):
    out = tmp_path / "parts"
    for i in (0, 2):
        assert part_cli(data, out, f"{i}/3").returncode == 0
    with pytest.raises(FastsegError, match=r"1 of 3 parts are missing \(1: no part-00001-of-00003.json"):
        merge(out)
    assert not (out / "manifest.json").exists()
    done = part_cli(data, out, "1/3", "--seed", "7")  # written with another seed: another split and order
    assert done.returncode == 0, done.stderr
    with pytest.raises(FastsegError, match=r"part\(s\) 1 were written with other options or sources than part 0"):
        merge(out)
    # a rerun replaces that part's own files and no other's
    others = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if "-p00001-" not in p.name and "00001-of" not in p.name}
    assert part_cli(data, out, "1/3").returncode == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name in others} == others
    merge(out)
    # a shard that does not match its record (cut short, say) is named with the part to rerun
    cut = out / "train-p00002-000000.tar"
    cut.write_bytes(cut.read_bytes()[:1024])
    with pytest.raises(FastsegError, match=r"train-p00002-000000.tar: 1024 bytes, its record says \d+ \(part 2\); "
                                           r"rerun part 2"):
        merge(out)
    assert part_cli(data, out, "2/3").returncode == 0  # a part run takes the stale manifest away first
    assert not (out / "manifest.json").exists()
    merge(out)
    assert verify(out) == []


def test_parts_refuse_what_could_disagree(data, tmp_path):
    colors = np.array([[0, 0, 0], [255, 0, 0], [0, 0, 255]], np.uint8)
    for i in range(4):
        save(textured(24, 16, i), tmp_path / "rgb" / "images" / f"a{i}.png")
        save(colors[disk_mask(24, 16, i, 3)], tmp_path / "rgb" / "masks" / f"a{i}.png")
    done = part_cli(tmp_path / "rgb", tmp_path / "out", "0/2")
    assert done.returncode == 1 and "give the classes with --classes FILE" in done.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    for bad, message in (("3/3", "counts from 0 to 2"), ("1-2", "write I/N"), ("auto", "SLURM_ARRAY_TASK_ID")):
        with pytest.raises(FastsegError, match=message):
            parse_part(bad, environ={})
    assert parse_part("auto", environ={"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1",
                                       "SLURM_ARRAY_TASK_COUNT": "8"}) == (4, 8)
    save(np.zeros((4, 4), np.uint8), tmp_path / "other" / "notes.png")  # an OUT that holds something else
    done = part_cli(data, tmp_path / "other", "0/2")
    assert done.returncode == 1 and "notes.png, which are not parts of a set" in done.stderr
    with pytest.raises(FastsegError, match="no part records"):
        merge(tmp_path / "other")


def test_parts_as_ray_tasks(data, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed here (pip install ray); the recipe is in the README")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        @ray.remote
        def part(i: int, n: int) -> int:
            return shard(data, tmp_path / "ray", ShardOptions(part=(i, n), **QUIET)) is None

        assert ray.get([part.remote(i, 2) for i in range(2)]) == [True, True]
    finally:
        ray.shutdown()
    assert sum(s.samples for s in merge(tmp_path / "ray").splits.values()) == 20
