#!/usr/bin/env bash
# Builds the cdylib (with the `test-server` feature: the live tests start an
# embedded signaling server through the bindings), generates the Python
# bindings, and runs the pytest suite of the Python package against them.
# Extra arguments go to pytest.
#
# pytest comes from the current Python when it has it, else from a virtual
# environment kept in the target directory (created once, pytest from PyPI).
# PYTHON picks the interpreter (default python3, 3.9 or newer).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"

"$here/generate.sh" --test-server python

if ! "$python" -c 'import pytest' 2>/dev/null; then
    if [ -n "${CARGO_TARGET_DIR:-}" ]; then
        target_dir="$CARGO_TARGET_DIR"
    else
        target_dir="$(cd "$here/../.." && cargo metadata --format-version 1 --no-deps |
            sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
    fi
    venv="$target_dir/ffi-venv"
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import pytest' 2>/dev/null; then
        echo "== installing pytest into ${venv}"
        "$python" -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check pytest
    fi
    python="$venv/bin/python"
fi

echo "== pytest (tether-ffi)"
cd "$here/python"
exec "$python" -m pytest -q -p no:cacheprovider tests "$@"
