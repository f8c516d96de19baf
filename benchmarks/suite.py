"""Every benchmark the documentation quotes, rerun on the current code by one command, and the pages' figures
rendered from the results files alone (no figure is typed by hand).

    python benchmarks/suite.py [--quick] [--only NAME ...] [--list] [--render] [--check]

Without --render it runs the CPU benchmarks (all; --quick: the subset that needs no extra install, under 20 minutes
on 2 cores; --only: the named ones) into benchmarks/results/, each file recording its commit, host and library
versions, then renders. --render rebuilds, from the committed results files alone, the README's headline table
(between its `headline` markers), docs/performance.md and its charts (docs/figures/); --check renders the pages in
memory and fails where the committed ones differ, or a chart they show is missing (tests/test_docs.py runs it).

The GPU benchmarks are run by the device kit (../shared/tools/device-kit) on a lent GPU machine, into the same
results files; this renderer shows them like the others, each with the code it measured.

The sets, made in a temporary folder for the run: the DAVIS subset and CamVid from ../shared/data, sharded here;
DAVIS ×10 (its 100 pairs linked ten times under other names, 1000 pairs).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import charts
from peers import PEER_PYTHON

ROOT = Path(__file__).parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FIGURES = ROOT / "docs" / "figures"
SHARED = ROOT.parent / "shared" / "data"
DAVIS, CAMVID = SHARED / "davis2016_subset", SHARED / "camvid"
SIDE = ROOT / ".side-packages"
README, PAGE = ROOT / "README.md", ROOT / "docs" / "performance.md"
START, END = "<!-- headline:start (benchmarks/suite.py --render) -->", "<!-- headline:end -->"
KIT = "../shared/tools/device-kit"
RECIPE = ("--augment", "mmseg", "--size", "512", "512", "--base-size", "480", "854", "--ratio-range", "0.5", "2.0")
PEERS = ("vanilla", "torch", "dali_cpu", "litdata_r1", "litdata_r2", "mosaic_r1", "mosaic_r2")


@dataclass(frozen=True)
class Benchmark:
    name: str
    stem: str  # benchmarks/results/STEM.{json,md}
    title: str
    about: str  # what it measures and why: prose with no figure in it (the figures come from the file)
    argv: tuple[str, ...] = ()  # the script and its arguments; {davis}, {davis10}, {shards}, {shards10}, {camvid},
    # {shards_val}, {camvid_shards}, {peer_python} filled in; empty: run elsewhere (the GPU kit)
    quick: bool = True  # in --quick's subset
    chart: str | None = None  # which of charts.py's charts draws it
    baseline: str = "vanilla"  # the chart's ratios: a loader's name, or best:PEER
    measured: str | None = None  # the commit, for files written before results recorded it
    side: tuple[str, ...] = ()  # packages that cannot share fastseg's environment: pip-installed once into SIDE,
    # on the benchmark's PYTHONPATH only
    headline: tuple = ()  # its rows of the headline table: functions of its results, each (what, figure) or None


# --- the headline rows: each a function of one benchmark's results, (what, figure), or None where it has no figure
def versus(ours: str, peer: str, what: str):
    """A row: loader `ours` against the best recipe of `peer`, in the file's last run."""
    def row(result: dict):
        rates = rates_of(result)
        theirs = charts.best_peer(rates, peer)
        if ours in rates and theirs:
            return what, (f"**{rates[ours] / rates[theirs]:.2f}×** ({rates[ours]:.1f} against {rates[theirs]:.1f} "
                          f"samples/s, {theirs})")
        return None
    return row


def stages_row(result: dict):
    return ("the recipe's loader against decoding whole frames alone (DALI, 2 CPU threads)",
            f"{result['loader_of_whole_frames_decode']:.2f} of its rate")


def shard_row(result: dict):
    found = {name: d["of_limit"] for name, d in result["datasets"].items() if d.get("of_limit")}
    if not found:
        return None
    return ("fastseg-shard against the decode-bound limit (2 CPU workers)",
            " / ".join(f"{share:.0%} ({name})" for name, share in found.items()))


