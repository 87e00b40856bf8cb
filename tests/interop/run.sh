#!/usr/bin/env bash
# Runs the aiortc interop suite against a tether binary:
#   tests/interop/run.sh [TETHER_BINARY] [pytest args...]
# The binary defaults to $TETHER_BIN, else target/release/tether of this
# checkout. A virtual environment is kept in tests/interop/.venv (ignored by
# git) and refreshed whenever requirements.txt changes. PYTHON picks the
# interpreter (3.10 or newer). Exits non-zero when a test fails.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

binary="${TETHER_BIN:-$root/target/release/tether}"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    binary="$1"
    shift
fi
binary="$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")"
if [ ! -x "$binary" ]; then
    echo "run.sh: no tether binary at $binary (build it, or pass its path)" >&2
    exit 2
fi

python="${PYTHON:-python3}"
venv="$here/.venv"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "== installing tests/interop/requirements.txt into $venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    echo "$want" > "$stamp"
fi

echo "== interop: tether chat <-> aiortc peer ($binary)"
cd "$here"
exec "$venv/bin/python" -m pytest -q --tether-bin="$binary" "$@"
