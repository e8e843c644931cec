#!/usr/bin/env bash
# Shared set-up for quickstart.sh and test.sh (source it): Node for the lab
# extension (Debian's when missing), the extension's node dependencies from
# the lockfile, a .venv with this package installed editable with the extras
# given in $TACTUS_EXTRAS, and a check that JupyterLab sees the extension.
# Each long step says what it does first; steps with nothing to do are skipped.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

as_root() {  # run as root: directly when we are root, else through sudo
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    echo "setup: '$*' needs root and there is no sudo: run it as root, then run this again" >&2
    return 1
  fi
}
apt_install() {  # apt_install PACKAGE...: install the Debian packages (only called when one is missing)
  echo "== installing Debian packages: $* (apt-get, as root)"
  [ -n "${_TACTUS_APT_UPDATED:-}" ] || { as_root apt-get update -qq; _TACTUS_APT_UPDATED=1; }
  as_root apt-get install -y -qq "$@" >/dev/null
}
command -v npm >/dev/null || apt_install nodejs npm
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

# npm ci takes 20 s or more even when nothing changed: skip it while the
# lockfile (and node) are the ones node_modules was installed with.
lock_hash="$({ node --version; cat labextension/package-lock.json; } | sha256sum | cut -d' ' -f1)"
lock_stamp=labextension/node_modules/.tactus-lock-hash
if [ "$(cat "$lock_stamp" 2>/dev/null)" = "$lock_hash" ]; then
  echo "== lab extension: node dependencies up to date with package-lock.json"
else
  echo "== lab extension: installing node dependencies from package-lock.json (npm ci, about a minute)"
  (cd labextension && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock_hash" >"$lock_stamp"
fi

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  python3 -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
echo "== installing tactus-kernel editable with [${TACTUS_EXTRAS:-lab}] into .venv (pip; builds the lab extension when its source changed; a few minutes the first time)"
python -m pip install --progress-bar off -e ".[${TACTUS_EXTRAS:-lab}]" \
  | { grep -E "^(Successfully installed|ERROR)" || true; }
jupyter labextension list 2>&1 | grep -E "tactus-kernel-labextension .*enabled.*OK" \
  || { echo "the Tactus lab extension is not installed and enabled"; exit 1; }