def ranged_reads_row(result: dict):
    cpu = result["client_cpu_ms_per_read"]
    return ("ranged reads from a store, the client's CPU per read: " + " / ".join(cpu),
            "**" + " / ".join(f"{v:.2f}" for v in cpu.values()) + " ms**")


def stores_row(result: dict):
    runs = [run for store in result["stores"].values() for run in store.values()]

    def worst(label: str, base: str) -> list[float]:
        return [min(r / d for r, d in zip(run[label]["rates"], run[base]["rates"])) for run in runs]

    disk, faulty = worst("clean", "disk"), worst("faulty", "clean")
    gets = max(max(run["clean"]["gets"]) for run in runs)
    return (f"a set in S3 (moto) and Azure (Azurite) behind {result['latency_s'] * 1000:.0f} ms a request, both "
            "loaders through the shard cache: the worst epoch (the first included) against the same loader from "
            f"disk; with {result['cache_faults']:.0%} of GETs failing, against clean",
            f"**{min(disk):.2f}–{max(disk):.2f}×** of disk; {min(faulty):.2f}–{max(faulty):.2f}× with faults; at "
            f"most {gets} GETs an epoch for {result['set']['shards']} shards")


def gpu_flip_row(result: dict):
    rates = rates_of(result)
    if "dali_gpu" not in rates or "vanilla" not in rates:
        return None
    return (f"GPU ({result['host'].get('gpu')}): DALI's mixed decoding, DAVIS ×10 flip",
            f"**{rates['dali_gpu']:.0f} samples/s**, {rates['dali_gpu'] / rates['vanilla']:.1f}× the tutorial "
            "DataLoader")


def gpu_train_row(result: dict):
    found = {f"{loader}, {path}": rate for path, bars in charts.train_rates(result).items() for loader, rate in bars}
    if not found:
        return None
    best = max(found, key=found.get)
    return (f"GPU ({result['host'].get('gpu')}): training UNet-64 at 512², 16-mixed",
            f"**{found[best]:.0f} images/s** ({best})")


def rates_of(result: dict) -> dict[str, float]:
    """samples/s by loader in the file's last run (its largest worker count)."""
    return charts.loader_rates(charts.loader_runs(result)[-1])


