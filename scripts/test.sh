#!/usr/bin/env bash
# The whole test suite, as the README's second command and CI run it (as root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test-deps.sh
cargo build --workspace --all-targets
cargo test --workspace -- --test-threads=8
# The package ships static (musl) builds of mvnet and mvnet-cni: the CNI tests again with
# that plugin (its resident agent included).
bash scripts/build-static.sh
MVNET_TEST_CNI_PLUGIN=$PWD/target/x86_64-unknown-linux-musl/release/mvnet-cni \
  cargo test -p mvnet-cni --test cni --test resident -- --test-threads=8
# Tests that need 802.1Q/ipvlan, under Debian's full kernel in a VM (fails if it cannot boot).
bash scripts/vm-tests.sh
# The VM must also work for a checkout under /tmp (its /tmp is a fresh tmpfs).
bash scripts/vm-tmp-checkout-test.sh
# The Debian package, installed into a clean root and used from the installed paths.
bash scripts/package-test.sh
