#!/usr/bin/env bash
# The Kotlin bindings, compiled and run on the JVM with plain kotlinc + java
# (no Gradle, no Maven Central):
#   1. builds the debug library with the `test-server` feature and generates
#      its Kotlin bindings (../generate.sh --test-server kotlin);
#   2. compiles those bindings, the Android adapter's plain-Kotlin core
#      (../platform/kotlin/core/) and the test program (src/) into one jar;
#   3. runs the test program against the library; exit 0 only when every
#      test passed. Extra arguments: a test-name filter ("adapter core").
#
# What it needs, installed when missing:
#   - a JDK 17+ (java, javac): apt-get install openjdk-17-jdk-headless (root only);
#   - JNA: Debian's libjna-java (root only), or JNA_JAR=/path/to/jna.jar;
#   - kotlinc, the Kotlin stdlib, kotlin-test and kotlinx-coroutines-core-jvm:
#     all in the npm package kotlin-compiler (pinned below), installed with
#     npm into the target directory.
# Uses CARGO_TARGET_DIR when set, else the workspace's target directory.
set -euo pipefail

KOTLIN_VERSION=2.4.20

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ffi="$(cd "$here/.." && pwd)"
workspace="$(cd "$ffi/../.." && pwd)"
fail() { echo "kotlin test: $*" >&2; exit 1; }

if [ -n "${CARGO_TARGET_DIR:-}" ]; then
    target_dir="$CARGO_TARGET_DIR"
else
    target_dir="$(cd "$workspace" && cargo metadata --format-version 1 --no-deps |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
fi

apt_install() {
    [ "$(id -u)" = 0 ] || fail "$1 is missing; install the Debian package $2 (needs root) and run again"
    echo "== installing $2 (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; } ||
        fail "apt-get install $2 failed"
}

# A JDK: kotlinc runs on it, and java runs the tests.
if ! command -v javac >/dev/null || ! command -v java >/dev/null; then
    apt_install "a JDK (javac)" openjdk-17-jdk-headless
fi
java_major="$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')"
[ "${java_major:-0}" -ge 17 ] 2>/dev/null || fail "needs Java 17 or newer, found '${java_major:-none}'"

# JNA: what the generated bindings call the library through.
jna="${JNA_JAR:-/usr/share/java/jna.jar}"
if [ ! -f "$jna" ]; then
    [ -z "${JNA_JAR:-}" ] || fail "JNA_JAR=$JNA_JAR does not exist"
    apt_install "JNA ($jna)" libjna-java
    [ -f "$jna" ] || fail "libjna-java installed no $jna"
fi

# kotlinc and the Kotlin libraries, from npm.
tools="$target_dir/kotlin-tools"
kotlin_home="$tools/node_modules/kotlin-compiler"
if [ "$(cat "$kotlin_home/build.txt" 2>/dev/null)" != "$KOTLIN_VERSION" ]; then
    command -v npm >/dev/null || fail "npm is missing (needed for the kotlin-compiler package)"
    echo "== installing kotlin-compiler@$KOTLIN_VERSION (npm) into $tools"
    mkdir -p "$tools"
    npm install --prefix "$tools" --no-save --no-audit --no-fund --loglevel=error \
        "kotlin-compiler@$KOTLIN_VERSION" || fail "npm install kotlin-compiler@$KOTLIN_VERSION failed"
fi
lib="$kotlin_home/lib"
for jar in kotlin-stdlib.jar kotlin-test.jar kotlinx-coroutines-core-jvm.jar; do
    [ -f "$lib/$jar" ] || fail "kotlin-compiler@$KOTLIN_VERSION has no lib/$jar"
done
classpath="$lib/kotlinx-coroutines-core-jvm.jar:$lib/kotlin-test.jar:$jna"

"$ffi/generate.sh" --test-server kotlin
bindings="$ffi/build/kotlin/rt/tether/tether_ffi.kt"
[ -f "$bindings" ] || fail "generate.sh wrote no $bindings"

out="$target_dir/kotlin-test"
mkdir -p "$out"
echo "== kotlinc: bindings + platform/kotlin/core + kotlin/src"
started=$SECONDS
# -nowarn: the generated bindings warn (deprecations, unchecked casts) and
# are not ours to fix; errors still fail.
bash "$kotlin_home/bin/kotlinc-jvm" -nowarn -jvm-target 17 -cp "$classpath" -d "$out/tests.jar" \
    "$bindings" "$ffi"/platform/kotlin/core/*.kt "$here"/src/*.kt ||
    fail "kotlinc failed (see the errors above)"
echo "== compiled in $((SECONDS - started)) s"

case "$(uname -s)" in
    Darwin) library_dir_var=DYLD_LIBRARY_PATH ;;
    *) library_dir_var=LD_LIBRARY_PATH ;;
esac
echo "== java: the Kotlin tests against $target_dir/debug/libtether_ffi"
started=$SECONDS
status=0
env "$library_dir_var=$target_dir/debug${!library_dir_var:+:${!library_dir_var}}" \
    java -Djna.library.path="$target_dir/debug" \
    -cp "$out/tests.jar:$lib/kotlin-stdlib.jar:$classpath" rt.tether.test.MainKt "$@" || status=$?
echo "== ran in $((SECONDS - started)) s"
[ "$status" = 0 ] || fail "the Kotlin tests failed (exit $status)"
