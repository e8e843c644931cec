#!/usr/bin/env bash
# Build the wheel and the sdist, check them, and prove that installing either
# needs no node: each goes into a fresh venv run with no node on the PATH, and
# from that install the quickstart and agents notebooks replay, the kernel spec
# comes from the package's shared data and JupyterLab lists the extension as
# enabled. Run from the project's venv (scripts/test.sh does).
#   ./scripts/check_dist.sh               package the lab extension as built by the set-up (quick)
#   ./scripts/check_dist.sh --release     build it from scratch for production, as a release from a clean clone does
#   ./scripts/check_dist.sh --keep DIR    also leave the wheel and the sdist in DIR
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
keep="" release=""
while [ $# -gt 0 ]; do
  case "$1" in
    --release) release=1; shift ;;
    --keep) keep="${2:?--keep needs a directory}"; shift 2 ;;
    *) echo "usage: $0 [--release] [--keep DIR]" >&2; exit 2 ;;
  esac
done

work="$(mktemp -d "${TMPDIR:-/tmp}/tactus-dist.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "-- dist: copying the files git would ship into a clean tree"
mkdir "$work/src"
git ls-files -z --cached --others --exclude-standard \
  | python -c 'import os, sys; sys.stdout.write("".join(p + "\0" for p in sys.stdin.read().split("\0") if p and os.path.lexists(p)))' \
  | tar --null -T - -cf - | tar -xf - -C "$work/src"
if [ -n "$release" ]; then
  # npm installs the node dependencies afresh there (hatch-jupyter-builder runs `npm install`)
  echo "-- dist: python -m build (the lab extension's production build, the sdist with it, the wheel from the sdist)"
else
  python -c 'import sys; from hatch_jupyter_builder.utils import is_stale
sys.exit(is_stale("tactus_kernel/labextension", "labextension/src"))' \
    || { echo "tactus_kernel/labextension is missing or older than labextension/src: run scripts/setup.sh"; exit 1; }
  cp -a tactus_kernel/labextension "$work/src/tactus_kernel/labextension"
  echo "-- dist: python -m build (the sdist with the set-up's build of the lab extension, the wheel from the sdist)"
fi
(cd "$work/src" && python -m build --no-isolation --outdir "$work/dist" . >"$work/build.log" 2>&1) \
  || { cat "$work/build.log"; exit 1; }
echo "   built in $((SECONDS - start))s"
wheel="$(echo "$work"/dist/*.whl)"
sdist="$(echo "$work"/dist/*.tar.gz)"
echo "-- dist: twine check"
twine check --strict "$wheel" "$sdist"
tar -tzf "$sdist" | grep "/tactus_kernel/labextension/static/style.js$" >/dev/null \
  || { echo "the sdist has no prebuilt lab extension"; exit 1; }
python -m zipfile -l "$wheel" | grep "share/jupyter/labextensions/tactus-kernel-labextension/static/style.js" >/dev/null \
  || { echo "the wheel has no lab extension in its shared data"; exit 1; }

# The fresh venv is run with a PATH of its own bin and grep, nothing else: no
# node, npm or system python. It gets no pip of its own (ensurepip is slow):
# this venv's pip installs into it (`pip --python`).
venv="$work/venv"
python -m venv --without-pip "$venv"
mkdir "$work/nb" "$work/tools"
ln -s "$(command -v grep)" "$work/tools/grep"
cp notebooks/quickstart.ipynb notebooks/agents.ipynb "$work/nb/"
pip_cmd=("$(command -v python)" -m pip --python "$venv/bin/python")
run_fresh() {  # run a command in the fresh venv, from $work/nb, with no node on the PATH
  (
    cd "$work/nb"
    export PATH="$venv/bin:$work/tools" JUPYTER_DATA_DIR="$work/jupyter-data" JUPYTER_CONFIG_DIR="$work/jupyter-config"
    unset PYTHONPATH JUPYTER_PATH VIRTUAL_ENV
    if command -v node >/dev/null || command -v npm >/dev/null; then echo "node is on the PATH" >&2; exit 1; fi
    "$@"
  )
}
check_install() {  # NAME: what the installed package must give, run from the fresh venv
  echo "-- dist: from the $name install: kernel spec, quickstart and agents notebooks, lab extension"
  run_fresh python - "$venv" <<'PY'
import sys
from pathlib import Path

import tactus_kernel
from jupyter_client.kernelspec import KernelSpecManager

venv = Path(sys.argv[1]).resolve()
where = Path(tactus_kernel.__file__).resolve()
spec = Path(KernelSpecManager().find_kernel_specs()["tactus"]).resolve()
assert venv in where.parents, f"tactus_kernel imported from {where}, not from {venv}"
assert spec == venv / "share/jupyter/kernels/tactus", f"the tactus kernel spec is {spec}, not the package's"
print(f"   kernel spec from the package's shared data: {spec}")
PY
  run_fresh tactus-kernel replay quickstart.ipynb -o "$work/quickstart.$name.ipynb"
  run_fresh tactus-kernel replay agents.ipynb -o "$work/agents.$name.ipynb"
  run_fresh jupyter labextension list 2>&1 | grep -E "tactus-kernel-labextension .*enabled.*OK" \
    || { echo "the $name install does not enable the lab extension"; exit 1; }
}
quiet_pip() { "${pip_cmd[@]}" "$@" --quiet 2> >(grep -v "is ignored: it is neither" >&2); }

name=wheel
echo "-- dist: pip install the wheel (with [lab]) into a fresh venv, with no node on the PATH"
PATH="$work/tools" quiet_pip install "$wheel[lab]"
check_install

# The sdist goes into the same venv (its dependencies are there already, so
# only the build from the sdist is new), once the wheel's files are gone.
name=sdist
PATH="$work/tools" quiet_pip uninstall --yes tactus-kernel
for gone in "$venv/share/jupyter/kernels/tactus" "$venv/share/jupyter/labextensions/tactus-kernel-labextension"; do
  [ ! -e "$gone" ] || { echo "uninstalling the wheel left $gone"; exit 1; }
done
echo "-- dist: pip install the sdist into it, with no node on the PATH (pip builds a wheel from it, isolated)"
PATH="$work/tools" quiet_pip install "$sdist[lab]"
check_install

if [ -n "$keep" ]; then mkdir -p "$keep" && cp "$wheel" "$sdist" "$keep/"; fi
echo "-- dist: wheel and sdist built, checked and installed without node in $((SECONDS - start))s"
