#!/usr/bin/env bash
# Shared set-up for quickstart.sh and test.sh (source it): Node for the lab
# extension (Debian's when missing), the extension's node dependencies from
# the lockfile, a .venv with this package installed editable with the extras
# given in $TACTUS_EXTRAS, and a check that JupyterLab sees the extension.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  [ -n "${_TACTUS_APT_UPDATED:-}" ] || { as_root apt-get update -qq; _TACTUS_APT_UPDATED=1; }
  as_root apt-get install -y -qq "$@" >/dev/null
}
command -v npm >/dev/null || apt_install nodejs npm
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
echo "== lab extension: node dependencies from the lockfile"
(cd labextension && npm ci --no-audit --no-fund --loglevel=error)

python3 -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
# also builds the lab extension (hatch-jupyter-builder) when its source changed
python -m pip install --quiet -e ".[${TACTUS_EXTRAS:-agents,lab}]"
jupyter labextension list 2>&1 | grep -E "tactus-kernel-labextension .*enabled.*OK" \
  || { echo "the Tactus lab extension is not installed and enabled"; exit 1; }
