//! The Docker plugin's cases that need kernel features this machine may lack (ipvlan,
//! 802.1Q): ports of moby's `integration/network/ipvlan` and macvlan sub-interface cases.
//! `scripts/vm-tests.sh` runs them under Debian's full kernel; elsewhere they skip (or fail
//! with MVNET_REQUIRE_FULL_KERNEL=1, so CI cannot skip them silently).

mod common;

use common::{DockerLab, IMAGE};

fn full_kernel_or_skip(kind: &str, test: &str) -> bool {
    common::require_root();
    mvnet_lab::testkit::full_kernel_or_skip(kind, test)
}

fn ip_of(lab: &DockerLab, name: &str, net: &str) -> String {
    lab.inspect(
        name,
        &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"),
    )
}

/// moby `testIpvlanL2*`: `-o ipvlan_mode=l2` selects mvnet's ipvlan driver; containers share
/// the parent's MAC, reach each other, the gateway and the outside; `--internal` has no
/// gateway.
#[test]
fn ipvlan_l2_through_docker() {
    if !full_kernel_or_skip("ipvlan", "ipvlan_l2_through_docker") {
        return;
    }
    let lab = DockerLab::up("ipl2");
    lab.seed_network("di-l2", &["-o", "ipvlan_mode=l2"]);
    lab.docker_ok(&[
        "run",
        "-d",
        "--network",
        "di-l2",
        "--name",
        "v1",
        IMAGE,
        "sleep",
        "1000",
    ]);
    lab.docker_ok(&[
        "run",
        "-d",
        "--network",
        "di-l2",
        "--name",
        "v2",
        IMAGE,
        "sleep",
        "1000",
    ]);
    let ip1 = ip_of(&lab, "v1", "di-l2");
    assert_eq!(ip1, "10.103.19.2");
    lab.docker_ok(&["exec", "v2", "ping", "-c", "1", "-W", "2", &ip1]);
    lab.docker_ok(&["exec", "v1", "ping", "-c", "1", "-W", "2", "198.51.100.10"]);
    let host = lab
        .in_ns("host", &["ip", "-o", "link", "show", "eth0"])
        .stdout;
    let host_mac = host
        .split("link/ether ")
        .nth(1)
        .unwrap_or("")
        .split(' ')
        .next()
        .unwrap_or("");
    let link = lab.docker_ok(&["exec", "v1", "ip", "-o", "link", "show", "eth0"]);
    assert!(
        !host_mac.is_empty() && link.contains(host_mac),
        "ipvlan shares the parent's MAC: {link} / {host}"
    );
    let o = lab.mvnet(&["network", "ls"]);
    assert!(o.stdout.contains("ipvlan"), "{}", o.stdout);
    lab.docker_ok(&["rm", "-f", "v1", "v2"]);
    lab.docker_ok(&["network", "rm", "di-l2"]);
    // Internal: no gateway.
    lab.docker_ok(&[
        "network",
        "create",
        "-d",
        "mvnet",
        "--ipam-driver",
        "mvnet",
        "--internal",
        "--subnet=10.103.19.0/24",
        "-o",
        "parent=eth0",
        "-o",
        "ipvlan_mode=l2",
        "di-internal",
    ]);
    lab.docker_ok(&[
        "run",
        "-d",
        "--network",
        "di-internal",
        "--name",
        "v3",
        IMAGE,
        "sleep",
        "1000",
    ]);
    let route = lab.docker_ok(&["exec", "v3", "ip", "route"]);
    assert!(!route.contains("default"), "{route}");
}

