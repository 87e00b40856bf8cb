#!/usr/bin/env bash
# The Python package as a user gets it: builds it from source with pip
# (pyproject.toml, maturin) into a fresh virtual environment, then runs the
# pytest suite against the installed package (not the source tree).
#
#   crates/ffi/test.sh            # dev profile + feature test-server (CI)
#   crates/ffi/test.sh -k state   # extra arguments go to pytest
#   TETHER_PY_PROFILE=release crates/ffi/test.sh   # the release library
#
# The package is built with the `test-server` feature (the live tests start
# an embedded signaling server through the bindings) and, unless
# TETHER_PY_PROFILE says otherwise, cargo's dev profile: a release build of
# the library (webrtc and all) takes several minutes more, and the suite
# tests the bindings, not the optimiser. pip, maturin, pytest and mypy come from
# PyPI. PYTHON picks the interpreter (default python3, 3.9 or newer).
# Uses CARGO_TARGET_DIR when set, else the workspace's target directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"
profile="${TETHER_PY_PROFILE:-dev}"

if [ -n "${CARGO_TARGET_DIR:-}" ]; then
    target_dir="$CARGO_TARGET_DIR"
else
    target_dir="$(cd "$here/../.." && cargo metadata --format-version 1 --no-deps |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
fi
# maturin builds in the workspace's target directory, so that the library
# shares its dependencies with every other build.
export CARGO_TARGET_DIR="$target_dir"

venv="$target_dir/ffi-venv"
echo "== fresh virtual environment: $venv"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
# pytest runs the suite; mypy checks the package's type hints (test_typing.py).
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check pytest mypy

echo "== pip install crates/ffi (profile $profile, feature test-server)"
started=$SECONDS
MATURIN_PEP517_ARGS="--profile $profile --features test-server" \
    "$venv/bin/python" -m pip install --disable-pip-version-check "$here"
echo "== built and installed in $((SECONDS - started)) s"

echo "== pytest (tether-ffi, against the installed package)"
# From the tests' own directory: neither the source package (python/tether,
# without the generated module) nor anything else shadows the installed one.
cd "$here/python/tests"
exec "$venv/bin/python" -m pytest -c ../pytest.ini --rootdir .. -q -p no:cacheprovider . "$@"
