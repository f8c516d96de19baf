"""The performance page's charts, drawn from results files alone (benchmarks/suite.py --render calls them).

One comparison a chart: horizontal bars, at most 8, each labelled with its value and its ratio to the chart's
baseline; a sweep (worker counts, stores) as small separate panels side by side, never as lines crossing in one
panel. fastseg's loaders are drawn in blues, the peers in oranges, the tutorial baseline in grey, so a reader sees
at a glance which bars are ours.

Each function returns the chart's alt text: the values it plots, in words. The page carries it, so
`suite.py --render --check` notices a chart whose data changed even where the image itself is not compared.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

MAX_BARS = 8
FASTSEG = {"torch": "#6baed6", "torch_full": "#9ecae1", "dali_cpu": "#2171b5", "dali_cpu_full": "#4292c6",
           "dali_gpu": "#08306b", "dali_gpu_full": "#08519c", "torch_gpu": "#3182bd", "dali": "#2171b5",
           "obstore": "#2171b5", "fastseg": "#2171b5"}
PEERS = {"webdataset": "#fd8d3c", "litdata": "#e6550d", "mosaic": "#a63603", "albumentations": "#fdae6b",
         "s3fs (fsspec)": "#e6550d", "boto3": "#fd8d3c"}
BASELINE = "#969696"


def colour(name: str) -> str:
    """fastseg's blues, the peers' oranges (a peer's recipe 1 a shade lighter than its recipe 2), grey otherwise."""
    name = name.split(" ")[0]
    if name in FASTSEG:
        return FASTSEG[name]
    peer, _, recipe = name.partition("_")
    if peer in PEERS or name in PEERS:
        base = PEERS.get(name) or PEERS[peer]
        return lighter(base) if recipe in ("r1", "gpu_r1") else base
    return BASELINE


def lighter(hex_colour: str, by: float = 0.35) -> str:
    rgb = [int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(c + (255 - c) * by):02x}" for c in rgb)


Baseline = str | Callable[[dict[str, float]], str | None] | None  # a bar's name, or one chosen per panel


def panels(path: Path | None, title: str, groups: list[tuple[str, list[tuple[str, float]]]], unit: str,
           baseline: Baseline, limit: float | None = None, lower_is_better: bool = False,
           decimals: int = 0) -> str:
    """One small panel a group (a worker count, a store), horizontal bars in the order given, each labelled
    "value unit  ratio×" against the group's baseline bar: `baseline` names it, or picks it from the panel's bars
    (None: no ratio). `limit`: a dashed line (the decode-bound limit) where one applies. Returns the alt text; with
    no path, draws nothing."""
    for name, bars in groups:
        if len(bars) > MAX_BARS:
            raise ValueError(f"{title}: {len(bars)} bars in panel {name!r}; a chart shows at most {MAX_BARS}")
    named = [(name, bars, baseline(dict(bars)) if callable(baseline) else baseline) for name, bars in groups if bars]
    groups = [(name, bars, dict(bars).get(chosen) if chosen else None) for name, bars, chosen in named]
    alt = []
    for name, bars, base in groups:
        alt.append(f"{name}: " + "; ".join(f"{label} " + label_of(value, unit, base, decimals).replace("  ", " (")
                                            + (")" if base else "") for label, value in bars))
    if path is None:
        return " | ".join(alt)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tallest = max(len(bars) for _, bars, _ in groups)
    fig, axes = plt.subplots(1, len(groups), figsize=(4.6 * len(groups) + 1.4, 0.42 * tallest + 1.5), dpi=110,
                             squeeze=False, sharex=True)
    for ax, (name, bars, base) in zip(axes[0], groups):
        labels = [label for label, _ in bars][::-1]
        values = [value for _, value in bars][::-1]
        ax.barh(labels, values, color=[colour(label) for label in labels], height=0.7)
        top = max(values + ([limit] if limit else []))
        for y, value in enumerate(values):
            ax.text(value + top * 0.01, y, label_of(value, unit, base, decimals), va="center", fontsize=8)
        if limit:
            ax.axvline(limit, color="black", linestyle="--", linewidth=1)
            ax.set_ylim(-0.6, len(labels) + 0.1)  # a free row above the bars for the line's label
            ax.text(limit, len(labels) - 0.4, " decode-bound limit", fontsize=7, va="bottom", ha="left")
        ax.set_xlim(0, top * 1.32)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.set_xlabel(unit + (" (lower is better)" if lower_is_better else ""), fontsize=8)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    chosen = ", ".join(dict.fromkeys(name for _, _, name in named if name))
    fig.suptitle(title + (f" (ratios to {chosen})" if chosen else ""), fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return " | ".join(alt)


def label_of(value: float, unit: str, base: float | None, decimals: int) -> str:
    return f"{value:.{decimals}f} {unit}" + (f"  {value / base:.2f}×" if base else "")


def loader_runs(result: dict) -> list[dict]:
    """loader_bench's runs, one per worker count (files from before runs existed held one, at the top level)."""
    if "runs" in result:
        return result["runs"]
    return [{"workers": result["workers"], "loaders": result["loaders"],
             "decode_limit_samples_per_s": result.get("decode_limit_samples_per_s")}]


def loader_rates(run: dict) -> dict[str, float]:
    """samples/s by loader in one of loader_bench's runs (a loader that failed has none)."""
    return {name: r["samples_per_s"] for name, r in run["loaders"].items() if "samples_per_s" in r}


def best_peer(rates: dict[str, float], peer: str) -> str | None:
    """The name of `peer`'s fastest recipe among the rates (albumentations_r1 or _r2, say)."""
    named = {name: rate for name, rate in rates.items() if name.split("_")[0] == peer}
    return max(named, key=named.get) if named else None


def loader_chart(result: dict, path: Path | None, title: str, baseline: str = "vanilla") -> str:
    """loader_bench: samples/s by loader, a panel a worker count. `baseline` is a loader's name, or `best:PEER`
    (the faster of that peer's recipes in each panel)."""
    runs = loader_runs(result)
    groups = [(f"{run['workers']} workers/threads", list(loader_rates(run).items())) for run in runs]
    limits = {run.get("decode_limit_samples_per_s") for run in runs}
    peer = baseline.removeprefix("best:")
    chosen = (lambda rates: best_peer(rates, peer)) if peer != baseline else baseline
    return panels(path, title, groups, "samples/s", chosen, limit=limits.pop() if len(limits) == 1 else None)


def train_rates(result: dict) -> dict[str, list[tuple[str, float]]]:
    """train_bench's images/s by path (the plain loop, fastseg-train), then by loader, at the run's batch size (files
    from before paths existed timed the plain loop alone)."""
    if "runs" not in result:
        return {"plain": [(n, r["images_per_s"]) for n, r in result["loaders"].items() if r.get("images_per_s")]}
    paths: dict[str, list[tuple[str, float]]] = {}
    for run in result["runs"]:
        if run.get("images_per_s") and run.get("batch_size") == result["batch_size"]:
            paths.setdefault(run["path"], []).append((run["loader"], run["images_per_s"]))
    return paths


def train_chart(result: dict, path: Path | None, title: str, baseline=None) -> str:
    """train_bench: images/s by loader, a panel a path."""
    return panels(path, title, list(train_rates(result).items()), "images/s", "vanilla", decimals=1)


def stores_chart(result: dict, path: Path | None, title: str, baseline=None) -> str:
    """store_bench: a panel a store, each loader's first epoch from disk, from the store through the cache, with
    faults, and by ranged reads."""
    groups = []
    for store, loaders in result["stores"].items():
        bars = []
        for loader, runs in loaders.items():
            bars += [(f"{loader} {label}", runs[run]["rates"][0]) for label, run in
                     (("disk", "disk"), (f"{store} cache", "clean"), (f"{store} cache, faults", "faulty"),
                      (f"{store} ranged", "ranged"))]
        groups.append((f"{store}: first epoch", bars))
    return panels(path, title, groups, "samples/s", None, decimals=1)


def ranged_reads_chart(result: dict, path: Path | None, title: str, baseline=None) -> str:
    bars = list(result["client_cpu_ms_per_read"].items())
    return panels(path, title, [("client CPU per ranged read", bars)], "ms", bars[0][0], lower_is_better=True,
                  decimals=2)
