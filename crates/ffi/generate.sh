#!/usr/bin/env bash
# Builds the tether-ffi cdylib and generates its Swift, Kotlin and Python
# bindings in UniFFI library mode (the bindings are read from the metadata
# symbols of the built library, so it must not be stripped first).
#
# Usage: crates/ffi/generate.sh [--release] [--test-server] [swift] [kotlin] [python]
#   No language: all three. --release builds with the release profile
#   (the workspace's keeps symbols: it sets no `strip`). --test-server builds
#   with the `test-server` feature, which exports startTestSignalingServer
#   (an embedded relay for binding tests, e.g. test.sh); without it the
#   library is the mobile one, with no server inside.
#
# Output (ignored by git):
#   crates/ffi/build/swift/   Tether.swift, TetherFFI.h, TetherFFI.modulemap
#   crates/ffi/build/kotlin/  rt/tether/tether_ffi.kt
#   crates/ffi/build/python/  tether_ffi.py
# The Python package is built by pip/maturin instead (crates/ffi/pyproject.toml,
# test.sh); the python output here is for reading.
#
# Uses CARGO_TARGET_DIR when set, else the workspace's target directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
workspace="$(cd "$here/../.." && pwd)"

profile=debug
cargo_profile=()
features=()
languages=()
for arg in "$@"; do
    case "$arg" in
        --release) profile=release; cargo_profile=(--release) ;;
        --test-server) features=(--features test-server) ;;
        swift | kotlin | python) languages+=("$arg") ;;
        *) echo "usage: $0 [--release] [--test-server] [swift] [kotlin] [python]" >&2; exit 2 ;;
    esac
done
if [ ${#languages[@]} -eq 0 ]; then
    languages=(swift kotlin python)
fi

cd "$workspace"
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
    target_dir="$CARGO_TARGET_DIR"
else
    target_dir="$(cargo metadata --format-version 1 --no-deps |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
fi
case "$(uname -s)" in
    Darwin) library_file=libtether_ffi.dylib ;;
    *) library_file=libtether_ffi.so ;;
esac

echo "== building tether-ffi ($profile${features[*]:+, ${features[*]}})"
# Two builds, not one: built together, the bindgen's `uniffi/cli` would be
# unified into the library's uniffi, and the library would differ from the
# one maturin and apps build. The bindgen (a tool) is always a debug build.
cargo build -p tether-ffi --lib "${features[@]}" "${cargo_profile[@]}"
cargo build -p tether-ffi-bindgen
library="$target_dir/$profile/$library_file"
bindgen="$target_dir/debug/uniffi-bindgen"

for language in "${languages[@]}"; do
    out="$here/build/$language"
    echo "== generating $language bindings into ${out#"$workspace"/}"
    rm -rf "$out"
    # --no-format: no ktlint/swiftformat run, so the output does not depend
    # on what happens to be installed. --metadata-no-deps: everything
    # exported lives in this crate.
    "$bindgen" generate --library "$library" --language "$language" \
        --out-dir "$out" --no-format --metadata-no-deps
done
