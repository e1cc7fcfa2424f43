#!/usr/bin/env bash
# Regression test (issue 19, item 25): the full-kernel VM must see a checkout that lives
# under /tmp, where the VM mounts a fresh tmpfs. Copies the VM script into a fake checkout
# under /tmp and has the VM read a file from it. Prints the plain "N passed, N failed" line.
set -euo pipefail
cd "$(dirname "$0")/.."
fake=$(mktemp -d /tmp/mvnet-vm-checkout-XXXXXX)
trap 'rm -rf "$fake"' EXIT
mkdir -p "$fake/scripts"
cp scripts/kernel-vm.sh "$fake/scripts/"
marker="checkout-visible-$RANDOM$RANDOM"
echo "$marker" > "$fake/marker"
set +e
out=$(bash "$fake/scripts/kernel-vm.sh" "cat $fake/marker" 2>&1)
status=$?
set -e
if [ "$status" -eq 0 ] && grep -q "$marker" <<<"$out"; then
  echo "vm-tmp-checkout: 1 passed, 0 failed"
else
  echo "$out" | tail -20
  echo "vm-tmp-checkout: the VM could not read $fake/marker (status $status)"
  echo "vm-tmp-checkout: 0 passed, 1 failed"
  exit 1
fi
