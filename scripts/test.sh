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
# resident agent included).
stage bash scripts/build-static.sh
export MVNET_TEST_CNI_PLUGIN=$PWD/target/x86_64-unknown-linux-musl/release/mvnet-cni
stage cargo test -p mvnet-cni --test cni --test resident -- --test-threads=8
unset MVNET_TEST_CNI_PLUGIN
# Tests that need 802.1Q/ipvlan, under Debian's full kernel in a VM (fails if it cannot boot).
stage bash scripts/vm-tests.sh
# The VM must also work for a checkout under /tmp (its /tmp is a fresh tmpfs).
stage bash scripts/vm-tmp-checkout-test.sh
# The Debian package (of the static builds above), installed into a clean root and used
# from the installed paths.
stage bash scripts/package-test.sh
echo "test.sh: all stages passed in $SECONDS s" >&2
