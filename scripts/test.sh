#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine, then run them all:
# lint (ruff), types (mypy), Python tests (kernel, replay, sandbox), the
# lab extension's unit tests and its browser end-to-end test.
set -euo pipefail
cd "$(dirname "$0")/.."

# The lab extension needs Node (>= 18) and npm to build, and Chromium for its
# browser test; Debian's packages when missing (never a browser download).
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v npm >/dev/null || ! command -v chromium >/dev/null; then
  as_root apt-get update -qq
  command -v npm >/dev/null || as_root apt-get install -y -qq nodejs npm >/dev/null
  command -v chromium >/dev/null || as_root apt-get install -y -qq chromium >/dev/null
fi
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
echo "== lab extension: node dependencies from the lockfile"
(cd labextension && npm ci --no-audit --no-fund --loglevel=error)

python3 -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
# also builds the lab extension (hatch-jupyter-builder) when its source changed
python -m pip install --quiet -e ".[test,agents,lab]"
jupyter labextension list 2>&1 | grep -E "tactus-kernel-labextension .*enabled.*OK" \
  || { echo "the Tactus lab extension is not installed and enabled"; exit 1; }

echo "== ruff"
ruff check tactus_kernel tests benchmarks
echo "== mypy"
mypy
echo "== pytest"
python -m pytest -q -n 2 "$@"
echo "== lab extension: unit tests"
(cd labextension && npm test)
echo "== lab extension: browser end-to-end test"
(cd labextension && npx playwright test)
