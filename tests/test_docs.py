"""The documentation builds with no warning (`mkdocs build --strict`: every page in the nav, every link between
pages, every API entry found), and the README's links point at files that are there."""
from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def test_the_docs_build_strictly(tmp_path):
    if not (importlib.util.find_spec("mkdocs") and importlib.util.find_spec("material")
            and importlib.util.find_spec("mkdocstrings")):
        pytest.skip("MkDocs, Material or mkdocstrings is not installed (the test extra brings them)")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))
    assert result.returncode == 0, result.stderr[-3000:]
    api = (tmp_path / "site/api/index.html").read_text()
    assert "An iterable over batches" in api  # make_loader's docstring made it into the reference


def test_the_readme_is_a_front_door_whose_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    links = [target for target in re.findall(r"\]\(([^)#]+)[^)]*\)", text) if "://" not in target]
    assert links and all((ROOT / target).exists() for target in links), [t for t in links if not (ROOT / t).exists()]
    for results in re.findall(r"\((benchmarks/results/[^)]+\.md)\)", text):  # every headline figure from its file
        assert (ROOT / results).read_text().strip()


def test_the_headline_figures_are_what_the_results_files_render():
    """The README's headline table, docs/performance.md and its charts are rendered from benchmarks/results/ alone,
    never typed."""
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks/suite.py"), "--render", "--check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


# --- every command in the docs: run here, or marked with why not ---------------------------------------------------
BLOCK = re.compile(r"^(?:<!-- the tests add: (\S+) (.*?) -->\n)?```bash\n(.*?)^```", re.S | re.M)
NOT_RUN = "# not run by the tests: "
COMMANDS = {"fastseg-shard": "fastseg.cli.shard", "fastseg-train": "fastseg.cli.train",
            "fastseg-predict": "fastseg.cli.predict"}


def bash_blocks(as_run: bool = False) -> list[tuple[str, str]]:
    """(page, text) of every ```bash block in the README and the docs. A block may be preceded by
    `<!-- the tests add: PROGRAM FLAGS -->` (unseen in the rendered page): with `as_run`, FLAGS follow PROGRAM's name
    wherever it starts a command, a flag the block gives itself winning (argparse keeps the last). The README's
    training command is run that way: 20 epochs of the full UNet would take a minute of the suite."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    found = []
    for page in pages:
        for m in BLOCK.finditer(page.read_text()):
            program, flags, block = m.groups()
            if as_run and program:
                block = re.sub(rf"^{re.escape(program)} ", f"{program} {flags} ", block, flags=re.M)
            found.append((str(page.relative_to(ROOT)), block))
    return found


def fastseg_commands(block: str) -> list[list[str]]:
    """Every fastseg command in a block, as argv (its program first): whole lines, after a launcher (srun, torchrun's
    `-m fastseg.cli.train`), and inside a quoted --wrap."""
    found = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line.replace("$(", " ").replace(")", " "), comments=True)
        for i, word in enumerate(words):
            if word.split(" ")[0] in COMMANDS and " " in word:  # sbatch --wrap "fastseg-shard ..."
                found.append(shlex.split(word))
            elif word in COMMANDS:
                found.append(words[i:])
                break
            elif word == "-m" and i + 1 < len(words) and words[i + 1] in COMMANDS.values():
                found.append([next(k for k, v in COMMANDS.items() if v == words[i + 1]), *words[i + 2:]])
                break
    return found


def test_every_docs_block_runs_here_or_says_why_not_and_every_command_parses():
    """A block the tests do not run (a GPU, a cluster, a bucket, a whole training) says so on its first line, with
    the reason; and every fastseg command in any block, run or not, is one the command's own parser accepts (no
    renamed flag, no bad value)."""
    import importlib

    from fastseg.cli.configs import settable

    blocks = bash_blocks()
    assert len(blocks) >= 10
    commands = 0
    for page, block in blocks:
        first = block.splitlines()[0]
        if first.startswith("# not run"):
            assert first.startswith(NOT_RUN) and len(first) > len(NOT_RUN) + 10, f"{page}: {first!r}: say why"
        for argv in fastseg_commands(block):
            parser = importlib.import_module(COMMANDS[argv[0]]).build_parser()
            if "--config" in argv:  # the settings file (not here) gives what the line leaves out
                for action in settable(parser).values():
                    action.required = False
            try:
                parser.parse_intermixed_args(argv[1:])
            except SystemExit:
                pytest.fail(f"{page}: {shlex.join(argv)}: its parser refuses it")
            commands += 1
    assert commands >= 25


def sandbox(where: Path) -> Path:
    """The inputs the docs' commands name: data/ (images/ + masks/), photos/ and labels/ (the same files, apart),
    camvid/ (train and val folders, CamVid's 12 mask values) and camvid.json."""
    from .conftest import make_dataset

    make_dataset(where / "data", count=8, size=(48, 32))  # sides of 16s: the UNet at the native size
    shutil.copytree(where / "data/images", where / "photos")
    shutil.copytree(where / "data/masks", where / "labels")
    for split, seed in (("train", 0), ("val", 20)):
        make_dataset(where / "camvid" / split, count=3, size=(48, 32), mask="index", classes=12, first_seed=seed)
    shutil.copy(ROOT / "tools/classes/camvid.json", where / "camvid.json")
    return where


def run_block(page: str, block: str, cwd: Path) -> None:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"{page}:\n{block}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"


def test_the_docs_commands_run_as_written(tmp_path):
    """Every block not marked is run as written (with the flags a block's `the tests add` comment names), on small
    sets under the names it uses: the README's main job first (shard, train, predict), then each other block in a
    folder of its own that sees the inputs and that run's shards/ and runs/ (isbi/ is those shards too)."""
    blocks = [(page, block) for page, block in bash_blocks(as_run=True) if not block.startswith("# not run")]
    main = next(i for i, (page, block) in enumerate(blocks) if page == "README.md" and "fastseg-train" in block)
    base = sandbox(tmp_path)
    run_block(*blocks.pop(main), base)
    assert (base / "runs/a/checkpoints/best.ckpt").exists() and len(list((base / "masks").iterdir())) >= 8
    assert blocks, "the docs' runnable blocks are gone"
    for number, (page, block) in enumerate(blocks):
        own = tmp_path / f"block{number}"
        own.mkdir()
        for name in ("data", "photos", "labels", "camvid", "camvid.json", "runs", "shards"):
            if name != "shards" or "fastseg-shard data/ shards/" not in block:  # a block that makes its own
                (own / name).symlink_to(base / name)
        (own / "isbi").symlink_to(base / "shards")
        run_block(page, block, own)
