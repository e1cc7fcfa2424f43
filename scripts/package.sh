#!/usr/bin/env bash
# Builds the Debian package target/debian/mvnet_<version>_<arch>.deb with cargo-deb.
# Man pages and shell completions are generated here, at build time, by the mvnet binary
# from its own clap definitions, so they cannot drift from the commands.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=$PWD/target/tools
if ! command -v cargo-deb >/dev/null && [ ! -x "$tools/bin/cargo-deb" ]; then
  cargo install cargo-deb --version "~3.8" --locked --root "$tools"
fi
export PATH=$tools/bin:$PATH
cargo build --release -p mvnet-cli -p mvnet-cni -p mvnet-docker -p mvnet-dhcp
# mvnet and mvnet-cni ship as static musl builds: they start in a third of the time (every
# CNI ADD and `network connect` is a fresh process).
bash scripts/build-static.sh
assets=target/release/package-assets
rm -rf "$assets"
mkdir -p "$assets"/{man,completions,systemd,cni,static}
# mvnet-cni is the small forwarder runtimes start; it runs mvnet-cni-full, beside it, for
# whatever the resident agent does not serve.
static=target/x86_64-unknown-linux-musl/release
cp "$static/mvnet" "$static/mvnet-cni" "$static/mvnet-cni-full" "$assets/static/"
target/release/mvnet __man "$assets/man"
target/release/mvnet completion bash > "$assets/completions/mvnet"
target/release/mvnet completion zsh > "$assets/completions/_mvnet"
target/release/mvnet completion fish > "$assets/completions/mvnet.fish"
# The units as installed by the package: binaries in /usr/bin.
for u in contrib/systemd/*.service; do
  sed 's|/usr/local/bin/|/usr/bin/|g' "$u" > "$assets/systemd/$(basename "$u")"
done
# The CNI plugin under the reference plugins' names, in a directory of its own: put
# /usr/lib/mvnet/cni before /usr/lib/cni in CNI_PATH to use it for "type": "macvlan" /
# "ipvlan" configs, without overwriting the reference plugins.
ln -s ../../cni/mvnet-cni "$assets/cni/macvlan"
ln -s ../../cni/mvnet-cni "$assets/cni/ipvlan"
mkdir -p target/debian
cargo deb -p mvnet-cli --no-build --output target/debian/ "$@"
ls -1 target/debian/*.deb
