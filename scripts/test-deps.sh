#!/usr/bin/env bash
# Installs what mvnet's test suite needs on Debian (run as root). Idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends \
  iproute2 iputils-ping jq procps tar python3 util-linux \
  qemu-system-x86 linux-image-amd64 busybox-static cpio \
  containernetworking-plugins podman runc netavark iperf3 \
  docker.io dnsmasq-base \
  etcd-server etcd-client protobuf-compiler libprotobuf-dev curl musl-tools
