#!/usr/bin/env bash
# Install fastseg with its test extra into .venv and run the whole test suite (about 5 minutes on 2 CPU cores, two test processes: most tests wait on child processes and imports).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec .venv/bin/python -m pytest -q -n 2 "$@"
