//! What Docker's own macvlan tests and `docker network create` reference expect, replayed
//! against mvnet in the lab (issue 18). The case each test ports is named in its comment
//! (moby `integration/network/macvlan/macvlan_test.go`).

mod common;
use common::TestLab;

use std::time::{Duration, Instant};

fn exec(lab: &TestLab, c: &str, argv: &[&str]) -> String {
    let mut args = vec!["exec", c, "--"];
    args.extend_from_slice(argv);
    lab.ok(&args)
}

fn network_of<'a>(v: &'a serde_json::Value, net: &str) -> &'a serde_json::Value {
    &v["NetworkSettings"]["Networks"][net]
}

/// Item 1 (testMacvlanMultiSubnet, and the reference's two-subnet example): a static
/// address may be in any subnet, its gateway is that subnet's, and dynamic allocation
/// moves on to the next subnet when one is full.
#[test]
fn item1_multi_subnet_networks_use_every_subnet() {
    let lab = TestLab::new();
    lab.ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "-o",
        "parent=eth0",
        "-o",
        "probe_ms=0",
        "--subnet=10.103.19.0/24",
        "--gateway=10.103.19.1",
        "--ip-range=10.103.19.8/30",
        "--subnet=10.103.21.0/24",
        "--gateway=10.103.21.254",
        "multi",
    ]);
    lab.container("s", "multi", &["--ip", "10.103.21.20"]);
    let v = lab.inspect("s");
    assert_eq!(network_of(&v, "multi")["IPAddress"], "10.103.21.20");
    assert_eq!(network_of(&v, "multi")["Gateway"], "10.103.21.254");
    let routes = exec(&lab, "s", &["ip", "route"]);
    assert!(
        routes.contains("default via 10.103.21.254 dev eth0"),
        "{routes}"
    );
    // The /30 range holds .8, .9 and .11 (.10 is the lab host's own address); the fourth
    // container comes from the second subnet.
    let mut got = Vec::new();
    for n in ["a", "b", "c", "d"] {
        lab.container(n, "multi", &[]);
        got.push(lab.ip_of(n, "multi"));
    }
    assert_eq!(
        got,
        ["10.103.19.8", "10.103.19.9", "10.103.19.11", "10.103.21.1"]
    );
    assert_eq!(
        network_of(&lab.inspect("d"), "multi")["Gateway"],
        "10.103.21.254"
    );
    let e = lab.fails(&[
        "run",
        "-d",
        "--network",
        "multi",
        "--ip",
        "10.103.30.5",
        "--",
        "sleep",
        "1",
    ]);
    assert!(e.contains("outside the subnets of network multi"), "{e}");
    // Traffic works from the first subnet's containers as before.
    assert!(lab.container_reaches("a", "10.103.19.1"));
}

/// Item 2 (TestMacvlanIPAM "v4 only"): an endpoint without IPv6 has IPv6 turned off on its
/// interface (no link-local address); a dual-stack one keeps it on.
#[test]
fn item2_ipv4_only_endpoints_have_ipv6_disabled() {
    let lab = TestLab::new();
    lab.seed_network("v4", &["--ip-range=10.103.19.0/26"]);
    lab.container("c4", "v4", &[]);
    let sysctl = |c: &str| {
        exec(
            &lab,
            c,
            &["cat", "/proc/sys/net/ipv6/conf/eth0/disable_ipv6"],
        )
    };
    assert_eq!(sysctl("c4").trim(), "1");
    let v6 = exec(&lab, "c4", &["ip", "-6", "addr", "show", "dev", "eth0"]);
    assert!(!v6.contains("inet6"), "{v6}");
    assert!(lab.container_reaches("c4", "10.103.19.1"));
    lab.ok(&[
        "network",
        "create",
        "-o",
        "parent=eth0",
        "--subnet=10.103.19.0/24",
        "--ip-range=10.103.19.64/26",
        "--subnet=fd00:19::/64",
        "--ipv6",
        "dual",
    ]);
    lab.container("c6", "dual", &[]);
    assert_eq!(sysctl("c6").trim(), "0");
}