/// moby `testIpvlanL3MultiSubnet` / `testIpvlanAddressing` (l3): routes go through the
/// device (`default dev eth0`), no gateway, and containers on two subnets of one network
/// reach each other through the parent.
#[test]
fn ipvlan_l3_through_docker() {
    if !full_kernel_or_skip("ipvlan", "ipvlan_l3_through_docker") {
        return;
    }
    let lab = DockerLab::up("ipl3");
    lab.docker_ok(&[
        "network",
        "create",
        "-d",
        "mvnet",
        "--ipam-driver",
        "mvnet",
        "-o",
        "parent=eth0",
        "-o",
        "ipvlan_mode=l3",
        "--subnet=172.28.230.0/24",
        "--subnet=172.28.220.0/24",
        "di-l3",
    ]);
    lab.docker_ok(&[
        "run",
        "-d",
        "--network",
        "di-l3",
        "--ip",
        "172.28.230.20",
        "--name",
        "l1",
        IMAGE,
        "sleep",
        "1000",
    ]);
    lab.docker_ok(&[
        "run",
        "-d",
        "--network",
        "di-l3",
        "--ip",
        "172.28.220.20",
        "--name",
        "l2",
        IMAGE,
        "sleep",
        "1000",
    ]);
    let route = lab.docker_ok(&["exec", "l1", "ip", "route"]);
    assert!(route.contains("default dev eth0"), "{route}");
    let gw = lab.inspect(
        "l1",
        "{{(index .NetworkSettings.Networks \"di-l3\").Gateway}}",
    );
    assert_eq!(gw, "");
    lab.docker_ok(&["exec", "l1", "ping", "-c", "1", "-W", "2", "172.28.220.20"]);
}

/// The seed's trunk through Docker, and moby's macvlan `Subinterface`/`Persistance` cases:
/// `-o parent=ens19.1318` creates the 802.1Q link, the container reaches VLAN 1318's
/// gateway, the network survives a dockerd restart, and `docker network rm` deletes the
/// link mvnet made but keeps one the user made.
#[test]
fn vlan_parent_through_docker() {
    if !full_kernel_or_skip("vlan", "vlan_parent_through_docker") {
        return;
    }
    let mut lab = DockerLab::up("vlan");
    assert!(
        lab.guard.lab.has_trunk(),
        "the lab needs its trunk (802.1Q)"
    );
    lab.docker_ok(&[
        "network",
        "create",
        "-d",
        "mvnet",
        "--ipam-driver",
        "mvnet",
        "--subnet=10.103.18.0/24",
        "--gateway=10.103.18.1",
        "-o",
        "parent=ens19.1318",
        "vlan1318",
    ]);
    assert!(lab
        .links_in("host", "ens19.1318")
        .contains(&"ens19.1318".to_string()));
    lab.docker_ok(&[
        "run",
        "-d",
        "--network",
        "vlan1318",
        "--name",
        "t1",
        IMAGE,
        "sleep",
        "1000",
    ]);
    assert_eq!(ip_of(&lab, "t1", "vlan1318"), "10.103.18.2");
    lab.docker_ok(&["exec", "t1", "ping", "-c", "1", "-W", "2", "10.103.18.1"]);
    // Persistence across a dockerd restart.
    lab.docker_ok(&["rm", "-f", "t1"]);
    lab.stop_dockerd();
    lab.start_dockerd();
    let nets = lab.docker_ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(nets.lines().any(|l| l == "vlan1318"), "{nets}");
    lab.docker_ok(&["network", "rm", "vlan1318"]);
    assert!(
        !lab.links_in("host", "ens19.1318")
            .contains(&"ens19.1318".to_string()),
        "the 802.1Q link mvnet made goes with the network"
    );
    // A link the user made stays.
    let o = lab.in_ns(
        "host",
        &[
            "ip",
            "link",
            "add",
            "link",
            "ens19",
            "name",
            "ens19.1317",
            "type",
            "vlan",
            "id",
            "1317",
        ],
    );
    assert!(o.ok(), "{}", o.stderr);
    lab.in_ns("host", &["ip", "link", "set", "ens19.1317", "up"]);
    lab.docker_ok(&[
        "network",
        "create",
        "-d",
        "mvnet",
        "--ipam-driver",
        "mvnet",
        "--subnet=10.103.17.0/24",
        "--gateway=10.103.17.1",
        "-o",
        "parent=ens19.1317",
        "vlan1317",
    ]);
    lab.docker_ok(&["network", "rm", "vlan1317"]);
    assert!(lab
        .links_in("host", "ens19.1317")
        .contains(&"ens19.1317".to_string()));
}
