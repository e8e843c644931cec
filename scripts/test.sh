#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine, then run them all:
# lint (ruff), types (mypy), Python tests (kernel, replay, sandbox), the
# lab extension's unit tests and its browser end-to-end test.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e ".[test,agents,lab]"

echo "== ruff"
ruff check tactus_kernel tests benchmarks
echo "== mypy"
mypy
echo "== pytest"
python -m pytest -q -n 2 "$@"
