#!/usr/bin/env bash
# The whole test suite, as the README's second command and CI run it (as root).
# Each stage prints how long it took (CI must stay under 30 minutes on a 2-core machine).
set -euo pipefail
cd "$(dirname "$0")/.."
stage() {
  local began=$SECONDS
  "$@"
  echo "test.sh: '$*' took $((SECONDS - began)) s" >&2
}
stage bash scripts/test-deps.sh
stage cargo build --workspace --all-targets
stage cargo test --workspace -- --test-threads=8
# The package ships static (musl) builds: the CNI tests again with that plugin (its
# resident agent included). The test binaries built above are run as they are:
# `cargo test -p mvnet-cni` would first rebuild the crates with that one package's
# features (about a minute here).
static_cni_tests() {
  local bins b plugin=$PWD/target/x86_64-unknown-linux-musl/release/mvnet-cni
  mapfile -t bins < <(bash scripts/test-binaries.sh cni resident)
  [ "${#bins[@]}" -eq 2 ] || { echo "test.sh: expected the cni and resident test binaries, found ${#bins[@]}" >&2; return 1; }
  for b in "${bins[@]}"; do
    (cd crates/mvnet-cni && MVNET_TEST_CNI_PLUGIN=$plugin "$b" --test-threads=8)
  done
}
stage bash scripts/build-static.sh
stage static_cni_tests
# Tests that need 802.1Q/ipvlan, under Debian's full kernel in a VM (fails if it cannot boot).
stage bash scripts/vm-tests.sh
# The VM must also work for a checkout under /tmp (its /tmp is a fresh tmpfs).
stage bash scripts/vm-tmp-checkout-test.sh
# The Debian package (of the static builds above), installed into a clean root and used
# from the installed paths.
stage bash scripts/package-test.sh
echo "test.sh: all stages passed in $SECONDS s" >&2
