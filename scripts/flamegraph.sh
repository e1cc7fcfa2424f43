#!/usr/bin/env bash
# A flame graph of CNI ADDs through the static mvnet-cni and its resident agent, on a
# private lab of namespaces (nothing touches this machine's network), with perf:
#   bash scripts/flamegraph.sh [N] [OUT.svg]      (as root; default 300 ADDs, docs/bench/flame-add.svg)
# Samples every CPU at 20 kHz (cpu-clock) with DWARF call chains, keeps those of the
# plugin processes and the agent, and folds them with mvnet-flame.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-300}
out=${2:-docs/bench/flame-add.svg}
command -v perf >/dev/null || { apt-get update && apt-get install -y --no-install-recommends linux-perf; }
bash scripts/build-static.sh >/dev/null
cargo build --release -p mvnet-bench >/dev/null
plugin=$PWD/target/x86_64-unknown-linux-musl/release/mvnet-cni
tag=fg$$
work=$(mktemp -d /tmp/mvnet-flame.XXXXXX)
cleanup() {
  for ns in $(ip netns list | awk '{print $1}' | grep "^$tag-" || true); do ip netns del "$ns"; done
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$tag-host"
ip -n "$tag-host" link add eth0 type veth peer name peer0
ip -n "$tag-host" link set eth0 up
ip -n "$tag-host" link set peer0 up
for i in $(seq 0 "$n"); do ip netns add "$tag-c$i"; done
conf='{"cniVersion":"1.0.0","name":"flame","type":"macvlan","master":"eth0","ipam":{"type":"mvnet","subnet":"10.99.0.0/16","routes":[{"dst":"0.0.0.0/0"}]}}'
cni() { # cmd i
  echo "$conf" | nsenter --net="/run/netns/$tag-host" env CNI_COMMAND="$1" CNI_CONTAINERID="c$2" \
    CNI_NETNS="/run/netns/$tag-c$2" CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni MVNET_ROOT="$work/state" "$plugin" >/dev/null
}
# The first ADD runs in the plugin's own process and starts the agent; then only the fast path.
cni ADD 0
sleep 0.5
agent=$(cat "$work/state/cni-agent.lock")
export -f cni; export conf tag work plugin
perf record -q -e cpu-clock -F 20000 -a --call-graph dwarf,16384 -o "$work/perf.data" -- \
  bash -c "for i in \$(seq 1 $n); do cni ADD \$i; done" 2>/dev/null
perf script -i "$work/perf.data" -F comm,pid,tid,ip,sym --comm mvnet-cni,mvnet-cni-full 2>/dev/null \
  | target/release/mvnet-flame --title "mvnet-cni ADD, $n ADDs through the resident agent (static musl build)" \
      --agent-pid "$agent" --per "$n" --hz 20000 > "$out"
for i in $(seq 0 "$n"); do cni DEL "$i"; done
echo "flamegraph: $out"
