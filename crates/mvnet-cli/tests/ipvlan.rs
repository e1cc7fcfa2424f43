//! The ipvlan driver (root). Traffic tests need a kernel with ipvlan: scripts/vm-tests.sh runs
//! them under Debian's kernel. The up-front conflict rules need no kernel support and run
//! everywhere.

mod common;
use common::{full_kernel_or_skip, kernel_has, TestLab};

fn host_mac(lab: &TestLab) -> String {
    let l = lab.ip_json(
        lab.guard.lab.host_netns().to_str().unwrap(),
        &["link", "show", "eth0"],
    );
    l[0]["address"].as_str().unwrap().to_string()
}

#[test]
fn l2_containers_reach_each_other_and_the_gateway() {
    if !full_kernel_or_skip("ipvlan", "ipvlan_l2") {
        return;
    }
    let lab = TestLab::new();
    lab.ok(&[
        "network",
        "create",
        "-d",
        "ipvlan",
        "--subnet=10.103.19.0/24",
        "--gateway=10.103.19.1",
        "-o",
        "parent=eth0",
        "ipv",
    ]);
    lab.container("a", "ipv", &[]);
    lab.container("b", "ipv", &[]);
    let c = lab.inspect("a");
    let n = &c["NetworkSettings"]["Networks"]["ipv"];
    assert_eq!(n["IPAddress"], "10.103.19.2");
    assert_eq!(
        n["MacAddress"],
        host_mac(&lab),
        "ipvlan shares the parent's MAC"
    );
    let sandbox = c["NetworkSettings"]["SandboxKey"]
        .as_str()
        .unwrap()
        .to_string();
    let link = lab.ip_json(&sandbox, &["-d", "link", "show", "eth0"]);
    assert_eq!(link[0]["linkinfo"]["info_kind"], "ipvlan");
    assert_eq!(link[0]["linkinfo"]["info_data"]["mode"], "l2");
    assert!(lab.container_reaches("a", &lab.ip_of("b", "ipv")));
    assert!(lab.container_reaches("a", "10.103.19.1"), "gateway");
    assert!(
        lab.container_reaches("a", "198.51.100.10"),
        "routed beyond the gateway"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&lab.ok(&["network", "inspect", "ipv"])).unwrap();
    assert_eq!(inspect[0]["Driver"], "ipvlan");
    assert_eq!(inspect[0]["Options"]["ipvlan_mode"], "l2");
    assert_eq!(inspect[0]["Options"]["ipvlan_flag"], "bridge");
}

#[test]
fn l3_containers_reach_each_other_and_routed_peers() {
    if !full_kernel_or_skip("ipvlan", "ipvlan_l3") {
        return;
    }
    let lab = TestLab::new();
    lab.ok(&[
        "network",
        "create",
        "-d",
        "ipvlan",
        "--subnet=10.50.0.0/24",
        "--gateway=10.50.0.1",
        "-o",
        "parent=eth0",
        "-o",
        "ipvlan_mode=l3",
        "l3net",
    ]);
    lab.container("a", "l3net", &[]);
    lab.container("b", "l3net", &[]);
    let route = lab.ok(&["exec", "a", "--", "ip", "route"]);
    assert!(
        route.contains("default dev eth0"),
        "Docker's l3 route: {route}"
    );
    assert_eq!(
        lab.inspect("a")["NetworkSettings"]["Networks"]["l3net"]["Gateway"],
        "10.50.0.1",
        "reported"
    );
    assert!(lab.container_reaches("a", &lab.ip_of("b", "l3net")));
    // The LAN reaches the l3 subnet through the docker host.
    assert_eq!(
        lab.on(
            "peer",
            &["ip", "route", "add", "10.50.0.0/24", "via", "10.103.19.10"]
        )
        .code,
        0
    );
    assert!(lab.container_reaches("a", "10.103.19.20"), "LAN peer");
    assert!(
        lab.machine_reaches("peer", &lab.ip_of("a", "l3net")),
        "peer to container"
    );
}

