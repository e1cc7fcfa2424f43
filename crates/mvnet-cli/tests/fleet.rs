//! Shared pools across hosts (`--ipam-opt pool=NAME`), against a real 3-member etcd
//! cluster (Debian's etcd-server) whose members run on the lab's LAN, with three docker
//! hosts on that LAN, each with its own mvnet state. Root.

mod common;

use common::TestLab;
use mvnet_lab::testkit::EtcdCluster;

/// The pool every test uses: the lab's subnet, addresses from .128/25 (the lab's own
/// machines sit below), shared as "office".
fn pool_network(lab: &TestLab, host: usize, etcd: &str, extra: &[&str]) {
    let etcd = format!("etcd={etcd}");
    let mut args = vec![
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet=10.103.19.0/24",
        "--gateway=10.103.19.1",
        "--ip-range=10.103.19.128/25",
        "-o",
        "parent=eth0",
        "--ipam-opt",
        "pool=office",
        "--ipam-opt",
        &etcd,
    ];
    args.extend_from_slice(extra);
    args.push("lan");
    lab.ok_on(host, &args);
}

fn run_on(lab: &TestLab, host: usize, name: &str) -> String {
    lab.ok_on(
        host,
        &["run", "-d", "--network", "lan", "--name", name, "--", "sleep", "infinity"],
    );
    ip_on(lab, host, name)
}

fn ip_on(lab: &TestLab, host: usize, name: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&lab.ok_on(host, &["inspect", name])).unwrap();
    v[0]["NetworkSettings"]["Networks"]["lan"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The scenario: the same `network create` on three hosts, containers on each get
/// distinct addresses from the one pool, `pool ls`/`pool inspect` show who holds what per
/// host, a host with another subnet is refused, an address another host holds is refused
/// as `--ip`, `rm` releases, and the containers reach each other across hosts.
#[test]
fn three_hosts_share_one_pool() {
    let lab = TestLab::with_hosts(3);
    let etcd = EtcdCluster::start(&lab.guard.lab, 3);
    for h in 1..=3 {
        pool_network(&lab, h, &etcd.endpoints(), &[]);
    }
    let mut ips = Vec::new();
    for round in 0..2 {
        for h in 1..=3 {
            ips.push(run_on(&lab, h, &format!("c{h}{round}")));
        }
    }
    let mut unique = ips.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 6, "{ips:?}");
    // Across hosts, on one LAN.
    let o = lab.mvnet_on(1, &["exec", "c10", "--", "ping", "-c", "1", "-W", "2", &ips[1]]);
    assert_eq!(o.code, 0, "c10 -> c20 ({}): {}", ips[1], o.stdout);
    // Who holds what, per host, from etcd.
    let v: serde_json::Value =
        serde_json::from_str(&lab.ok_on(2, &["pool", "inspect", "office"])).unwrap();
    let addrs = v[0]["Addresses"].as_array().unwrap();
    assert_eq!(addrs.len(), 6, "{v}");
    for (i, ip) in ips.iter().enumerate() {
        let host = format!("{}", mvnet_lab::Lab::host_part(i % 3 + 1));
        assert!(
            addrs.iter().any(|a| a["Address"] == ip.as_str() && a["Host"] == host.as_str()),
            "{ip} on {host}: {v}"
        );
    }
    let hosts = v[0]["Hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 3, "{v}");
    assert!(hosts.iter().all(|h| h["Addresses"] == 2), "{v}");
    let ls = lab.ok_on(3, &["pool", "ls"]);
    assert!(ls.contains("office") && ls.contains("10.103.19.0/24") && ls.contains(" 6 "), "{ls}");
    // Another subnet under the same pool name: refused, nothing made.
    let o = lab.mvnet_on(
        3,
        &[
            "network", "create", "--subnet=10.103.19.0/24", "--gateway=10.103.19.1",
            "--ip-range=10.103.19.64/26", "-o", "parent=eth0", "--ipam-opt", "pool=office",
            "--ipam-opt", &format!("etcd={}", etcd.endpoints()), "other",
        ],
    );
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains(
            "pool office is --subnet=10.103.19.0/24 --gateway=10.103.19.1 --ip-range=10.103.19.128/25 on the other hosts"
        ),
        "{}",
        o.stderr
    );
    // An address host 1 holds, asked for by name on host 2.
    let o = lab.mvnet_on(
        2,
        &["run", "-d", "--network", "lan", "--ip", &ips[0], "--name", "copy", "--", "sleep", "1"],
    );
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("held by another host of pool office"), "{}", o.stderr);
    // rm releases: host 3 can then have it by name.
    lab.ok_on(1, &["rm", "-f", "c10"]);
    lab.ok_on(
        3,
        &["run", "-d", "--network", "lan", "--ip", &ips[0], "--name", "moved", "--", "sleep", "infinity"],
    );
    assert_eq!(ip_on(&lab, 3, "moved"), ips[0]);
}
