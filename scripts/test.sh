#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine, then run them all:
# lint (ruff), types (mypy), Python tests (kernel, human cards, replay,
# agents, sandbox), the example notebooks' replay, the wheel and sdist built,
# checked and installed without node (scripts/check_dist.sh), the lab
# extension's unit tests and its browser end-to-end test (Debian's chromium,
# never a download).
set -euo pipefail
cd "$(dirname "$0")/.."

TACTUS_EXTRAS="test,lab"
# shellcheck source=scripts/setup.sh
. scripts/setup.sh
command -v chromium >/dev/null || apt_install chromium

echo "== ruff"
ruff check tactus_kernel tests benchmarks scripts
ruff format --check tactus_kernel tests benchmarks scripts
echo "== mypy"
mypy
echo "== pytest"
python -m pytest -q -n 2 "$@"
echo "== example notebooks replay"
python -m pytest -q --tactus-replay notebooks/
python -m pytest -q --tactus-specs notebooks/
python -m pytest -q --tactus-evals notebooks/
echo "== wheel and sdist: build, twine check, install each into a fresh venv without node and replay from it"
./scripts/check_dist.sh
echo "== lab extension: unit tests"
(cd labextension && npm test)
echo "== lab extension: browser end-to-end test"
(cd labextension && npx playwright test)
