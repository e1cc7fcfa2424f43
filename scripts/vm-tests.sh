#!/usr/bin/env bash
# Runs the tests that need kernel features this machine may lack (802.1Q, ipvlan) under
# Debian's full kernel, in a qemu VM (scripts/kernel-vm.sh). Inside the VM the tests run with
# MVNET_REQUIRE_FULL_KERNEL=1, so a missing feature fails them instead of skipping. If the VM
# cannot boot, this script fails: CI never skips these tests silently.
set -euo pipefail
cd "$(dirname "$0")/.."
# The real-kernel test binaries whose subject is a full-kernel feature, plus doctor and the
# demo (tested on both kernels), plus containers and modes: Debian's kernel is older than
# this machine's, and some kernel behaviour differs (e.g. where a new link's name is checked),
# plus probe and announce (ARP/DAD timing and sysctls are kernel behaviour too), plus Docker
# parity (disable_ipv6, DAD with a parent that is down), plus the Docker plugin's ipvlan and
# 802.1Q cases (a private dockerd inside the VM).
mapfile -t bins < <(bash scripts/test-binaries.sh vlan ipvlan doctor demo netlink containers \
  modes probe announce docker_parity docker_fullkernel)
# The Docker cases last: a stopped dockerd's containerd and shims wind down for a while,
# and would slow the timing-sensitive tests after them.
mapfile -t bins < <(printf '%s\n' "${bins[@]}" | grep -v '/docker_fullkernel-'; printf '%s\n' "${bins[@]}" | grep '/docker_fullkernel-')
[ "${#bins[@]}" -ge 12 ] || { echo "vm-tests: expected 12 test binaries, found ${#bins[@]}" >&2; exit 1; }
# Left out in the VM: load tests without a kernel feature for subject (the host runs them).
# Under software emulation twenty_containers_on_one_network alone took over a minute.
skips="--skip twenty_containers_on_one_network"
# One VM running the given test binaries in turn; its console goes to stdout and to LOG.
run_vm() {   # run_vm LOG BIN...
  local log=$1; shift
  # dockerd needs the cgroup file system, which the VM's minimal init does not mount.
  local cmd="mountpoint -q /sys/fs/cgroup || mount -t cgroup2 none /sys/fs/cgroup"
  cmd+="; export MVNET_REQUIRE_FULL_KERNEL=1 RUST_BACKTRACE=1; cd /tmp; failed=0"
  local b
  for b in "$@"; do
    cmd+="; echo \"== \$(basename $b) under \$(uname -r)\"; $b --test-threads=2 $skips || failed=\$((failed+1))"
  done
  cmd+="; exit \$failed"
  set +e
  bash scripts/kernel-vm.sh "$cmd" | tee "$log"
  local status=${PIPESTATUS[0]}
  set -e
  return "$status"
}
passed_in() { grep -o 'test result: [a-zA-Z]*\. [0-9]* passed' "$1" | awk '{s+=$4} END {print s+0}'; }
failed_in() { grep -o '[0-9]* failed;' "$1" | awk '{s+=$1} END {print s+0}'; }

log=$(mktemp); log2=$(mktemp); trap 'rm -f "$log" "$log2"' EXIT
status=0
run_vm "$log" "${bins[@]}" || status=$?
if [ "$status" -eq 99 ] && grep -q 'soft lockup' "$log"; then
  # The guest kernel locked up (software emulation; the VM panicked on it). Not a test's
  # verdict: run the binary it happened in, and the ones after it, once more in a new VM.
  # Binaries that had finished keep their results.
  last=$(grep -o '^== [^ ]*' "$log" | tail -1 | cut -c4-)
  rest=(); found=
  for b in "${bins[@]}"; do
    [ "$(basename "$b")" = "$last" ] && found=1
    [ -n "$found" ] && rest+=("$b")
  done
  echo "vm-tests: the VM's kernel locked up during $last; running it and the ${#rest[@]} binaries from it again in a new VM" >&2
  # Results of the binaries before the one that locked up.
  awk -v last="== $last" 'index($0, last) == 1 {exit} {print}' "$log" > "$log.done"
  mv "$log.done" "$log"
  status=0
  run_vm "$log2" "${rest[@]}" || status=$?
  cat "$log2" >> "$log"
fi
passed=$(passed_in "$log")
failed=$(failed_in "$log")
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
if [ "$failed" -ne 0 ] && [ "$status" -eq 0 ]; then status=1; fi
echo "vm: $passed passed, $failed failed"
exit "$status"