BENCHMARKS = (
    Benchmark("peers", "peers_davis10_flip_cpu", "JPEG sets: fastseg against the loaders people use instead",
              "DAVIS ×10 (854×480 JPEG, 1000 pairs), the flip recipe at the native size, batch 16, 2 workers. The "
              "peers read their own formats, written from the same files (LitData's `optimize`, Mosaic's "
              "`MDSWriter`) or fastseg's shards (webdataset): recipe 1 normalizes in the workers as their docs do, "
              "recipe 2 hands uint8 over and normalizes the batch. Needs the peers' environment "
              "(`bash benchmarks/peers_setup.sh`).",
              ("loader_bench.py", "--data", "{davis10}", "--shards", "{shards10}", "--augment", "flip", "--workers",
               "2", "--loaders", *PEERS[:3], "webdataset_r2", *PEERS[3:], "--peer-python", "{peer_python}"),
              quick=False, chart="loader",
              baseline="best:litdata",
              headline=(versus("dali_cpu", "litdata", "JPEG set (DAVIS ×10, flip, 2 CPU workers): fastseg DALI "
                                                       "on the CPU against LitData's best"),)),
    Benchmark("peers_png", "peers_camvid_flip_cpu", "PNG sets: fastseg against the same peers",
              "CamVid's 367 training pairs (480×360 PNG images), flip, 2 workers. fastseg-shard stores a PNG set's "
              "images as raw pixels by default (`--store auto`; they are decoded once, when sharding), so its "
              "loaders skip the decode; LitData stores raw pixels too. (webdataset's own pipeline decodes files, "
              "so it is compared on the JPEG set only.)",
              ("loader_bench.py", "--data", "{camvid}/train", "--shards", "{camvid_shards}", "--augment", "flip",
               "--workers", "2", "--loaders", *PEERS, "--peer-python", "{peer_python}"), quick=False,
              chart="loader", baseline="best:litdata",
              headline=(versus("dali_cpu", "litdata", "PNG set (CamVid, flip, 2 CPU workers): the same"),)),
    Benchmark("mmseg", "loader_davis10_mmseg_window_cpu", "MMSegmentation's recipe against albumentations",
              "The recipe people train with (MMSegmentation's random resize with ratio 0.5–2.0, crop 512×512 with "
              "cat_max_ratio 0.75, flip, photometric distortion, pad) on DAVIS ×10, 2 workers; albumentations runs "
              "the same recipe in a DataLoader. `_full` decodes whole frames instead of the crop's window.",
              ("loader_bench.py", "--data", "{davis10}", "--shards", "{shards10}", *RECIPE, "--workers", "2",
               "--loaders", "vanilla", "torch", "torch_full", "dali_cpu", "dali_cpu_full", "albumentations_r1",
               "albumentations_r2"), quick=False, chart="loader", baseline="best:albumentations",
              headline=(
                  versus("dali_cpu", "albumentations", "MMSegmentation's recipe (DAVIS ×10, 512² crops, 2 CPU "
                                                       "workers): fastseg DALI on the CPU against albumentations' best"),
                  versus("torch", "albumentations", "the same, fastseg's torch loader"))),
    Benchmark("crop", "loader_davis_crop_window_cpu", "Random scale-crop against the tutorial DataLoader",
              "The DAVIS subset, random scale-crop at the native size, 2 workers; the tutorial DataLoader decodes "
              "with Pillow and crops in Python.",
              ("loader_bench.py", "--data", "{davis}", "--shards", "{shards}", "--augment", "crop", "--workers", "2",
               "--loaders", "vanilla", "torch", "torch_full", "dali_cpu", "dali_cpu_full"), chart="loader",
              headline=(versus("dali_cpu", "vanilla", "random scale-crop (DAVIS, 2 CPU workers): DALI on the CPU "
                                                      "against the tutorial DataLoader"),)),
    Benchmark("stages", "dali_stages_davis10_mmseg_window_cpu", "Where the recipe's time goes",
              "DALI's loader on the recipe above, cut after each stage, and the feed's steps timed alone: what is "
              "left between the loader and decoding whole frames.",
              ("dali_stages.py", "--shards", "{shards10}", *RECIPE[:-3], "--threads", "2"),
              headline=(stages_row,)),
    Benchmark("shard", "shard_cpu", "Sharding: fastseg-shard against the decode-bound limit",
              "fastseg-shard decodes and checks every image and mask, so its ceiling is the workers × one core's "
              "decode rate; its memory must not grow with the set (each set is also sharded as a quarter of itself).",
              ("shard_bench.py", "--data", "{davis10}", "{davis}", "{camvid}/train", "--workers", "2"),
              headline=(shard_row,)),
    Benchmark("parts", "parts_cpu", "Sharding in parts, then the merge",
              "N parts as concurrent processes on this one machine (as N machines would run them), the merge of "
              "their records, and the merge alone over simulated sets of many parts.",
              ("parts_bench.py", "--data", "{camvid}/train")),
    Benchmark("train", "train_davis_cpu", "Training on the CPU: the loader is not what limits it",
              "UNet width 16 at 256×256, batch 8, 2 workers: a plain PyTorch loop with each loader, and "
              "fastseg-train itself, read from its own meter. On 2 CPU cores the model is the bottleneck; the figure "
              "to read is the data stall (the share of the step spent waiting for the batch).",
              ("train_bench.py", "--shards", "{shards_val}", "--data", "{davis}", "--workers", "2"), chart="train"),
    Benchmark("stores", "stores_davis_cpu", "Both loaders from a bucket with a cloud's latency",
              "S3 (moto) and Azure Blob (Azurite) servers on this machine, each read through a proxy that holds "
              "every request 30 ms (a cloud's first byte) and passes everything or fails a share of the ranged GETs "
              "(25% of the shards' parts through the cache, 5% of the samples' GETs without), "
              "beside the same set on disk: DAVIS ×3 in 5 shards, epochs 1 to 3 one by one, the first (cold) timed "
              "from the loader's making, through the shard cache and by ranged reads (`cache none`). The chart shows "
              "the first epoch. That every epoch gives the disk's samples, faults or not, is checked by "
              "tests/test_s3.py, tests/test_stores.py and tests/test_cache.py as well.",
              ("store_bench.py", "--data", "{davis}", "--workers", "2"), chart="stores",
              headline=(stores_row,)),
    Benchmark("ranged_reads", "ranged_reads_cpu", "Ranged reads by client",
              "Why fastseg reads stores through obstore: 600 ranged reads of 64 KiB on 16 threads from one local "
              "moto server; the rate is the server's, the CPU per read is the reading process's own. s3fs comes from "
              "a side folder (`.side-packages/`, on its `PYTHONPATH` only): it pins its own botocore.",
              ("ranged_reads.py",), chart="ranged_reads", baseline="obstore", side=("s3fs", "boto3"),
              headline=(ranged_reads_row,)),
    Benchmark("gpu_flip", "loader_davis10_flip_gpu", "GPU: DALI's mixed decoding against the tutorial DataLoader",
              "DAVIS ×10 at the native size, batch 16, 4 and 16 workers/threads, one GPU (the device kit's `loader` "
              "step).", chart="loader", measured="c0099b7",
              headline=(gpu_flip_row,)),
    Benchmark("gpu_fhd", "loader_fhd_flip_gpu", "GPU: full-HD frames",
              "The DAVIS frames upscaled to 1920×1080 JPEG (300 pairs), 16 workers/threads, one GPU.", chart="loader",
              measured="c0099b7"),
    Benchmark("gpu_mmseg", "loader_davis10_mmseg_gpu", "GPU: MMSegmentation's recipe",
              "The recipe above with the GPU's `mixed` decoding of each crop's window (the device kit's `recipe` "
              "step).", chart="loader", baseline="best:albumentations"),
    Benchmark("gpu_train", "train_davis10_gpu", "GPU: training throughput",
              "UNet width 64 at 512×512, batch 16, 16-mixed, one GPU: the plain loop with each loader and "
              "fastseg-train (the device kit's `train-bench` step).", chart="train", measured="c0099b7",
              headline=(gpu_train_row,)),
)
BY_NAME = {b.name: b for b in BENCHMARKS}


