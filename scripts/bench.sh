#!/usr/bin/env bash
# The benchmark, in one command (as root): installs the contestants, builds mvnet in release
# mode, and runs every contestant interleaved on one private lab. Writes bench-out/
# (results.json, table.md, latency.svg, scale.svg). Extra arguments go to mvnet-bench,
# e.g. scripts/bench.sh --n 50 --no-docker
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
need=()
for p in containernetworking-plugins netavark iperf3 docker.io busybox-static iproute2 iputils-ping tar \
         etcd-server etcd-client curl protobuf-compiler libprotobuf-dev musl-tools; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update
  apt-get install -y --no-install-recommends "${need[@]}"
fi
cargo build --release -p mvnet-cli -p mvnet-cni -p mvnet-docker -p mvnet-bench
# mvnet, mvnet-cni and the floor as the package ships them: static (musl).
bash scripts/build-static.sh
exec target/release/mvnet-bench --static-dir target/x86_64-unknown-linux-musl/release "$@"
