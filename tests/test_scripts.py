"""The loaders in users' own code, as they write it: a script file or a snippet on stdin, with no
`if __name__ == "__main__":` guard, where a plain DataLoader needs none either."""
from __future__ import annotations

import subprocess
import sys

import pytest

from fastseg.shards import ShardOptions, shard

from .conftest import make_dataset

TWIN = """
from fastseg.loading import make_loader
loader = make_loader({shards!r}, backend="torch", batch_size=3, workers=2, return_keys=True)
for epoch in range(2):
    keys = [k for batch in loader for k in batch["key"]]
print("torch", len(keys))
"""
DALI_FIRST = """
from fastseg.loading import make_loader
dali = make_loader({shards!r}, backend="dali", batch_size=3, workers=2)
print("dali", sum(batch["real"] for batch in dali))
""" + TWIN
SHARD = """
from pathlib import Path
from fastseg.shards import ShardOptions, shard
shard(Path({data!r}), Path({out!r}), ShardOptions(workers=2, progress=False, val_fraction=0))
print("sharded")
"""


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("scripts")
    make_dataset(root / "data", count=9, size=(32, 24))
    shard(root / "data", root / "shards", ShardOptions(val_fraction=0, progress=False, workers=2))
    return root


def run(code: str, how: str, folder) -> str:
    if how == "file":
        script = folder / "script.py"
        script.write_text(code)
        argv, stdin = [sys.executable, str(script)], None
    else:
        argv, stdin = [sys.executable, "-"], code
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=180, cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize("how", ["file", "stdin"])
def test_the_torch_loader_runs_in_an_unguarded_script(how, sets, tmp_path):
    out = run(TWIN.format(shards=str(sets / "shards")), how, tmp_path)
    assert out.count("torch 9") == 1  # 9 samples in 3 batches; the script ran once, not again in each worker


def test_the_torch_loader_after_dali_in_the_same_unguarded_script(sets, tmp_path):
    # DALI's threads run in this process, so the torch loader's workers start from a forkserver, with the script's
    # file hidden from them (code from stdin hides its '<stdin>' the same way): the script still runs once
    out = run(DALI_FIRST.format(shards=str(sets / "shards")), "file", tmp_path)
    assert out.splitlines() == ["dali 9", "torch 9"]


def test_shard_runs_in_an_unguarded_script(sets, tmp_path):
    out = run(SHARD.format(data=str(sets / "data"), out=str(tmp_path / "out")), "file", tmp_path)
    assert out.count("sharded") == 1 and (tmp_path / "out/manifest.json").exists()
