#!/usr/bin/env bash
# Runs one shell command as root under Debian's distribution kernel (linux-image-amd64), in a
# throw-away qemu VM (software emulation, no KVM needed). This machine's own kernel may lack
# 802.1Q, ipvlan and dummy; Debian's has them as modules, which this script loads first.
#
# The VM mounts this machine's root file system read-only over 9p and chroots into it, so
# the command runs this machine's binaries (iproute2, the mvnet build, test binaries).
# /run, /tmp and /var/tmp inside are fresh tmpfs, except for this checkout (and
# $CARGO_TARGET_DIR), which stay visible wherever they are: a clone under /tmp works too.
# MVNET_VM_KEEP (colon-separated paths) adds more. Output comes back on the serial console.
#
# usage: scripts/kernel-vm.sh 'command'        exit status: the command's, or 99 when the VM
#                                               did not boot or did not report (never a skip).
#
# A guest kernel that locks up (a soft lockup: seen rarely under software emulation, with
# runc spinning in the guest's kernel) panics at once and the VM ends (softlockup_panic),
# instead of hanging until the timeout; the caller sees 99 and the console says why.
# Needs (Debian): qemu-system-x86 linux-image-amd64 busybox-static cpio
set -euo pipefail
cmd=${1:?usage: kernel-vm.sh 'command'}
mem=${MVNET_VM_MEM:-1536}
timeout_s=${MVNET_VM_TIMEOUT:-1500}

kver=$(ls /lib/modules 2>/dev/null | sort -V | tail -1)
[ -n "$kver" ] && [ -f "/boot/vmlinuz-$kver" ] || { echo "kernel-vm: no Debian kernel found: apt-get install linux-image-amd64" >&2; exit 99; }
for tool in qemu-system-x86_64 cpio; do
  command -v "$tool" >/dev/null || { echo "kernel-vm: $tool missing: apt-get install qemu-system-x86 cpio" >&2; exit 99; }
done
[ -x /bin/busybox ] || { echo "kernel-vm: /bin/busybox missing: apt-get install busybox-static" >&2; exit 99; }
moddir=/lib/modules/$kver

work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir -p "$work"/root/{bin,proc,sys,dev,host,mods,keep}
cp /bin/busybox "$work/root/bin/"

# Modules wanted, then their dependencies from modules.dep, in a valid load order.
wanted="8021q macvlan macvtap ipvlan dummy veth bridge 9pnet_virtio 9p virtio_pci"
declare -A seen=()
order=()
add() {   # add MODULE-PATH after its dependencies
  local path=$1
  [ -n "${seen[$path]:-}" ] && return
  seen[$path]=1
  local deps
  deps=$(grep -E "^${path}:" "$moddir/modules.dep" | cut -d: -f2)
  for d in $deps; do add "$d"; done
  order+=("$path")
}
for m in $wanted; do
  p=$(grep -E "/${m}\.ko(\.[a-z]+)?:" "$moddir/modules.dep" | head -1 | cut -d: -f1)
  [ -n "$p" ] && add "$p"
done
: > "$work/root/mods/order"
for p in "${order[@]}"; do
  base=$(basename "$p")
  case "$base" in
    *.ko) cp "$moddir/$p" "$work/root/mods/$base" ;;
    *.ko.xz) xz -dc "$moddir/$p" > "$work/root/mods/${base%.xz}"; base=${base%.xz} ;;
    *.ko.zst) zstd -dcq "$moddir/$p" > "$work/root/mods/${base%.zst}"; base=${base%.zst} ;;
  esac
  echo "$base" >> "$work/root/mods/order"
done

printf '%s\n' "$cmd" > "$work/root/cmd"
# Paths the command needs that the fresh tmpfs mounts would hide (a checkout under /tmp).
repo=$(cd "$(dirname "$0")/.." && pwd -P)
: > "$work/root/keep.list"
for p in "$repo" ${CARGO_TARGET_DIR:+"$CARGO_TARGET_DIR"} $(tr ':' ' ' <<<"${MVNET_VM_KEEP:-}"); do
  p=$(readlink -f "$p" 2>/dev/null) || continue
  case "$p" in /run/*|/tmp/*|/var/tmp/*) echo "$p" >> "$work/root/keep.list" ;; esac
done
cat > "$work/root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
while read -r m; do insmod "/mods/$m" 2>/dev/null; done < /mods/order
if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 hostroot /host; then
  echo "VM-SETUP-FAILED: cannot mount the host root"; poweroff -f
fi
for d in proc sys dev; do mount --bind /$d /host/$d; done
# Set aside what the tmpfs mounts below would hide, then put it back on top of them.
n=0
while read -r p; do
  mkdir -p "/keep/$n" && mount -o bind "/host$p" "/keep/$n"; n=$((n+1))
done < /keep.list
for d in run tmp var/tmp; do mount -t tmpfs tmpfs /host/$d; done
n=0
while read -r p; do
  mkdir -p "/host$p" && mount -o bind "/keep/$n" "/host$p"; n=$((n+1))
done < /keep.list
cp /cmd /host/tmp/cmd
# Start the command's output on a line of its own: the console may still hold an unfinished
# line of boot output, and the filter below drops whole lines that carry boot messages.
echo
chroot /host /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
  /bin/bash -c 'cd /; bash /tmp/cmd'
echo "VM-EXIT-STATUS=$?"
poweroff -f
INIT
chmod +x "$work/root/init"
(cd "$work/root" && find . | cpio -o -H newc 2>/dev/null | gzip -1) > "$work/initramfs.gz"

set +e
timeout "$timeout_s" qemu-system-x86_64 -m "$mem" -smp 2 -nographic -no-reboot \
  -kernel "/boot/vmlinuz-$kver" -initrd "$work/initramfs.gz" \
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
  -append "console=ttyS0 quiet panic=-1 softlockup_panic=1" 2>"$work/qemu.err" \
  | tr -cd '\11\12\15\40-\176' | tee "$work/console" \
  | grep --line-buffered -v -e '^VM-EXIT-STATUS=' -e 'SeaBIOS' -e 'iPXE' -e 'Booting from' -e 'reboot: Power down'
set -e
status=$(grep -o 'VM-EXIT-STATUS=[0-9]*' "$work/console" | tail -1 | cut -d= -f2)
if [ -z "$status" ]; then
  echo "kernel-vm: the VM did not report an exit status (boot failure or timeout)" >&2
  cat "$work/qemu.err" >&2 || true
  exit 99
fi
exit "$status"