/// Item 3: an IPv6 subnet turns IPv6 on by itself (current Docker), and `--ipv4=false`
/// makes an IPv6-only network (TestMacvlanIPAM "v6 only").
#[test]
fn item3_ipv6_subnet_enables_ipv6_and_ipv4_can_be_off() {
    let lab = TestLab::new();
    lab.ok(&[
        "network",
        "create",
        "-o",
        "parent=eth0",
        "-o",
        "probe_ms=0",
        "--subnet=10.103.19.0/24",
        "--subnet=fd00:19::/64",
        "auto6",
    ]);
    let v: serde_json::Value =
        serde_json::from_str(&lab.ok(&["network", "inspect", "auto6"])).unwrap();
    assert_eq!(v[0]["EnableIPv6"], true, "{v}");
    lab.ok(&["network", "rm", "auto6"]);

    lab.ok(&[
        "network",
        "create",
        "-o",
        "parent=eth0",
        "--ipv4=false",
        "--ipv6",
        "--subnet=fd00:19::/64",
        "only6",
    ]);
    let v: serde_json::Value =
        serde_json::from_str(&lab.ok(&["network", "inspect", "only6"])).unwrap();
    assert_eq!(v[0]["EnableIPv4"], false, "{v}");
    lab.container("c", "only6", &[]);
    let addrs = exec(&lab, "c", &["ip", "addr", "show", "dev", "eth0"]);
    assert!(!addrs.contains(" inet "), "{addrs}");
    assert!(addrs.contains("inet6 fd00:19::"), "{addrs}");
    let e = lab.fails(&[
        "network",
        "create",
        "-o",
        "parent=eth0",
        "--ipv4=false",
        "--subnet=10.9.0.0/24",
        "--subnet=fd00:9::/64",
        "bad",
    ]);
    assert!(e.contains("IPv6-only"), "{e}");
}

/// Item 4 (TestEndpointWithCustomIfname): the container's interface can be named, with
/// `--ifname` or Docker's `--driver-opt com.docker.network.endpoint.ifname=`.
#[test]
fn item4_interface_names() {
    let lab = TestLab::new();
    lab.seed_network("base", &["-o", "probe_ms=0", "--ip-range=10.103.19.0/26"]);
    lab.ok(&[
        "network",
        "create",
        "-o",
        "parent=eth0",
        "-o",
        "probe_ms=0",
        "--subnet=10.103.19.0/24",
        "--ip-range=10.103.19.128/26",
        "second",
    ]);
    lab.container("c", "base", &["--ifname", "foobar"]);
    lab.ok(&[
        "network",
        "connect",
        "--driver-opt",
        "com.docker.network.endpoint.ifname=lan2",
        "second",
        "c",
    ]);
    let links = exec(&lab, "c", &["ip", "-o", "link", "show"]);
    assert!(links.contains(": foobar@if"), "{links}");
    assert!(links.contains(": lan2@if"), "{links}");
    let routes = exec(&lab, "c", &["ip", "route"]);
    assert!(
        routes.contains("default via 10.103.19.1 dev foobar"),
        "{routes}"
    );
    let e = lab.fails(&[
        "run",
        "-d",
        "--network",
        "base",
        "--ifname",
        "a/b",
        "--",
        "sleep",
        "1",
    ]);
    assert!(e.contains("--ifname"), "{e}");
}

