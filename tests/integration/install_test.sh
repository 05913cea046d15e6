#!/usr/bin/env bash
# Installs the already-built tree into a temp prefix (`cmake --install BUILD --prefix TMP`), checks
# the layout (no fixtures, no tests, no example domain), then builds examples/consumer against it
# twice, with find_package(keel) and with pkg-config, and runs both.
#   tests/integration/install_test.sh BUILD_DIR SOURCE_DIR VERSION
set -euo pipefail

build=$(cd "$1" && pwd)
source=$(cd "$2" && pwd)
version=$3
work=$(mktemp -d "${TMPDIR:-/tmp}/keel-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix

fail() { echo "install_test: $*" >&2; exit 1; }
step() { echo "== $*"; }

step "cmake --install $build --prefix $prefix"
cmake --install "$build" --prefix "$prefix" >"$work/install.log" || { cat "$work/install.log"; fail "install failed"; }
(cd "$prefix" && find . -maxdepth 3 | sort)

step "layout"
[ -x "$prefix/bin/keel" ] || fail "no bin/keel"
for file in keelConfig.cmake keelConfigVersion.cmake keelTargets.cmake; do
  [ -f "$prefix/lib/cmake/keel/$file" ] || fail "no lib/cmake/keel/$file"
done
[ -f "$prefix/lib/pkgconfig/keel.pc" ] || fail "no lib/pkgconfig/keel.pc"
[ -f "$prefix/include/keel/core/version.h" ] || fail "no include/keel/core/version.h"
for area in core resilience shard balance eventlog pubsub cqrs http coord proxy; do
  [ -f "$prefix/lib/libkeel_$area.a" ] || fail "no lib/libkeel_$area.a"
done
if ls "$prefix"/lib/libkeel_testing* "$prefix"/lib/libkeel_orders* >/dev/null 2>&1; then
  fail "fixtures or the example domain were installed: $(ls "$prefix"/lib)"
fi
[ ! -e "$prefix/include/keel/testing" ] || fail "include/keel/testing was installed"
[ ! -e "$prefix/include/keel/cli" ] || fail "include/keel/cli was installed"
stray=$(find "$prefix/include" -name '*_test.*' -o -name 'test_support.h' -o -name '*_impl.h' -o -name '*.cc')
[ -z "$stray" ] || fail "test or internal files installed: $stray"
if grep -rlE '#include ["<](keel/testing/|gtest/|orders\.h)' "$prefix/include"; then
  fail "an installed header includes a fixture, GoogleTest or the example domain"
fi
if nm -C "$prefix"/lib/libkeel_*.a 2>/dev/null | grep -E ' [TW] keel::testing::|progress_bar'; then
  fail "fixture code is inside an installed library"
fi

step "keel --version"
printed=$("$prefix/bin/keel" --version)
[ "$printed" = "keel $version" ] || fail "keel --version printed '$printed', expected 'keel $version'"

launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi

step "examples/consumer with find_package(keel)"
cmake -S "$source/examples/consumer" -B "$work/consumer" "${generator[@]}" "${launcher[@]}" \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" >"$work/configure.log" ||
  { cat "$work/configure.log"; fail "configuring examples/consumer failed"; }
cmake --build "$work/consumer" || fail "building examples/consumer failed"
"$work/consumer/consumer" | tee "$work/consumer.out"
grep -qx "keel $version" "$work/consumer.out" || fail "the consumer saw another version"
grep -qx ok "$work/consumer.out" || fail "the consumer did not finish"

step "examples/consumer with pkg-config"
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
[ "$(pkg-config --modversion keel)" = "$version" ] || fail "keel.pc has version $(pkg-config --modversion keel)"
compiler=(c++)
if command -v ccache >/dev/null; then compiler=(ccache c++); fi
# shellcheck disable=SC2046
"${compiler[@]}" -O1 $(pkg-config --cflags keel) "$source/examples/consumer/main.cc" \
  -o "$work/consumer-pc" $(pkg-config --libs keel) || fail "building with pkg-config failed"
"$work/consumer-pc" | grep -qx ok || fail "the pkg-config build did not finish"

echo "install_test: ok"
