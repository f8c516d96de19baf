"""Every benchmark the README's headline figures quote, rerun on the current code by one command, and the figures
rendered from the results files alone (no figure is typed by hand).

    python benchmarks/suite.py [--quick] [--only NAME ...] [--render] [--check]

Without --render it runs the benchmarks (all, or --quick's CPU subset, or --only the named ones) into
benchmarks/results/, each file recording its commit, host and library versions, then renders. --render rebuilds,
from the committed results files alone, the README's headline table (between its `headline` markers) and
docs/current.md; --check renders in memory and fails where the committed files differ (tests/test_docs.py runs it).

The sets: the DAVIS subset from ../shared/data (sharded here with --val-fraction 0), and DAVIS ×10 (its 100 pairs
linked ten times under other names, the recipe benchmark's set).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DAVIS = ROOT.parent / "shared" / "data" / "davis2016_subset"
README, CURRENT = ROOT / "README.md", ROOT / "docs" / "current.md"
START, END = "<!-- headline:start (benchmarks/suite.py --render) -->", "<!-- headline:end -->"


@dataclass(frozen=True)
class Benchmark:
    name: str
    stem: str  # benchmarks/results/STEM.{json,md}
    title: str
    argv: tuple[str, ...]  # the script and its arguments; {davis}, {davis10}, {shards}, {shards10} filled in
    quick: bool = True


BENCHMARKS = (
    Benchmark("mmseg", "loader_davis10_mmseg_window_cpu", "MMSegmentation's recipe against albumentations",
              ("loader_bench.py", "--data", "{davis10}", "--shards", "{shards10}", "--augment", "mmseg", "--size", "512",
               "512", "--base-size", "480", "854", "--ratio-range", "0.5", "2.0", "--workers", "2", "--loaders",
               "vanilla", "torch", "torch_full", "dali_cpu", "dali_cpu_full", "albumentations_r1",
               "albumentations_r2"), quick=False),
    Benchmark("crop", "loader_davis_crop_window_cpu", "Random scale-crop against the tutorial DataLoader",
              ("loader_bench.py", "--data", "{davis}", "--shards", "{shards}", "--augment", "crop", "--workers", "2",
               "--loaders", "vanilla", "torch", "torch_full", "dali_cpu", "dali_cpu_full")),
    Benchmark("stages", "dali_stages_davis10_mmseg_window_cpu", "Where the recipe's time goes",
              ("dali_stages.py", "--shards", "{shards10}", "--augment", "mmseg", "--size", "512", "512",
               "--base-size", "480", "854", "--threads", "2")),
    Benchmark("stores", "stores_davis_cpu", "Both loaders from local store servers, clean and with faults",
              ("store_bench.py", "--data", "{davis}", "--workers", "2")),
    Benchmark("ranged_reads", "ranged_reads_cpu", "Ranged reads by client", ("ranged_reads.py",)),
)


def headline(results: dict[str, dict]) -> list[str]:
    """The README's table: each figure computed from its results file."""
    rows = ["| what | figure | results file | code |", "|---|---|---|---|"]

    def row(name: str, what: str, figure: str) -> None:
        stem = next(b.stem for b in BENCHMARKS if b.name == name)
        rows.append(f"| {what} | {figure} | [{stem}](benchmarks/results/{stem}.md) | "
                    f"{results[name]['host'].get('commit') or 'not recorded'} |")

    if "mmseg" in results:
        rates = {k: v["samples_per_s"] for k, v in results["mmseg"]["runs"][0]["loaders"].items()
                 if "samples_per_s" in v}
        peer = max(rates.get("albumentations_r1", 0), rates.get("albumentations_r2", 0))
        row("mmseg", "MMSegmentation's recipe (DAVIS ×10, 512² crops, 2 workers): fastseg DALI on the CPU against "
                     "albumentations' best", f"**{rates['dali_cpu'] / peer:.2f}×** ({rates['dali_cpu']:.1f} against "
                                             f"{peer:.1f} samples/s)")
        row("mmseg", "the same, fastseg's torch loader", f"**{rates['torch'] / peer:.2f}×** ({rates['torch']:.1f} "
                                                          "samples/s)")
    if "crop" in results:
        rates = {k: v["samples_per_s"] for k, v in results["crop"]["runs"][0]["loaders"].items()
                 if "samples_per_s" in v}
        row("crop", "random scale-crop at the native size (DAVIS, 2 workers): DALI on the CPU against the tutorial "
                    "DataLoader", f"**{rates['dali_cpu'] / rates['vanilla']:.2f}×** ({rates['dali_cpu']:.1f} against "
                                  f"{rates['vanilla']:.1f} samples/s)")
    if "stages" in results:
        row("stages", "where the recipe's time goes (DALI's feed, step by step)",
            f"whole loader at {results['stages']['loader_of_whole_frames_decode']:.2f} of whole-frame decoding")
    if "ranged_reads" in results:
        cpu = results["ranged_reads"]["client_cpu_ms_per_read"]
        row("ranged_reads", "ranged reads from a store: the client's CPU per read, "
                            + " / ".join(cpu), "**" + " / ".join(f"{v:.2f}" for v in cpu.values()) + " ms**")
    if "stores" in results:
        ratios = [f["faulty"] / f["clean"] for store in results["stores"]["stores"].values() for f in store.values()]
        row("stores", "both loaders from S3 (moto) and Azure (Azurite), beside the disk, clean and with "
                      f"{results['stores']['faults']:.0%} of reads failing",
            f"same batches; {min(ratios):.2f}–{max(ratios):.2f}× of clean")
    return rows


