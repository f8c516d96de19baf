#!/usr/bin/env bash
# Install fastseg with its test extra into .venv and run the whole test suite (about 10 minutes on 2 CPU cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec .venv/bin/python -m pytest -q "$@"
