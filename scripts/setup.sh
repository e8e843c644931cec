#!/usr/bin/env bash
# Shared set-up for quickstart.sh and test.sh (source it): Node for the lab
# extension (Debian's when missing), the extension's node dependencies from
# the lockfile, a .venv with this package installed editable with the extras
# given in $TACTUS_EXTRAS, and a check that JupyterLab sees the extension.
# Each long step says what it does first; steps with nothing to do are skipped.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {  # apt_install PACKAGE...: install Debian packages (called only when one is missing)
  echo "== installing Debian packages: $* (apt-get, as root)"
  if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then
    echo "setup: this needs root and there is no sudo: as root, run  apt-get install $*  then run this again" >&2
    return 1
  fi
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
  (cd labextension && npm ci --no-audit --no-fund --no-update-notifier --loglevel=error)
  echo "$lock_hash" >"$lock_stamp"
fi

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  python3 -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
# pip install -e takes a minute or more even when nothing changed (it builds in
# a fresh environment with JupyterLab): skip it while what it installs from is
# unchanged and the extras asked for were installed. Python and Lua sources
# need no reinstall (the install is editable).
extras="${TACTUS_EXTRAS:-lab}"
install_hash="$({ cat pyproject.toml install.json;
  find labextension/src labextension/style labextension/package.json labextension/tsconfig.json share \
    -type f -print0 | sort -z | xargs -0 sha256sum; } | sha256sum | cut -d' ' -f1)"
install_stamp=.venv/.tactus-install-hash  # "<hash> <extras installed>"
read -r stamp_hash stamp_extras <"$install_stamp" 2>/dev/null || true
up_to_date=""
if [ "${stamp_hash:-}" = "$install_hash" ] && [ -d tactus_kernel/labextension ]; then
  up_to_date=1
  for extra in ${extras//,/ }; do
    case ",${stamp_extras:-}," in *",$extra,"*) ;; *) up_to_date="" ;; esac
  done
fi
if [ -n "$up_to_date" ]; then
  echo "== tactus-kernel: installed in .venv with [$stamp_extras], up to date with pyproject.toml and the lab extension's source"
else
  python -m pip install --quiet --upgrade pip
  echo "== installing tactus-kernel editable with [$extras] into .venv" \
    "(pip; builds the lab extension when its source changed; a few minutes the first time)"
  python -m pip install --progress-bar off -e ".[$extras]" \
    | awk '/^Successfully installed/ { n = NF - 2; print "   installed " n (n == 1 ? " package" : " packages") } /^ERROR/'
  echo "$install_hash $extras" >"$install_stamp"
fi
jupyter labextension list 2>&1 | grep -E "tactus-kernel-labextension .*enabled.*OK" \
  || { echo "the Tactus lab extension is not installed and enabled"; exit 1; }
