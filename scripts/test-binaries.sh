#!/usr/bin/env bash
# Prints the executables of the workspace's integration test targets with the given names
# (tests/NAME.rs), one per line, as `cargo test --workspace` builds them (building them
# first if needed). For the scripts that run test binaries themselves: test.sh (again,
# against the static plugin) and vm-tests.sh (inside the VM).
#   bash scripts/test-binaries.sh NAME...
set -euo pipefail
cd "$(dirname "$0")/.."
wanted=$(printf '%s\n' "$@" | jq -R . | jq -s -c .)
cargo test --workspace --no-run --message-format=json 2>/dev/null \
  | jq -r --argjson w "$wanted" 'select(.reason=="compiler-artifact" and .profile.test==true
        and (.target.kind|index("test")) and (.target.name as $n | $w | index($n)))
        | .executable'
