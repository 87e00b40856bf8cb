#!/usr/bin/env bash
# The browser peer's tests, from a clean checkout: a type check and Node unit
# tests of the page's modules, then end-to-end tests in headless Chromium (Debian's
# package, driven by playwright-core) against `tether serve`: two pages
# (tests/e2e/pair.test.js), and a page with a Rust node, `tether chat`
# (tests/e2e/node.test.js).
#
#   web/test.sh            everything (installs chromium with apt-get if missing)
#   web/test.sh unit       unit tests only (no browser, no Rust build)
#
# Needs Node.js 20+ and npm, cargo, and for a missing chromium root (or
# passwordless sudo) with Debian's package lists.
#
# When Chromium is missing and cannot be installed, or is there but does not
# start (a headless page load, bounded), the browser tests cannot run:
#   TETHER_REQUIRE_CHROMIUM=1  the script fails (exit 1), saying why. CI (.ci/run) sets it.
#   unset or 0                 (a developer's laptop) the browser tests are
#                              skipped with a SKIPPED message on stderr, after
#                              the type check and unit tests passed; exit 0.
#
# Environment: CARGO_TARGET_DIR (where `tether` is built), CHROMIUM (default
# /usr/bin/chromium), TETHER_REQUIRE_CHROMIUM (above), WEB_ARTIFACTS
# (screenshots and logs; default $CARGO_TARGET_DIR/web-artifacts).
set -euo pipefail

web="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$web/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
what="${1:-all}"
require_chromium="${TETHER_REQUIRE_CHROMIUM:-0}"
case "$require_chromium" in
  0 | 1) ;;
  *) echo "web/test.sh: TETHER_REQUIRE_CHROMIUM must be 1 (fail without Chromium) or 0/unset (skip); got '$require_chromium'" >&2; exit 2 ;;
esac

tests_pid=""
cleanup() {
  # The test processes stop their own servers, browsers and chats; this is
  # for an interrupted run: the test runner runs in its own process group
  # (setsid), which goes as a whole. (A `tether chat` child has a group of
  # its own; it quits when its stdin, a pipe from the tests, closes.)
  if [ -n "$tests_pid" ] && kill -0 "$tests_pid" 2>/dev/null; then
    kill -TERM -- "-$tests_pid" 2>/dev/null || kill "$tests_pid" 2>/dev/null || true
    wait "$tests_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

setsid=""
command -v setsid >/dev/null && setsid="setsid --wait"
run_tests() {
  $setsid node --test --test-concurrency=1 "$@" &
  tests_pid=$!
  wait "$tests_pid"
  tests_pid=""
}

# Chromium cannot run here ($1 says why): fail when it is required, else
# skip the browser tests, loudly.
no_chromium() {
  if [ "$require_chromium" = 1 ]; then
    echo "web/test.sh: FAILED: $1" >&2
    echo "web/test.sh: TETHER_REQUIRE_CHROMIUM=1: the browser tests must run; they did not" >&2
    exit 1
  fi
  echo "web/test.sh: SKIPPED the browser tests: $1" >&2
  echo "web/test.sh: only the type check and unit tests ran (set TETHER_REQUIRE_CHROMIUM=1 to make this an error)" >&2
  exit 0
}

# Whether $CHROMIUM starts and renders a page: a headless load with the
# browser tests' flags, bounded. Prints what went wrong on failure.
chromium_starts() {
  local profile out status=0
  profile="$(mktemp -d)"
  local bound=()
  command -v timeout >/dev/null && bound=(timeout --kill-after=5 60)
  out="$(${bound[@]+"${bound[@]}"} "$CHROMIUM" --headless --no-sandbox --disable-gpu --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --dump-dom 'data:text/html,<p>tether-probe</p>' 2>&1)" || status=$?
  rm -rf "$profile"
  if [ "$status" -ne 0 ] || ! grep -q '<p>tether-probe</p>' <<<"$out"; then
    echo "$CHROMIUM did not render a headless page (exit $status${bound[*]:+, bounded at 60 s}):"
    tail -n 15 <<<"$out"
    return 1
  fi
}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else "$@"; fi
}

node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
if [ "$node_major" -lt 20 ]; then
  echo "web/test.sh: Node.js 20 or later is needed (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

cd "$web"
echo "== web: npm ci"
npm ci --no-audit --no-fund --loglevel=error

echo "== web: type check (tsc on the page's JSDoc)"
npx --no-install tsc -p tsconfig.json

echo "== web: unit tests (node $(node --version))"
run_tests tests/unit/
[ "$what" = unit ] && exit 0

if [ ! -x "$CHROMIUM" ]; then
  echo "== web: installing chromium (apt-get)"
  log="$(mktemp)"
  if ! { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    rm -f "$log"
    no_chromium "$CHROMIUM is missing and apt-get could not install chromium (root or passwordless sudo, and Debian's package lists, are needed); install it, or set CHROMIUM=/path/to/chromium"
  fi
  rm -f "$log"
  if [ ! -x "$CHROMIUM" ]; then
    no_chromium "$CHROMIUM is still missing after installing Debian's chromium; set CHROMIUM=/usr/bin/chromium"
  fi
fi
if ! probe="$(chromium_starts)"; then
  echo "$probe" >&2
  no_chromium "$CHROMIUM is installed but does not start"
fi
echo "== web: $("$CHROMIUM" --version 2>/dev/null | head -n 1)"

echo "== web: cargo build -p tether-cli"
(cd "$root" && cargo build --quiet -p tether-cli)
export TETHER_BIN="$CARGO_TARGET_DIR/debug/tether"

echo "== web: browser tests (artifacts in ${WEB_ARTIFACTS:-$CARGO_TARGET_DIR/web-artifacts})"
started=$SECONDS
run_tests tests/e2e/
echo "== web: browser tests passed in $((SECONDS - started)) s"
