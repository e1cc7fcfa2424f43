#!/usr/bin/env bash
# Builds the .deb (scripts/package.sh) and checks it in a clean root, without touching this
# machine's own dpkg database or /usr: dpkg --root with chrootless maintainer scripts
# (they honour $DPKG_ROOT). Then, from the installed paths: the demo (its own sandbox lab),
# mvnet doctor on a lab's docker host, bash completion of network names, the man pages;
# then an upgrade (reinstall) that keeps state, remove (keeps /var/lib/mvnet) and purge
# (deletes it). Run as root. Prints "package-test: ok" at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$(bash scripts/package.sh | tail -1)
[ -f "$deb" ] || { echo "package-test: FAILED: scripts/package.sh made no package" >&2; exit 1; }
root=$(mktemp -d /tmp/mvnet-pkgroot.XXXXXX)
lab="pk$$"
cleanup() {
  # The packaged binary may be gone already (remove/purge): the built one takes it down.
  target/x86_64-unknown-linux-musl/release/mvnet lab down --name "$lab" >/dev/null 2>&1 || true
  rm -rf "$root"
}
trap cleanup EXIT
fail() { echo "package-test: FAILED: $*" >&2; exit 1; }
dpkg_root() {
  dpkg --root="$root" --force-script-chrootless --force-depends --log=/dev/null "$@" \
    >>"$root/dpkg.log" 2>&1 || { cat "$root/dpkg.log"; fail "dpkg $*"; }
}
mkdir -p "$root/var/lib/dpkg/updates" "$root/var/lib/dpkg/info"
touch "$root/var/lib/dpkg/status"

dpkg_root -i "$deb"
for f in usr/bin/mvnet usr/bin/mvnet-full usr/bin/mvnet-docker usr/bin/mvnet-dhcp usr/lib/cni/mvnet-cni \
         usr/lib/cni/mvnet-cni-full \
         lib/systemd/system/mvnet-dhcp.service lib/systemd/system/mvnet-fleet.service \
         lib/systemd/system/mvnet-docker.service lib/systemd/system/mvnet-restore.service \
         usr/share/man/man1/mvnet.1 usr/share/man/man1/mvnet-network-create.1 \
         usr/share/bash-completion/completions/mvnet usr/share/zsh/vendor-completions/_mvnet \
         usr/share/fish/vendor_completions.d/mvnet.fish; do
  [ -e "$root/$f" ] || fail "$f is not installed"
done
[ "$(readlink -f "$root/usr/lib/mvnet/cni/macvlan")" = "$root/usr/lib/cni/mvnet-cni" ] \
  || fail "/usr/lib/mvnet/cni/macvlan does not lead to mvnet-cni"
[ ! -e "$root/usr/lib/cni/macvlan" ] || fail "the reference macvlan plugin's name is taken"
[ "$(stat -c %a "$root/var/lib/mvnet")" = 700 ] || fail "/var/lib/mvnet is not 0700"
grep -q 'ExecStart=/usr/bin/mvnet-docker' "$root/lib/systemd/system/mvnet-docker.service" \
  || fail "the unit does not start /usr/bin/mvnet-docker"
grep -q 'ExecStart=/usr/bin/mvnet fleet-keeper' "$root/lib/systemd/system/mvnet-fleet.service" \
  || fail "the fleet unit does not start /usr/bin/mvnet fleet-keeper"
man -l "$root/usr/share/man/man1/mvnet-network-create.1" 2>/dev/null | grep -q -- '--subnet' \
  || grep -q -- 'subnet' "$root/usr/share/man/man1/mvnet-network-create.1" \
  || fail "mvnet-network-create.1 does not document --subnet"
"$root/usr/bin/mvnet" version >/dev/null || fail "mvnet version"
# The forwarder, run under the reference's name through its link, finds the full plugin.
echo '{"cniVersion":"1.1.0"}' | CNI_COMMAND=VERSION "$root/usr/lib/mvnet/cni/macvlan" \
  | grep -q '"supportedVersions"' || fail "CNI VERSION through /usr/lib/mvnet/cni/macvlan"
"$root/usr/bin/mvnet-docker" --version >/dev/null || fail "mvnet-docker --version"

# The seed's scenario from the installed binary (the demo builds and removes its own lab).
"$root/usr/bin/mvnet" demo >"$root/demo.log" 2>&1 \
  || { cat "$root/demo.log"; fail "the demo from /usr/bin/mvnet"; }
# doctor, and bash completion of network names, on a lab's docker host.
"$root/usr/bin/mvnet" lab up --name "$lab" >/dev/null
"$root/usr/bin/mvnet" lab exec --name "$lab" -- \
  "$root/usr/bin/mvnet" doctor --parent eth0 >"$root/doctor.log" 2>&1 \
  || { cat "$root/doctor.log"; fail "mvnet doctor"; }
"$root/usr/bin/mvnet" lab exec --name "$lab" -- \
  "$root/usr/bin/mvnet" network create --subnet 10.103.19.0/24 -o parent=eth0 backbone >/dev/null
words=$("$root/usr/bin/mvnet" lab exec --name "$lab" -- bash -c \
  "export PATH=$root/usr/bin:\$PATH; source $root/usr/share/bash-completion/completions/mvnet; COMP_WORDS=(mvnet network inspect ba); COMP_CWORD=3; _mvnet_with_networks; echo \"\${COMPREPLY[*]}\"")
[ "$words" = backbone ] || fail "bash completion of network names gave '$words'"
"$root/usr/bin/mvnet" lab down --name "$lab" >/dev/null || fail "mvnet lab down"

# Upgrade (a reinstall runs the same maintainer scripts) keeps state; remove keeps it;
# purge deletes it.
touch "$root/var/lib/mvnet/marker"
dpkg_root -i "$deb"
[ -e "$root/var/lib/mvnet/marker" ] || fail "an upgrade lost /var/lib/mvnet"
dpkg_root -r mvnet
[ ! -e "$root/usr/bin/mvnet" ] || fail "remove left /usr/bin/mvnet"
[ -e "$root/var/lib/mvnet/marker" ] || fail "remove deleted the state"
dpkg_root -P mvnet
[ ! -e "$root/var/lib/mvnet" ] || fail "purge kept /var/lib/mvnet"
echo "package-test: ok ($deb)"