/// Item 5 (TestParentDown, moby#49593): a parent without carrier still lets a container
/// start, at once, with a notice instead of a 10 s DAD timeout.
#[test]
fn item5_a_parent_that_is_down_does_not_stall_the_start() {
    let lab = TestLab::new();
    let ok = lab.on(
        "host",
        &[
            "ip", "link", "add", "dn0", "type", "veth", "peer", "name", "dn1",
        ],
    );
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    lab.on("host", &["ip", "link", "set", "dn0", "up"]); // dn1 stays down: no carrier
    lab.ok(&[
        "network",
        "create",
        "-o",
        "parent=dn0",
        "--ipv6",
        "--subnet=10.77.0.0/24",
        "--subnet=fd00:77::/64",
        "down",
    ]);
    let started = Instant::now();
    let o = lab.try_container("c", "down", &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(o.stderr.contains("parent dn0 is down"), "{}", o.stderr);
    let v = lab.inspect("c");
    assert_eq!(v["State"]["Running"], true);
}

/// Item 6: Docker's error texts for 802.1Q and ipvlan parents.
#[test]
fn item6_docker_error_texts() {
    let lab = TestLab::new();
    let create = |driver: &str, parent: &str| {
        lab.fails(&[
            "network",
            "create",
            "-d",
            driver,
            "--subnet=10.5.0.0/24",
            "-o",
            &format!("parent={parent}"),
            "n",
        ])
    };
    let e = create("macvlan", "eth0.x");
    assert!(
        e.contains("unable to parse a valid vlan id from: x (ex. eth0.10 for vlan 10)"),
        "{e}"
    );
    let e = create("macvlan", "eth0.10.20");
    assert!(
        e.contains("required interface name format is: name.vlan_id, ex. eth0.10 for vlan 10, instead received eth0.10.20"),
        "{e}"
    );
    let e = create("macvlan", "lo");
    assert!(
        e.contains("loopback interface is not a valid macvlan parent link"),
        "{e}"
    );
    let e = create("ipvlan", "lo");
    assert!(
        e.contains("loopback interface is not a valid ipvlan parent link"),
        "{e}"
    );
}

/// Item 7: a MAC change after a LAN conflict waits out the teardown of a container
/// removed a moment ago (by another state root) that still held the MAC.
#[test]
fn item7_mac_change_after_a_conflict_waits_out_a_teardown() {
    let lab = TestLab::new();
    lab.seed_network("a", &[]);
    let root_b = std::path::PathBuf::from(format!("/run/mvnet/lab/{}-b", lab.name()));
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Remove(root_b.clone());
    let in_b = |args: &[&str]| -> common::Out {
        let mut cmd =
            mvnet_core::netns::command_in(&lab.guard.lab.host_netns(), env!("CARGO_BIN_EXE_mvnet"))
                .unwrap();
        cmd.args(args).env("MVNET_ROOT", &root_b);
        cmd.output().unwrap().into()
    };
    let o = in_b(&[
        "network",
        "create",
        "--subnet=10.103.19.0/24",
        "-o",
        "parent=eth0",
        "b",
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    for round in 0..3 {
        let x1 = format!("x1-{round}");
        let x2 = format!("x2-{round}");
        lab.container(&x1, "a", &["--ip", "10.103.19.2"]);
        lab.ok(&["rm", "-f", &x1]);
        // B has no gateway reserved: its first address .1 is the lab gateway's, so it
        // moves to .2 and changes the MAC to 02:42:0a:67:13:02, which x1 just had.
        let o = in_b(&[
            "run",
            "-d",
            "--network",
            "b",
            "--name",
            &x2,
            "--",
            "sleep",
            "1000",
        ]);
        assert_eq!(o.code, 0, "round {round}: {}", o.stderr);
        let o = in_b(&["rm", "-f", &x2]);
        assert_eq!(o.code, 0, "{}", o.stderr);
    }
    let o = in_b(&["network", "rm", "b"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
}

/// testMacvlanAddressing: no IPv4 gateway means no IPv4 default route; the IPv6 default
/// route goes through the gateway given for the IPv6 subnet.
#[test]
fn addressing_default_routes_follow_the_given_gateways() {
    let lab = TestLab::new();
    lab.ok(&[
        "network",
        "create",
        "-o",
        "parent=eth0",
        "-o",
        "macvlan_mode=bridge",
        "--ipv6",
        "--subnet=172.28.130.0/24",
        "--subnet=2001:db8:abca::/64",
        "--gateway=2001:db8:abca::254",
        "dualstackbridge",
    ]);
    lab.container("c", "dualstackbridge", &[]);
    let v4 = exec(&lab, "c", &["ip", "route"]);
    assert!(!v4.contains("default via"), "{v4}");
    let v6 = exec(&lab, "c", &["ip", "-6", "route"]);
    assert!(
        v6.contains("default via 2001:db8:abca::254 dev eth0"),
        "{v6}"
    );
}
