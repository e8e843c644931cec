#!/usr/bin/env bash
# Set up the project and run the quickstart notebook.
#   ./scripts/quickstart.sh [ARGS]         replay notebooks/quickstart.ipynb headless (no human, no model);
#                                          ARGS go to `tactus-kernel replay` (e.g. --timeout 60)
#   ./scripts/quickstart.sh --lab [ARGS]   open it in JupyterLab instead; ARGS go to `jupyter lab`
#                                          (e.g. --no-browser --port 8899); as root, --allow-root is added
set -euo pipefail
cd "$(dirname "$0")/.."

TACTUS_EXTRAS="lab"
# shellcheck source=scripts/setup.sh
. scripts/setup.sh

if [ "${1:-}" = "--lab" ]; then
  shift
  root_args=()
  if [ "$(id -u)" = 0 ]; then root_args=(--allow-root); fi
  echo "== opening notebooks/quickstart.ipynb in JupyterLab (Ctrl-C to stop)"
  exec jupyter lab "${root_args[@]}" "$@" notebooks/quickstart.ipynb
fi
mkdir -p build
echo "== replaying notebooks/quickstart.ipynb headless from its recorded checkpoints"
tactus-kernel replay notebooks/quickstart.ipynb -o build/quickstart.out.ipynb "$@"
echo "Replayed notebooks/quickstart.ipynb from its recorded checkpoints -> build/quickstart.out.ipynb"
