"""What each loader does, checked by running it rather than read from its docs: exact mid-epoch resume, two ranks,
and a truncated shard; for fastseg's DALI and torch loaders, webdataset's own pipeline, LitData and MosaicML
Streaming (each as loader_bench.py runs it: recipe 2, the paired flip, batch 8, one worker, shuffled).

    python benchmarks/properties.py --shards DIR [--peer-python .peers-venv/bin/python] [--json PATH]

- exact resume: one process runs epoch 0 and K batches of epoch 1 and saves the loader's state (fastseg's
  `state()`, the peers' `state_dict()`); a new process restores it (`restore()`, `load_state_dict()`) and runs the
  rest of epoch 1. Its keys must equal, batch for batch, those of an uninterrupted process's epoch 1 from batch K
  on. A loader with no state to save is reported as such.
- 2 ranks: two processes (torch.distributed on gloo, and the environment variables each library reads) run one
  epoch each; their real samples must be disjoint and together the whole split, in equal numbers of batches.
- truncated shard: a copy of the set in each loader's own format, its first data file cut to half its length; one
  epoch within a time limit. The outcome: an error (its last line), a hang (killed at the limit), or what came out.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import provenance, publish
from peers import FORMATS as PEER_FORMATS
from peers import convert_peers
from servers import free_port

KINDS = ("dali", "torch", "webdataset", *PEER_FORMATS)
BATCH, RESUME_AT, LIMIT_S = 8, 3, 120


# --- in a child process: one loader ---------------------------------------------------------------------------
def build(kind: str, folder: Path, fastseg_set: Path, rank: int, world: int):
    """The loader over `folder` (its own format), normalizing with the fastseg set's mean/std: each iteration is
    one epoch of batches that carry their keys."""
    import numpy as np

    from fastseg.sets import load_manifest

    manifest = load_manifest(fastseg_set)
    mean, std = np.array(manifest.mean, np.float32), np.array(manifest.std, np.float32)
    if kind in ("dali", "torch"):
        from fastseg.loading import make_loader

        return make_loader(folder, backend=kind, batch_size=BATCH, augment="flip", return_keys=True, workers=1,
                           rank=rank, world_size=world, device="cpu")
    from peers import PeerEpochs, webdataset_loader

    if kind == "webdataset":  # webdataset's own way in: the tar files, nothing of fastseg's manifest or indexes
        urls = [str(p) for p in sorted(folder.glob("train-*.tar"))]
        return PeerEpochs(webdataset_loader(urls, mean, std, BATCH, 1, 2, ranks=world > 1), mean, std, 2)
    import peers

    return PeerEpochs(peers.loader(kind, folder, mean, std, BATCH, 1, 2), mean, std, 2)


def real_keys(batch) -> list[str]:
    return list(batch["key"][:batch["real"]])


def child(args) -> None:
    if args.world > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo", rank=args.rank, world_size=args.world)
    loader = build(args.child, args.folder, args.set, args.rank, args.world)
    epochs = []
    if args.phase == "resume":
        state = pickle.loads(args.state.read_bytes())
        if args.child in ("dali", "torch"):
            loader.restore(state)
        else:
            loader.loader.load_state_dict(state)
        epochs.append([real_keys(b) for b in loader])
    else:
        for epoch in range(args.epochs):
            batches = []
            for batch in loader:
                batches.append(real_keys(batch))
                if args.phase == "interrupt" and epoch == args.epochs - 1 and len(batches) == RESUME_AT:
                    if args.child in ("dali", "torch"):
                        state = loader.state()
                    elif hasattr(loader.loader, "state_dict"):
                        state = loader.loader.state_dict()
                    else:
                        raise SystemExit(f"{args.child}: the loader has no state to save")
                    args.state.write_bytes(pickle.dumps(state))
                    break
            epochs.append(batches)
    print(json.dumps({"epochs": epochs}))


# --- in the parent: the checks -----------------------------------------------------------------------------------
def outcome(proc: subprocess.Popen, limit: float = LIMIT_S) -> dict:
    """The child's JSON, or {"error": its last line}, or {"hang": …} when it outlives `limit`."""
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"hang": f"no end after {limit:.0f} s (killed)"}
    if proc.returncode:
        lines = [line for line in err.strip().splitlines() if line.strip()]
        return {"error": lines[-1][:300] if lines else f"exit {proc.returncode}"}
    return json.loads(out.strip().splitlines()[-1])


