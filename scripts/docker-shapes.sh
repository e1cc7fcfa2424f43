#!/usr/bin/env bash
# Regenerates crates/mvnet-cli/tests/fixtures/docker-20.10-shapes.json from a real, private
# dockerd (Debian's docker.io) in a sandbox lab: the keys and JSON types of
# `docker network inspect` and `docker inspect`. The test that compares mvnet's output with
# it (crates/mvnet-cli/tests/docker_shapes.rs) needs no Docker. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace
cargo test -p mvnet-docker --test docker_shapes -- --ignored --nocapture
