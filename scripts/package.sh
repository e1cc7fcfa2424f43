#!/usr/bin/env bash
# Builds the Debian package target/debian/mvnet_<version>-1_<arch>.deb with dpkg-deb.
# Every binary in it is a static (musl) build (scripts/build-static.sh): the short-lived
# ones (every CNI ADD and `network connect` is a fresh process) start in a third of the
# time, and none of them needs a shared library (the package depends on iproute2 only).
# Man pages and shell completions are generated here, at build time, by the mvnet binary
# from its own clap definitions, so they cannot drift from the commands.
# The package's description and maintainer scripts: crates/mvnet-cli/Cargo.toml
# ([package.metadata.deb]) and crates/mvnet-cli/debian/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build-static.sh
static=target/x86_64-unknown-linux-musl/release
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)-1
arch=$(dpkg --print-architecture)
tree=target/debian/tree
rm -rf "$tree"
install -d "$tree"/{DEBIAN,usr/bin,usr/lib/cni,usr/lib/mvnet/cni,lib/systemd/system} \
  "$tree"/usr/share/{man/man1,doc/mvnet,bash-completion/completions,zsh/vendor-completions} \
  "$tree"/usr/share/fish/vendor_completions.d
# mvnet is the small forwarder users and runtimes start; it runs mvnet-full, beside it,
# for whatever the resident agent does not serve.
for b in mvnet mvnet-full mvnet-docker mvnet-dhcp; do
  install -m 0755 -s "$static/$b" "$tree/usr/bin/$b"
done
# mvnet-cni is the small forwarder runtimes start; it runs mvnet-cni-full, beside it, for
# whatever the resident agent does not serve.
for b in mvnet-cni mvnet-cni-full; do
  install -m 0755 -s "$static/$b" "$tree/usr/lib/cni/$b"
done
# The CNI plugin under the reference plugins' names, in a directory of its own: put
# /usr/lib/mvnet/cni before /usr/lib/cni in CNI_PATH to use it for "type": "macvlan" /
# "ipvlan" configs, without overwriting the reference plugins.
ln -s ../../cni/mvnet-cni "$tree/usr/lib/mvnet/cni/macvlan"
ln -s ../../cni/mvnet-cni "$tree/usr/lib/mvnet/cni/ipvlan"
# The units as installed by the package: binaries in /usr/bin.
for u in contrib/systemd/*.service; do
  sed 's|/usr/local/bin/|/usr/bin/|g' "$u" > "$tree/lib/systemd/system/$(basename "$u")"
done
"$static/mvnet" __man "$tree/usr/share/man/man1"
"$static/mvnet" completion bash > "$tree/usr/share/bash-completion/completions/mvnet"
"$static/mvnet" completion zsh > "$tree/usr/share/zsh/vendor-completions/_mvnet"
"$static/mvnet" completion fish > "$tree/usr/share/fish/vendor_completions.d/mvnet.fish"
install -m 0644 README.md "$tree/usr/share/doc/mvnet/README.md"
meta() { # a field of [package.metadata.deb]
  sed -n "/^\[package.metadata.deb\]/,/^\[/s/^$1 = \"\(.*\)\"$/\1/p" crates/mvnet-cli/Cargo.toml
}
cat > "$tree/usr/share/doc/mvnet/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: mvnet

Files: *
Copyright: $(meta copyright)
License: Apache-2.0
EOF
for s in postinst postrm; do
  install -m 0755 "crates/mvnet-cli/debian/$s" "$tree/DEBIAN/$s"
done
# The long description: the metadata's continued string, wrapped, each line indented.
long=$(sed -n '/^extended-description = """/,/"""$/p' crates/mvnet-cli/Cargo.toml |
  sed '1d;s/"""$//;s/\\$//' | tr -d '\n' | fold -s -w 78 | sed 's/ *$//;s/^/ /')
cat > "$tree/DEBIAN/control" <<EOF
Package: $(meta name)
Version: $version
Architecture: $arch
Section: $(meta section)
Priority: $(meta priority)
Maintainer: $(meta maintainer)
Installed-Size: $(du -sk --exclude=DEBIAN "$tree" | cut -f1)
Depends: $(meta depends)
Description: $(sed -n 's/^description = "\(.*\)"$/\1/p' crates/mvnet-cli/Cargo.toml)
$long
EOF
(cd "$tree" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
  xargs -0 md5sum > DEBIAN/md5sums)
deb=target/debian/$(meta name)_${version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$tree" "$deb" >/dev/null
echo "$deb"
