#!/usr/bin/env bash
# A/B of two builds of the CLI, each with its own state root and resident agent:
# `mvnet network connect` + `disconnect` of a bare namespace through each in turn (the
# order alternating), on a private lab of namespaces (nothing touches this machine's
# network). Prints both connect medians and their ratio. Run as root.
#   bash scripts/ab-cli.sh DIR_A DIR_B [ROUNDS]   (each DIR holds mvnet and, for builds that
#                                                  have it, mvnet-full; e.g.
#                                                  target/x86_64-unknown-linux-musl/release)
set -euo pipefail
A=$1; B=$2; n=${3:-200}
tag=abc$$
work=$(mktemp -d /tmp/mvnet-abcli.XXXXXX)
cleanup() {
  for ns in $(ip netns list | awk '{print $1}' | grep "^$tag-" || true); do ip netns del "$ns"; done
  for r in a b; do [ -f "$work/$r/cli-agent.lock" ] && kill "$(cat "$work/$r/cli-agent.lock")" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/a" "$work/b"
ip netns add "$tag-host"
ip -n "$tag-host" link add eth0 type veth peer name peer0
ip -n "$tag-host" link set eth0 up; ip -n "$tag-host" link set peer0 up
ip netns add "$tag-a"; ip netns add "$tag-b"
ip netns exec "$tag-host" env MVNET_ROOT="$work/a" "$A/mvnet" network create \
  --subnet=10.91.0.0/16 -o parent=eth0 -o probe_ms=0 ab >/dev/null
ip netns exec "$tag-host" env MVNET_ROOT="$work/b" "$B/mvnet" network create \
  --subnet=10.90.0.0/16 -o parent=eth0 -o probe_ms=0 ab >/dev/null
ip netns exec "$tag-host" python3 - "$tag" "$work" "$A" "$B" "$n" <<'PY'
import sys,subprocess,time,statistics
tag,work,A,B,n=sys.argv[1],sys.argv[2],sys.argv[3],sys.argv[4],int(sys.argv[5])
def mk(d,r):
    env={"PATH":"/usr/bin:/bin","MVNET_ROOT":f"{work}/{r}"}
    def go(cmd):
        t=time.perf_counter()
        p=subprocess.run([f"{d}/mvnet","network",cmd,"ab","--netns",f"/run/netns/{tag}-{r}"],env=env,capture_output=True)
        dt=(time.perf_counter()-t)*1e3
        if p.returncode: raise SystemExit(f"{d} {cmd}: {p.stderr!r}")
        return dt
    return go
c={"A":mk(A,"a"),"B":mk(B,"b")}
for k in c:
    for _ in range(3): c[k]("connect"); c[k]("disconnect")
time.sleep(0.5)
r={k:[] for k in c}
for i in range(n):
    for k in (["A","B"] if i%2==0 else ["B","A"]):
        r[k].append(c[k]("connect")); c[k]("disconnect")
m=statistics.median
print(f"A {m(r['A']):.3f}  B {m(r['B']):.3f}  B/A {m(r['B'])/m(r['A']):.3f}   per-pair median B/A {m([b/a for a,b in zip(r['A'],r['B'])]):.3f}")
PY
