#!/usr/bin/env bash
# The peers' own environment for benchmarks/loader_bench.py (--peer-python .peers-venv/bin/python): LitData and
# MosaicML Streaming pin what fastseg does not (Mosaic numpy<2.2; both need torchvision), so they never enter
# fastseg's install. TORCH_SPEC picks torch with a matching torchvision; on this project's CPU machines the pair
# that installs is torch 2.14.1 + torchvision 0.29.1 (a CUDA build, run on the CPU; about 7 GB with the rest).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .peers-venv
.peers-venv/bin/python -m pip install -q --upgrade pip
.peers-venv/bin/python -m pip install -q ${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
.peers-venv/bin/python -m pip install -q litdata mosaicml-streaming
.peers-venv/bin/python -m pip install -q -e .
echo "peers installed: benchmarks/loader_bench.py ... --peer-python .peers-venv/bin/python"
