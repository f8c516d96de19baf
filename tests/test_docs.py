"""The documentation builds with no warning (`mkdocs build --strict`: every page in the nav, every link between
pages, every API entry found), and the README's links point at files that are there."""
from __future__ import annotations

import importlib.util
import os
import re
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
    """The README's headline table and docs/current.md are rendered from benchmarks/results/ alone, never typed."""
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks/suite.py"), "--render", "--check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