def code(result: dict, bench: Benchmark) -> str:
    return result["host"].get("commit") or (f"{bench.measured} (before commits were recorded)" if bench.measured
                                            else "not recorded")


def headline(results: dict[str, dict], link) -> list[str]:
    """The headline table: each benchmark's own rows (Benchmark.headline), computed from its results file;
    `link(bench)` says where a row points."""
    rows = ["| what | figure | results | code |", "|---|---|---|---|"]
    for bench in BENCHMARKS:
        if bench.name not in results:
            continue
        for made in filter(None, (row(results[bench.name]) for row in bench.headline)):
            rows.append(f"| {made[0]} | {made[1]} | {link(bench)} | {code(results[bench.name], bench)} |")
    return rows


def page(results: dict[str, dict], alts: dict[str, str]) -> str:
    """docs/performance.md: the headline table, then each benchmark: what it measures, its chart, its own page."""
    parts = ["# Performance", "",
             "Every figure here is rendered by `python benchmarks/suite.py --render` from the results files under "
             "`benchmarks/results/` (JSON with the command, host, library versions and commit; a Markdown table); "
             "none is typed by hand. `python benchmarks/suite.py` reruns the CPU benchmarks on the current code "
             "(`--quick`: the subset that needs no extra install; `--only NAME`: one); the GPU ones are run by the "
             f"device kit (`{KIT}`) on a lent GPU machine into the same files. Each section names the machine and the "
             "code it measured: compare ratios within one file, not rates across machines.", "",
             "## Headline figures", "", *headline(results, lambda b: f"[{b.stem}](#{anchor(b.title)})"), ""]
    for bench in BENCHMARKS:
        parts += [f"## {bench.title}", "", bench.about, ""]
        source = RESULTS / f"{bench.stem}.md"
        if bench.name not in results or not source.exists():
            how = f"`python benchmarks/suite.py --only {bench.name}`" if bench.argv else f"`{KIT}` on a GPU machine"
            parts += [f"Not measured yet: run {how}.", ""]
            continue
        result = results[bench.name]
        if not result["host"].get("commit"):
            parts += [f"Measured on the code at {code(result, bench)}: not rerun since"
                      + (" (no GPU run of later code)." if not bench.argv else "."), ""]
        if bench.name in alts:
            parts += [f"![{alts[bench.name]}](figures/{bench.stem}.png)", ""]
        body = source.read_text().split("\n", 1)[1].strip()
        parts += [body, "", f"Results: `benchmarks/results/{bench.stem}.json`", ""]
    return "\n".join(parts).rstrip() + "\n"


