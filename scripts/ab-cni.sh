#!/usr/bin/env bash
# A/B of two builds of the CNI plugin, each with its own state root and resident agent:
# ADD + DEL through each in turn, on a private lab of namespaces (nothing touches this
# machine's network). Prints both medians and their ratio. Run as root.
# An A/A run (the same directory twice) shows the noise: about 2 % at 60 rounds, under
# 1 % at 200.
#   bash scripts/ab-cni.sh DIR_A DIR_B [ROUNDS]   (each DIR holds mvnet-cni and mvnet-cni-full,
#                                                  e.g. target/x86_64-unknown-linux-musl/release)
set -euo pipefail
A=$1; B=$2; n=${3:-200}
tag=ab$$
work=$(mktemp -d /tmp/mvnet-abcni.XXXXXX)
cleanup() {
  for ns in $(ip netns list | awk '{print $1}' | grep "^$tag-" || true); do ip netns del "$ns"; done
  for r in a b; do [ -f "$work/$r/cni-agent.lock" ] && kill "$(cat $work/$r/cni-agent.lock)" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$tag-host"
ip -n "$tag-host" link add eth0 type veth peer name peer0
ip -n "$tag-host" link set eth0 up; ip -n "$tag-host" link set peer0 up
ip netns add "$tag-c"
ip netns exec "$tag-host" python3 - "$tag" "$work" "$A" "$B" "$n" <<'PY'
import sys,subprocess,time,statistics,json
tag,work,A,B,n=sys.argv[1],sys.argv[2],sys.argv[3],sys.argv[4],int(sys.argv[5])
def mk(d,root,sub):
    conf=json.dumps({"cniVersion":"1.0.0","name":"ab"+root,"type":"macvlan","master":"eth0","ipam":{"type":"mvnet","subnet":sub,"routes":[{"dst":"0.0.0.0/0"}]}}).encode()
    def go(cmd):
        env={"PATH":"/usr/bin:/bin","CNI_COMMAND":cmd,"CNI_CONTAINERID":"c1","CNI_NETNS":f"/run/netns/{tag}-c","CNI_IFNAME":"eth0","CNI_PATH":"/usr/lib/cni","MVNET_ROOT":f"{work}/{root}"}
        t=time.perf_counter(); p=subprocess.run([f"{d}/mvnet-cni"],input=conf,env=env,capture_output=True); dt=(time.perf_counter()-t)*1e3
        if p.returncode: raise SystemExit(f"{d} {cmd}: {p.stdout!r} {p.stderr!r}")
        return dt
    return go
c={"A":mk(A,"a","10.91.0.0/16"),"B":mk(B,"b","10.90.0.0/16")}
for k in c:
    for _ in range(3): c[k]("ADD"); c[k]("DEL")
time.sleep(0.5)
r={k:[] for k in c}
for i in range(n):
    for k in (["A","B"] if i%2==0 else ["B","A"]):
        r[k].append(c[k]("ADD")); c[k]("DEL")
m=statistics.median
print(f"A {m(r['A']):.3f}  B {m(r['B']):.3f}  B/A {m(r['B'])/m(r['A']):.3f}   per-pair median B/A {m([b/a for a,b in zip(r['A'],r['B'])]):.3f}")
PY