class Checks:
    """The three checks of one loader kind over `folder` (its own format), children run by `python`; every child
    normalizes with the fastseg set's mean/std."""

    def __init__(self, kind: str, folder: Path, python: str, fastseg_set: Path, keys: set[str], tmp: Path):
        self.kind, self.folder, self.python, self.fastseg_set, self.keys, self.tmp = (
            kind, folder, python, fastseg_set, keys, tmp)

    def run(self, phase: str, epochs: int = 1, state: Path | None = None, rank: int = 0, world: int = 1,
            env: dict | None = None, folder: Path | None = None) -> subprocess.Popen:
        argv = [self.python, __file__, "--child", self.kind, "--folder", str(folder or self.folder), "--set",
                str(self.fastseg_set), "--phase", phase, "--epochs", str(epochs), "--rank", str(rank),
                "--world", str(world)]
        if state:
            argv += ["--state", str(state)]
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def resume(self) -> dict:
        whole = outcome(self.run("epochs", epochs=2))
        if "epochs" not in whole:
            return {"ok": False, "what": f"uninterrupted run failed: {next(iter(whole.values()))}"}
        state = self.tmp / f"{self.kind}.state"
        cut = outcome(self.run("interrupt", epochs=2, state=state))
        if "epochs" not in cut:
            return {"ok": False, "what": next(iter(cut.values()))}
        resumed = outcome(self.run("resume", state=state))
        if "epochs" not in resumed:
            return {"ok": False, "what": f"restore failed: {next(iter(resumed.values()))}"}
        expected, got = whole["epochs"][1][RESUME_AT:], resumed["epochs"][0]
        same = got == expected
        return {"ok": same, "what": f"{len(got)} batches after batch {RESUME_AT} of epoch 1: "
                + ("the same keys, batch for batch" if same else
                   f"differ (first resumed batch {got[:1]}, expected {expected[:1]})")}

    def ranks(self) -> dict:
        port = free_port()
        procs = [self.run("epochs", rank=rank, world=2, env=dict(
            os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
            LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2")) for rank in range(2)]
        results = [outcome(proc) for proc in procs]
        if any("epochs" not in r for r in results):
            return {"ok": False, "what": "; ".join(f"rank {i}: {next(iter(r.values()))}"
                                                   for i, r in enumerate(results) if "epochs" not in r)}
        per_rank = [[k for batch in r["epochs"][0] for k in batch] for r in results]
        batches = [len(r["epochs"][0]) for r in results]
        shared = set(per_rank[0]) & set(per_rank[1])
        missing = self.keys - set(per_rank[0]) - set(per_rank[1])
        repeats = sum(len(keys) - len(set(keys)) for keys in per_rank)
        ok = not shared and not missing and not repeats and batches[0] == batches[1]
        return {"ok": ok, "what": f"{len(per_rank[0])} + {len(per_rank[1])} samples in {batches[0]} + {batches[1]} "
                f"batches; {len(shared)} on both ranks, {len(missing)} of {len(self.keys)} on neither, "
                f"{repeats} repeated", "batches": batches}

    def truncated(self) -> dict:
        copy = self.tmp / f"truncated-{self.kind}"
        shutil.copytree(self.folder, copy)
        data = sorted(p for p in copy.iterdir() if p.suffix in (".tar", ".bin", ".mds"))[0]
        os.truncate(data, data.stat().st_size // 2)
        result = outcome(self.run("epochs", folder=copy))
        cut = f"{data.name} cut to half"
        if "epochs" in result:
            came = sum(len(batch) for batch in result["epochs"][0])
            return {"ok": False, "what": f"{cut}: no error; {came} of {len(self.keys)} samples came out"
                    + (" (the rest silently skipped)" if came < len(self.keys) else "")}
        kind_of, text = next(iter(result.items()))
        return {"ok": kind_of == "error", "what": f"{cut}: {kind_of}: {text}"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", type=Path, help="a fastseg set on disk (its train split is used)")
    p.add_argument("--peer-python", default=sys.executable)
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    p.add_argument("--json", type=Path)
    p.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    p.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--set", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--phase", choices=("epochs", "interrupt", "resume"), default="epochs", help=argparse.SUPPRESS)
    p.add_argument("--epochs", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--state", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--world", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return 0
    if args.shards is None:
        p.error("give --shards (a fastseg set on disk)")
    from tqdm import tqdm

    from baselines import train_pairs

    keys = {Path(image).stem for image, _ in train_pairs(args.shards)}
    result = {"shards": str(args.shards), "batch_size": BATCH, "resume_at_batch": RESUME_AT, "limit_s": LIMIT_S,
              "samples": len(keys), "loaders": {}, **provenance()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        peer_kinds = [k for k in args.kinds if k in PEER_FORMATS]
        if peer_kinds:
            result["peers"] = convert_peers(peer_kinds, args.shards, tmp, args.peer_python, 1)
        progress = tqdm(total=3 * len(args.kinds), desc="checks", unit="check")
        for kind in args.kinds:
            folder = tmp / kind if kind in PEER_FORMATS else args.shards.resolve()
            python = args.peer_python if kind in PEER_FORMATS else sys.executable
            if kind in PEER_FORMATS and "error" in result["peers"]["conversion"][kind]:
                result["loaders"][kind] = {"error": result["peers"]["conversion"][kind]["error"]}
                progress.update(3)
                continue
            checker = Checks(kind, folder, python, args.shards.resolve(), keys, tmp)
            checks = {}
            for name, check in (("exact resume", checker.resume), ("2 ranks", checker.ranks),
                                ("truncated shard", checker.truncated)):
                progress.set_postfix_str(f"{kind}: {name}")
                checks[name] = check()
                progress.update()
            result["loaders"][kind] = checks
        progress.close()
    names = {"dali": "fastseg dali_cpu", "torch": "fastseg torch loader", "webdataset": "webdataset",
             "litdata": "LitData", "mosaic": "MosaicML Streaming"}
    rows = ["| loader | exact resume | 2 ranks: disjoint, complete, equal batches | truncated shard |",
            "|---|---|---|---|"]
    for kind, checks in result["loaders"].items():
        if "error" in checks:
            rows.append(f"| {names[kind]} | error: {checks['error']} | | |")
            continue
        cells = [("yes: " if c["ok"] else "**no**: ") + c["what"].replace("|", "/") for c in checks.values()]
        rows.append(f"| {names[kind]} | " + " | ".join(cells) + " |")
    publish(rows, args.json, result, f"Loader properties, checked: {args.shards.name} train split, {len(keys)} samples, "
            f"batch {BATCH}, one worker")
    return 0


if __name__ == "__main__":
    sys.exit(main())