def anchor(title: str) -> str:
    """MkDocs' (Python-Markdown toc) anchor of a heading."""
    text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", text).strip().lower())


def load_results() -> dict[str, dict]:
    return {b.name: json.loads((RESULTS / f"{b.stem}.json").read_text()) for b in BENCHMARKS
            if (RESULTS / f"{b.stem}.json").exists()}


def rendered_readme(results: dict[str, dict]) -> str:
    text = README.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{README}: no headline markers ({START} ... {END})")
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    rows = headline(results, lambda b: f"[{b.stem}](benchmarks/results/{b.stem}.md)")
    return before + START + "\n" + "\n".join(rows) + "\n" + END + after


def chart(bench: Benchmark, result: dict, path: Path | None) -> str:
    """The benchmark's chart (charts.CHART_chart) drawn into `path` (None: only its alt text); returns the alt text;
    `baseline` matters to the loader chart alone."""
    return getattr(charts, f"{bench.chart}_chart")(result, path, bench.title, bench.baseline)


def render(check: bool) -> int:
    results = load_results()
    drawn = {b.name: b for b in BENCHMARKS if b.chart and b.name in results}
    alts = {name: chart(bench, results[name], None if check else FIGURES / f"{bench.stem}.png")
            for name, bench in drawn.items()}
    targets = {README: rendered_readme(results), PAGE: page(results, alts)}
    if check:
        stale = [str(path.relative_to(ROOT)) for path, text in targets.items()
                 if not path.exists() or path.read_text() != text]
        stale += [f"docs/figures/{b.stem}.png" for b in drawn.values() if not (FIGURES / f"{b.stem}.png").exists()]
        if stale:
            print(f"not what the results files render: {', '.join(stale)}; run python benchmarks/suite.py --render")
            return 1
        return 0
    for path, text in targets.items():
        path.write_text(text)
        print(f"rendered {path.relative_to(ROOT)}")
    keep = {f"{b.stem}.png" for b in drawn.values()}
    for old in FIGURES.glob("*.png"):  # a chart no benchmark draws any more
        if old.name not in keep:
            old.unlink()
    print(f"drew {len(drawn)} charts into {FIGURES.relative_to(ROOT)}")
    return 0


def sets(tmp: Path, needed: set[str]) -> dict[str, str]:
    """The folders and shard sets the chosen benchmarks name, made in `tmp`."""
    from fastseg.cli import run_cli
    from fastseg.cli.shard import main as shard_main

    davis10 = tmp / "davis10"
    found = {"davis": str(DAVIS), "davis10": str(davis10), "camvid": str(CAMVID), "shards": str(tmp / "shards"),
             "shards10": str(tmp / "shards10"), "shards_val": str(tmp / "shards_val"),
             "camvid_shards": str(tmp / "camvid_shards"),
             "peer_python": str(PEER_PYTHON)}
    if needed & {"davis10", "shards10"}:
        from baselines import linked_copies

        linked_copies(DAVIS, davis10, 10)
    made = {"shards": [str(DAVIS), found["shards"], "--val-fraction", "0"],
            "shards10": [str(davis10), found["shards10"], "--val-fraction", "0"],
            "shards_val": [str(DAVIS), found["shards_val"]],  # a validation split carved out, for training
            "camvid_shards": [str(CAMVID), found["camvid_shards"], "--classes", str(ROOT / "tools/classes/camvid.json"),
                              "--ignore-value", "11"]}
    for name, argv in made.items():
        if name in needed:
            print(f"making {name}: fastseg-shard {' '.join(argv)}", flush=True)
            run_cli("fastseg-shard", shard_main, [*argv, "--workers", "2", "--quiet"])
    return found


