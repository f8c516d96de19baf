#!/usr/bin/env bash
# Create .venv and install fastseg into it. TORCH_SPEC picks the PyTorch build: the default names the CPU build
# that this project's CPU machines serve locally; on a CUDA machine use e.g. TORCH_SPEC="torch>=2.2".
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e ".[test]"