def current_page(results: dict[str, dict]) -> str:
    """docs/current.md: every benchmark's own page (the table its run published), under its title."""
    parts = ["# Current figures", "",
             "Rendered by `python benchmarks/suite.py --render` from the results files under `benchmarks/results/`; "
             "each section is its benchmark's own page, with the machine, the code it measured and its command. "
             "Rerun them all with `python benchmarks/suite.py` (`--quick`: the CPU subset).", ""]
    for bench in BENCHMARKS:
        page = RESULTS / f"{bench.stem}.md"
        if bench.name not in results or not page.exists():
            continue
        body = page.read_text().split("\n", 1)[1].strip()
        parts += [f"## {bench.title}", "", body, ""]
    return "\n".join(parts).rstrip() + "\n"


def load_results() -> dict[str, dict]:
    return {b.name: json.loads((RESULTS / f"{b.stem}.json").read_text()) for b in BENCHMARKS
            if (RESULTS / f"{b.stem}.json").exists()}


def rendered_readme(results: dict[str, dict]) -> str:
    text = README.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{README}: no headline markers ({START} ... {END})")
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    return before + START + "\n" + "\n".join(headline(results)) + "\n" + END + after


def render(check: bool) -> int:
    results = load_results()
    targets = {README: rendered_readme(results), CURRENT: current_page(results)}
    if check:
        stale = [str(path.relative_to(ROOT)) for path, text in targets.items()
                 if not path.exists() or path.read_text() != text]
        if stale:
            print(f"not what the results files render: {', '.join(stale)}; run python benchmarks/suite.py --render")
            return 1
        return 0
    for path, text in targets.items():
        path.write_text(text)
        print(f"rendered {path.relative_to(ROOT)}")
    return 0


def sets(tmp: Path) -> dict[str, str]:
    """The DAVIS subset and DAVIS ×10, as folders and as shard sets."""
    from fastseg.cli import run_cli
    from fastseg.cli.shard import main as shard_main

    davis10 = tmp / "davis10"
    for part in ("images", "masks"):
        (davis10 / part).mkdir(parents=True)
    for copy in range(10):
        for image in sorted((DAVIS / "images").iterdir()):
            (davis10 / "images" / f"r{copy}_{image.name}").symlink_to(image)
            (davis10 / "masks" / f"r{copy}_{image.stem}.png").symlink_to(DAVIS / "masks" / f"{image.stem}.png")
    found = {"davis": str(DAVIS), "davis10": str(davis10), "shards": str(tmp / "shards"),
             "shards10": str(tmp / "shards10")}
    for data, out in ((DAVIS, found["shards"]), (davis10, found["shards10"])):
        run_cli("fastseg-shard", shard_main, [str(data), out, "--val-fraction", "0", "--quiet"])
    return found


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the CPU subset (under 20 minutes on 2 cores)")
    p.add_argument("--only", nargs="+", choices=[b.name for b in BENCHMARKS], metavar="NAME")
    p.add_argument("--render", action="store_true", help="render from the committed results files; run nothing")
    p.add_argument("--check", action="store_true", help="with --render: fail where the committed files differ")
    args = p.parse_args()
    if args.render:
        return render(args.check)
    chosen = [b for b in BENCHMARKS if (not args.only or b.name in args.only) and (b.quick or not args.quick)]
    with tempfile.TemporaryDirectory(prefix="fastseg-suite-") as tmp:
        where = sets(Path(tmp))
        for bench in chosen:
            argv = [a.format(**where) for a in bench.argv] + ["--json", str(RESULTS / f"{bench.stem}.json")]
            print(f"== {bench.name}: {' '.join(argv)}", flush=True)
            done = subprocess.run([sys.executable, *argv], cwd=ROOT / "benchmarks")
            if done.returncode:
                print(f"{bench.name} failed ({done.returncode}); its results file is left as it was")
    return render(check=False)


if __name__ == "__main__":
    sys.exit(main())