#[test]
fn conflicts_are_refused_up_front_with_the_other_network_named() {
    let lab = TestLab::new();
    lab.ok(&[
        "network",
        "create",
        "-d",
        "ipvlan",
        "--subnet=10.60.0.0/24",
        "-o",
        "parent=eth0",
        "ip-a",
    ]);
    // Same mode: shared parent is fine (Docker allows only one ipvlan network per parent).
    lab.ok(&[
        "network",
        "create",
        "-d",
        "ipvlan",
        "--subnet=10.61.0.0/24",
        "-o",
        "parent=eth0",
        "ip-b",
    ]);
    let e = lab.fails(&[
        "network",
        "create",
        "-d",
        "ipvlan",
        "--subnet=10.62.0.0/24",
        "-o",
        "parent=eth0",
        "-o",
        "ipvlan_mode=l3",
        "ip-c",
    ]);
    assert!(
        e.contains("ipvlan network ip-a already uses parent eth0 with ipvlan_mode=l2"),
        "{e}"
    );
    let e = lab.fails(&[
        "network",
        "create",
        "--subnet=10.63.0.0/24",
        "-o",
        "parent=eth0",
        "mv",
    ]);
    assert!(
        e.contains("macvlan network on parent eth0: ipvlan network ip-a already uses it"),
        "{e}"
    );
    lab.ok(&["network", "rm", "ip-a", "ip-b"]);
    lab.ok(&[
        "network",
        "create",
        "--subnet=10.63.0.0/24",
        "-o",
        "parent=eth0",
        "mv",
    ]);
    let e = lab.fails(&[
        "network",
        "create",
        "-d",
        "ipvlan",
        "--subnet=10.64.0.0/24",
        "-o",
        "parent=eth0",
        "ip-d",
    ]);
    assert!(
        e.contains("ipvlan network on parent eth0: macvlan network mv already uses it"),
        "{e}"
    );
    // Options of the other driver are refused by name.
    let e = lab.fails(&[
        "network",
        "create",
        "-d",
        "ipvlan",
        "--subnet=10.65.0.0/24",
        "-o",
        "parent=eth1",
        "-o",
        "macvlan_mode=vepa",
        "x",
    ]);
    assert!(
        e.contains("ipvlan accepts: parent, ipvlan_mode, ipvlan_flag"),
        "{e}"
    );
    let e = lab.fails(&[
        "network",
        "create",
        "-d",
        "ipvlan",
        "--subnet=10.65.0.0/24",
        "-o",
        "parent=eth0",
        "-o",
        "ipvlan_mode=l4",
        "x",
    ]);
    assert!(e.contains("valid modes: l2, l3, l3s"), "{e}");
}

#[test]
fn mac_address_is_refused_and_a_kernel_without_ipvlan_is_named() {
    let lab = TestLab::new();
    lab.ok(&[
        "network",
        "create",
        "-d",
        "ipvlan",
        "--subnet=10.103.19.0/24",
        "-o",
        "parent=eth0",
        "ipv",
    ]);
    let before = lab.lab_snapshot();
    let e = lab.fails(&[
        "run",
        "-d",
        "--network",
        "ipv",
        "--mac-address",
        "c2:11:22:33:44:55",
        "--",
        "sleep",
        "1",
    ]);
    assert!(e.contains("share the parent's MAC"), "{e}");
    assert_eq!(lab.lab_snapshot(), before);
    if !kernel_has("ipvlan") {
        let e = lab.fails(&["run", "-d", "--network", "ipv", "--", "sleep", "1"]);
        assert!(
            e.contains("CONFIG_IPVLAN") && e.contains("modprobe ipvlan"),
            "{e}"
        );
        assert_eq!(lab.lab_snapshot(), before, "nothing left behind");
    }
}

