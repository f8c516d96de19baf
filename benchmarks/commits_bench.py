"""Two commits side by side: a benchmark (loader_bench.py, or shard_bench.py) run on each commit in turn,
alternating, in one run, so that a change can be shown to cost no speed beyond the noise between runs minutes apart.

    python benchmarks/commits_bench.py --before REV --after REV [--bench loader_bench.py] [--repeats 2] --json PATH \
        -- BENCH_ARGS

Each commit is checked out once (git worktree, in a temporary folder) and its own benchmarks/BENCH runs with that
commit's fastseg first on the path, in this environment; the arguments after `--` are the benchmark's (a shard set
must be one both commits read). Order: before, after, before, after, ... Every run's samples/s per loader (or per
dataset) goes into the table and the JSON, with the spread of each commit's runs.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import provenance, publish

ROOT = Path(__file__).resolve().parents[1]


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout.strip()


def run_bench(tree: Path, bench: str, bench_args: list[str], out: Path) -> dict:
    """benchmarks/BENCH of the checkout at `tree`, with that checkout's fastseg first on the path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    subprocess.run([sys.executable, str(tree / "benchmarks" / bench), *bench_args, "--json", str(out)],
                   check=True, cwd=tree, env=env, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def rates(result: dict) -> dict[str, float]:
    """samples/s by loader (loader_bench.py) or by dataset (shard_bench.py)."""
    if "runs" in result:
        return {name: row["samples_per_s"] for run in result["runs"] for name, row in run["loaders"].items()}
    return {name: row["samples_per_s"] for name, row in result["datasets"].items()}


def main() -> None:
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", required=True, help="the commit before the change")
    p.add_argument("--after", default="HEAD", help="the commit with it")
    p.add_argument("--bench", default="loader_bench.py", choices=("loader_bench.py", "shard_bench.py"))
    p.add_argument("--repeats", type=int, default=2, help="runs of each commit, alternated")
    p.add_argument("--title", default="The loaders before and after a change")
    p.add_argument("--json", type=Path)
    args, bench_args = p.parse_args(argv[:split]), argv[split + 1:]
    commits = {"before": git("rev-parse", "--short", args.before), "after": git("rev-parse", "--short", args.after)}
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        trees = {}
        for role, commit in commits.items():
            trees[role] = Path(tmp) / role
            git("worktree", "add", "--detach", str(trees[role]), commit)
        try:
            for repeat in range(args.repeats):
                for role in commits:
                    found = rates(run_bench(trees[role], args.bench, bench_args, Path(tmp) / f"{role}{repeat}.json"))
                    runs.append({"order": len(runs) + 1, "code": role, "commit": commits[role], "samples_per_s": found})
                    print(f"{len(runs)}. {role} ({commits[role]}): {found}", file=sys.stderr, flush=True)
        finally:
            for tree in trees.values():
                git("worktree", "remove", "--force", str(tree))
    loaders = list(runs[0]["samples_per_s"])
    rows = [f"| order | code | {' | '.join(loaders)} |", "|---:|---|" + "---:|" * len(loaders)]
    rows += [f"| {run['order']} | {run['code']} ({run['commit']}) | "
             + " | ".join(f"{run['samples_per_s'][name]:.1f}" for name in loaders) + " |" for run in runs]
    summary = {}
    for role in commits:
        mine = [run["samples_per_s"] for run in runs if run["code"] == role]
        summary[role] = {name: {"median": statistics.median(r[name] for r in mine), "min": min(r[name] for r in mine),
                                "max": max(r[name] for r in mine)} for name in loaders}
        rows.append(f"| | {role}: median (min–max) | " + " | ".join(
            f"{s['median']:.1f} ({s['min']:.1f}–{s['max']:.1f})" for s in summary[role].values()) + " |")
    rows.append("| | after ÷ before (medians) | " + " | ".join(
        f"{summary['after'][name]['median'] / summary['before'][name]['median']:.2f}×" for name in loaders) + " |")
    result = {"commits": commits, "bench": args.bench, "repeats": args.repeats, "bench_args": bench_args, "runs": runs,
              "summary": summary, **provenance()}
    publish(rows, args.json, result, args.title)


if __name__ == "__main__":
    main()
