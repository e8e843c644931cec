#!/usr/bin/env bash
# Set up the project and run the quickstart notebook.
#   ./scripts/quickstart.sh          replay notebooks/quickstart.ipynb headless (no human, no model)
#   ./scripts/quickstart.sh --lab    open it in JupyterLab instead
set -euo pipefail
cd "$(dirname "$0")/.."

TACTUS_EXTRAS="agents,lab"
# shellcheck source=scripts/setup.sh
. scripts/setup.sh

if [ "${1:-}" = "--lab" ]; then
  exec jupyter lab notebooks/quickstart.ipynb
fi
mkdir -p build
tactus-kernel replay notebooks/quickstart.ipynb -o build/quickstart.out.ipynb
echo "Replayed notebooks/quickstart.ipynb from its recorded checkpoints -> build/quickstart.out.ipynb"