/// Issue 18, item 1, for ipvlan l3 (moby ipvlan_test.go's multi-subnet l3 case): a static
/// address in the second subnet works, with the l3 device route, and dynamic allocation
/// moves on to the second subnet when the first is full. IPv4-only ipvlan endpoints have
/// IPv6 turned off (item 2).
#[test]
fn l3_multi_subnet_networks_use_every_subnet() {
    if !full_kernel_or_skip("ipvlan", "ipvlan_l3_multi_subnet") {
        return;
    }
    let lab = TestLab::new();
    lab.ok(&[
        "network",
        "create",
        "-d",
        "ipvlan",
        "-o",
        "parent=eth0",
        "-o",
        "ipvlan_mode=l3",
        "--subnet=172.28.100.0/30",
        "--subnet=172.28.102.0/24",
        "l3multi",
    ]);
    lab.container("s", "l3multi", &["--ip", "172.28.102.20"]);
    assert_eq!(lab.ip_of("s", "l3multi"), "172.28.102.20");
    lab.container("a", "l3multi", &[]);
    lab.container("b", "l3multi", &[]);
    lab.container("c", "l3multi", &[]);
    let got: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|n| lab.ip_of(n, "l3multi"))
        .collect();
    assert_eq!(got, ["172.28.100.1", "172.28.100.2", "172.28.102.1"]);
    assert!(
        lab.container_reaches("a", "172.28.102.20"),
        "l3 between subnets"
    );
    let o = lab.mvnet(&[
        "exec",
        "a",
        "--",
        "cat",
        "/proc/sys/net/ipv6/conf/eth0/disable_ipv6",
    ]);
    assert_eq!(o.stdout.trim(), "1");
}

/// `--ipam-driver dhcp` on ipvlan (l2): the ports share the parent's MAC, so each one is
/// known to the server by its own client identifier; the first exchange runs on the
/// parent (the OFFER, sent to the shared MAC for an address no port has yet, reaches
/// the parent only), then the lease moves into the container, where the server's unicast
/// answers to the leased address reach the port (the INIT-REBOOT after the move shows it).
/// `rm` releases each lease.
#[test]
fn dhcp_leases_one_address_per_ipvlan_port() {
    if !full_kernel_or_skip("ipvlan", "ipvlan_dhcp") {
        return;
    }
    let lab = TestLab::new();
    let dhcpd = common::dhcpd::Dhcpd::start(&lab, "2m");
    lab.ok(&[
        "network",
        "create",
        "-d",
        "ipvlan",
        "--ipam-driver",
        "dhcp",
        "-o",
        "parent=eth0",
        "ipd",
    ]);
    lab.container("a", "ipd", &[]);
    lab.container("b", "ipd", &[]);
    let (a, b) = (lab.ip_of("a", "ipd"), lab.ip_of("b", "ipd"));
    assert_ne!(a, b);
    for ip in [&a, &b] {
        let octet: u8 = ip.rsplit('.').next().unwrap().parse().unwrap();
        assert!(
            ip.starts_with("10.103.19.") && (100..=150).contains(&octet),
            "{ip}"
        );
    }
    let mac = host_mac(&lab);
    let c = lab.inspect("a");
    assert_eq!(c["NetworkSettings"]["Networks"]["ipd"]["MacAddress"], mac);
    assert_eq!(
        c["NetworkSettings"]["Networks"]["ipd"]["Gateway"],
        "10.103.19.1"
    );
    // The server holds two leases for the one MAC, told apart by client id and name.
    let leases = dhcpd.leases();
    let ours: Vec<&str> = leases.lines().filter(|l| l.contains(&mac)).collect();
    assert_eq!(ours.len(), 2, "{leases}");
    assert!(
        ours.iter().any(|l| l.contains(&a) && l.contains(" a ")),
        "{leases}"
    );
    assert!(
        ours.iter().any(|l| l.contains(&b) && l.contains(" b ")),
        "{leases}"
    );
    assert!(lab.container_reaches("a", "10.103.19.1"));
    assert!(lab.container_reaches("b", "198.51.100.10"));
    // Renewed from inside the container after the move.
    let agent = std::fs::read_to_string(lab.root().join("dhcp/agent.log")).unwrap_or_default();
    assert_eq!(
        agent.matches("moved with its interface").count(),
        2,
        "{agent}"
    );
    let renewed = || {
        std::fs::read_to_string(lab.root().join("dhcp/agent.log"))
            .unwrap_or_default()
            .matches(&format!("renewed {a} "))
            .count()
    };
    let started = std::time::Instant::now();
    while renewed() == 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{agent}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    lab.ok(&["rm", "-f", "a"]);
    assert!(!dhcpd.leases().contains(&a), "{}", dhcpd.leases());
    assert!(dhcpd.leases().contains(&b), "{}", dhcpd.leases());
}