def environment(bench: Benchmark) -> dict[str, str]:
    """The benchmark's environment: this one, with its side packages (installed on first use) on PYTHONPATH."""
    env = dict(os.environ)
    if bench.side:
        folder = SIDE / bench.name
        if not folder.exists():
            print(f"installing {' '.join(bench.side)} into {folder.relative_to(ROOT)} (once)", flush=True)
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(folder), *bench.side],
                           check=True)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(folder), env.get("PYTHONPATH"))))
    return env


def run(bench: Benchmark, where: dict[str, str]) -> bool:
    """Run one benchmark into its results files; where it fails, they are put back as they were (a script may write
    part of a run as it goes, as train_bench does for a time-boxed GPU run)."""
    argv = [a.format(**where) for a in bench.argv] + ["--json", f"benchmarks/results/{bench.stem}.json"]
    print(f"python benchmarks/{' '.join(argv)}", flush=True)
    files = [RESULTS / f"{bench.stem}{suffix}" for suffix in (".json", ".md")]
    before = {f: f.read_bytes() if f.exists() else None for f in files}
    start = time.monotonic()
    done = subprocess.run([sys.executable, f"benchmarks/{argv[0]}", *argv[1:]], cwd=ROOT, env=environment(bench))
    print(f"== {bench.name}: {'done' if not done.returncode else 'FAILED'} in {time.monotonic() - start:.0f} s",
          flush=True)
    if done.returncode:
        for f, data in before.items():
            if data is None:
                f.unlink(missing_ok=True)
            else:
                f.write_bytes(data)
    return not done.returncode


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the CPU subset that needs no extra install (under 20 "
                                                        "minutes on 2 cores)")
    p.add_argument("--only", nargs="+", choices=[b.name for b in BENCHMARKS], metavar="NAME")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    p.add_argument("--render", action="store_true", help="render from the committed results files; run nothing")
    p.add_argument("--check", action="store_true", help="with --render: fail where the committed files differ")
    args = p.parse_args()
    if args.list:
        for b in BENCHMARKS:
            where = ("quick" if b.quick else "full") if b.argv else "GPU: the device kit"
            print(f"{b.name:13} {where:19} benchmarks/results/{b.stem}.*  {b.title}")
        return 0
    if args.render:
        return render(args.check)
    chosen = [b for b in BENCHMARKS if b.argv and (not args.only or b.name in args.only)
              and (b.quick or not args.quick)]
    gpu_only = [name for name in args.only or () if not BY_NAME[name].argv]
    if gpu_only:
        print(f"{', '.join(gpu_only)}: run on a GPU machine by {KIT}; its results files render here like the rest")
    peers = [b.name for b in chosen if "{peer_python}" in b.argv]
    if peers and not PEER_PYTHON.exists():
        raise SystemExit(f"{', '.join(peers)} need the peers' environment: run bash benchmarks/peers_setup.sh first "
                         "(or leave them out: --quick)")
    failed = []
    with tempfile.TemporaryDirectory(prefix="fastseg-suite-") as tmp:
        needed = {field for b in chosen for a in b.argv for field in re.findall(r"\{(\w+)\}", a)}
        where = sets(Path(tmp), needed)
        for number, bench in enumerate(chosen, 1):
            print(f"== [{number}/{len(chosen)}] {bench.name}", flush=True)
            if not run(bench, where):
                failed.append(bench.name)
    rendered = render(check=False)
    if failed:
        print(f"failed: {', '.join(failed)}; their results files are left as they were")
    return 1 if failed else rendered


if __name__ == "__main__":
    sys.exit(main())
