//! Containers on the lab LAN: the seed's scenario, run/exec/ps/inspect/stop/rm/logs,
//! connect/disconnect, static addresses, stale cleanup, and 20 containers (root).

mod common;
use common::TestLab;

use std::collections::HashSet;

#[test]
fn seed_scenario_end_to_end() {
    let lab = TestLab::new();
    let net_id = lab.seed_network("my-macvlan-net", &[]);
    let id = lab.container("my-macvlan-alpine", "my-macvlan-net", &["--rm"]);
    assert_eq!(id.len(), 64);

    let c = lab.inspect("my-macvlan-alpine");
    let n = &c["NetworkSettings"]["Networks"]["my-macvlan-net"];
    assert_eq!(n["IPAddress"], "10.103.19.2");
    assert_eq!(n["IPPrefixLen"], 24);
    assert_eq!(n["Gateway"], "10.103.19.1");
    assert_eq!(n["MacAddress"], "02:42:0a:67:13:02");
    assert_eq!(n["NetworkID"], net_id);
    assert_eq!(n["EndpointID"].as_str().unwrap().len(), 64);
    assert_eq!(c["State"]["Running"], true);
    assert!(c["State"]["Pid"].as_u64().unwrap() > 0);
    assert_eq!(c["Name"], "/my-macvlan-alpine");
    assert_eq!(c["Id"], id);
    let sandbox = c["NetworkSettings"]["SandboxKey"]
        .as_str()
        .unwrap()
        .to_string();

    // Independent check with `ip -j` inside the sandbox: the link, its MAC, address, routes.
    let links = lab.ip_json(&sandbox, &["-d", "link", "show", "eth0"]);
    assert_eq!(links[0]["address"], "02:42:0a:67:13:02");
    assert_eq!(links[0]["linkinfo"]["info_kind"], "macvlan");
    assert_eq!(links[0]["linkinfo"]["info_data"]["mode"], "bridge");
    let addrs = lab.ip_json(&sandbox, &["-4", "addr", "show", "eth0"]);
    assert_eq!(addrs[0]["addr_info"][0]["local"], "10.103.19.2");
    assert_eq!(addrs[0]["addr_info"][0]["prefixlen"], 24);
    let routes = lab.ip_json(&sandbox, &["-4", "route"]);
    assert!(routes
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["dst"] == "default" && r["gateway"] == "10.103.19.1" && r["dev"] == "eth0"));
    // The seed's transcript, as users see it through exec.
    let route = lab.ok(&["exec", "my-macvlan-alpine", "--", "ip", "route"]);
    assert!(
        route.starts_with("default via 10.103.19.1 dev eth0"),
        "{route}"
    );
    // arp_notify is on (set through netlink), so a MAC change is announced to the LAN.
    let notify = lab.ok(&[
        "exec",
        "my-macvlan-alpine",
        "--",
        "cat",
        "/proc/sys/net/ipv4/conf/eth0/arp_notify",
    ]);
    assert_eq!(notify.trim(), "1");

    assert!(
        lab.container_reaches("my-macvlan-alpine", "10.103.19.1"),
        "gateway"
    );
    assert!(
        lab.container_reaches("my-macvlan-alpine", "198.51.100.10"),
        "outside, routed by the gateway"
    );
    assert!(
        lab.container_reaches("my-macvlan-alpine", "10.103.19.20"),
        "LAN peer"
    );
    // The kernel's macvlan rule from the seed: the host cannot reach its own containers...
    assert!(
        !lab.machine_reaches("host", "10.103.19.2"),
        "host must not reach its macvlan container"
    );
    // ...while any other machine on the LAN can.
    assert!(lab.machine_reaches("peer", "10.103.19.2"));

    // --rm: stopping the command removes the container and frees its address.
    lab.ok(&["stop", "-t", "1", "my-macvlan-alpine"]);
    // Generous: under software emulation (the full-kernel VM) the monitor's clean-up can
    // take seconds; what matters is that it happens.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while lab.mvnet(&["inspect", "my-macvlan-alpine"]).code == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "--rm container still there"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!std::path::Path::new(&sandbox).exists(), "netns removed");
    lab.ok(&["network", "rm", "my-macvlan-net"]);
}

#[test]
fn foreground_run_returns_exit_code_and_rm_cleans_up() {
    let lab = TestLab::new();
    lab.seed_network("n", &[]);
    let o = lab.mvnet(&[
        "run",
        "--rm",
        "--network",
        "n",
        "--",
        "sh",
        "-c",
        "ip -4 -o addr show eth0; exit 7",
    ]);
    assert_eq!(o.code, 7, "exit code passes through: {}", o.stderr);
    assert!(o.stdout.contains("10.103.19.2/24"), "{}", o.stdout);
    assert_eq!(lab.ok(&["ps", "-a", "-q"]), "", "--rm removed it");
    // Without --rm the container stays, exited, with its code.
    let o = lab.mvnet(&[
        "run",
        "--network",
        "n",
        "--name",
        "once",
        "-h",
        "box1",
        "--",
        "hostname",
    ]);
    assert_eq!(o.code, 0);
    assert_eq!(o.stdout.trim(), "box1", "own UTS namespace with --hostname");
    let c = lab.inspect("once");
    assert_eq!(c["State"]["Status"], "exited");
    assert_eq!(c["State"]["ExitCode"], 0);
    assert!(
        lab.ok(&["ps"]).lines().count() == 1,
        "ps without -a hides exited"
    );
    assert!(lab.ok(&["ps", "-a"]).contains("Exited (0)"));
    let e = lab.fails(&["exec", "once", "--", "true"]);
    assert!(e.contains("is not running"), "{e}");
    lab.ok(&["rm", "once"]);
}

#[test]
fn detached_logs_exec_exit_code_ps_json() {
    let lab = TestLab::new();
    lab.seed_network("n", &[]);
    lab.ok(&[
        "run",
        "-d",
        "--network",
        "n",
        "--name",
        "talker",
        "--",
        "sh",
        "-c",
        "echo hello from $(hostname); sleep infinity",
    ]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let logs = lab.ok(&["logs", "talker"]);
        if logs.contains("hello from") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no log output: {logs:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        lab.mvnet(&["exec", "talker", "--", "sh", "-c", "exit 3"])
            .code,
        3
    );
    let row: serde_json::Value =
        serde_json::from_str(lab.ok(&["ps", "--format", "json"]).lines().next().unwrap()).unwrap();
    assert_eq!(row["Names"], "talker");
    assert_eq!(row["State"], "running");
    assert_eq!(row["Networks"], "n");
    lab.ok(&["stop", "-t", "1", "talker"]);
    let c = lab.inspect("talker");
    assert_eq!(c["State"]["Running"], false);
    lab.ok(&["rm", "talker"]);
}

#[test]
fn static_ip_and_mac_and_the_mac_rule() {
    let lab = TestLab::new();
    lab.seed_network("n", &[]);
    lab.container("s", "n", &["--ip", "10.103.19.50"]);
    let n = &lab.inspect("s")["NetworkSettings"]["Networks"]["n"];
    assert_eq!(n["IPAddress"], "10.103.19.50");
    assert_eq!(
        n["MacAddress"], "02:42:0a:67:13:32",
        "MAC follows the address"
    );
    lab.container("m", "n", &["--mac-address", "c2:11:22:33:44:55"]);
    let sandbox = lab.inspect("m")["NetworkSettings"]["SandboxKey"]
        .as_str()
        .unwrap()
        .to_string();
    let link = lab.ip_json(&sandbox, &["link", "show", "eth0"]);
    assert_eq!(link[0]["address"], "c2:11:22:33:44:55");
    assert!(lab.machine_reaches("peer", "10.103.19.50"));
    // The same container re-created gets the same address back only after the range wraps,
    // but a static request pins both address and MAC: stable across restarts.
    lab.ok(&["rm", "-f", "s"]);
    lab.container("s", "n", &["--ip", "10.103.19.50"]);
    assert_eq!(
        lab.inspect("s")["NetworkSettings"]["Networks"]["n"]["MacAddress"],
        "02:42:0a:67:13:32"
    );
}

#[test]
fn ipv6_dual_stack() {
    let lab = TestLab::new();
    lab.ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet=10.103.19.0/24",
        "--gateway=10.103.19.1",
        "--subnet=fd00:19::/64",
        "--gateway=fd00:19::1",
        "-o",
        "parent=eth0",
        "dual",
    ]);
    lab.container("a", "dual", &[]);
    lab.container("b", "dual", &["--ip6", "fd00:19::99"]);
    let n = &lab.inspect("a")["NetworkSettings"]["Networks"]["dual"];
    assert_eq!(n["GlobalIPv6Address"], "fd00:19::2");
    assert_eq!(n["GlobalIPv6PrefixLen"], 64);
    assert_eq!(n["IPv6Gateway"], "fd00:19::1");
    let route = lab.ok(&["exec", "a", "--", "ip", "-6", "route"]);
    assert!(route.contains("default via fd00:19::1 dev eth0"), "{route}");
    let o = lab.mvnet(&[
        "exec",
        "a",
        "--",
        "ping",
        "-6",
        "-c",
        "1",
        "-W",
        "2",
        "fd00:19::99",
    ]);
    assert_eq!(o.code, 0, "v6 between containers: {}{}", o.stdout, o.stderr);
    // IPv6-only network: random locally administered MAC.
    lab.ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet=fd00:77::/64",
        "-o",
        "parent=eth0",
        "v6only",
    ]);
    lab.container("c", "v6only", &[]);
    let mac = lab.inspect("c")["NetworkSettings"]["Networks"]["v6only"]["MacAddress"]
        .as_str()
        .unwrap()
        .to_string();
    let first = u8::from_str_radix(&mac[..2], 16).unwrap();
    assert_eq!(first & 0x03, 0x02, "locally administered unicast: {mac}");
}

#[test]
fn connect_disconnect_and_bare_namespaces() {
    let lab = TestLab::new();
    lab.seed_network("a", &["--ip-range=10.103.19.0/25"]);
    lab.ok(&[
        "network",
        "create",
        "--subnet=10.103.19.0/24",
        "--ip-range=10.103.19.128/25",
        "-o",
        "parent=eth0",
        "-o",
        "macvlan_mode=private",
        "b",
    ]);
    lab.container("c", "a", &[]);
    lab.ok(&["network", "connect", "--ip", "10.103.19.200", "b", "c"]);
    let c = lab.inspect("c");
    assert_eq!(
        c["NetworkSettings"]["Networks"]["b"]["IPAddress"],
        "10.103.19.200"
    );
    assert_eq!(
        c["NetworkSettings"]["Networks"]["b"]["InterfaceName"],
        "eth1"
    );
    let sandbox = c["NetworkSettings"]["SandboxKey"]
        .as_str()
        .unwrap()
        .to_string();
    let eth1 = lab.ip_json(&sandbox, &["-d", "link", "show", "eth1"]);
    assert_eq!(eth1[0]["linkinfo"]["info_data"]["mode"], "private");
    let inspect_b: serde_json::Value =
        serde_json::from_str(&lab.ok(&["network", "inspect", "b"])).unwrap();
    let eps = inspect_b[0]["Containers"].as_object().unwrap();
    assert_eq!(eps.len(), 1);
    assert_eq!(
        eps.values().next().unwrap()["IPv4Address"],
        "10.103.19.200/24"
    );

    lab.ok(&["network", "disconnect", "b", "c"]);
    assert!(!lab
        .ok(&["exec", "c", "--", "ip", "-o", "link"])
        .contains("eth1"));
    assert!(lab.inspect("c")["NetworkSettings"]["Networks"]
        .get("b")
        .is_none());
    // Its address is free again for a static request.
    lab.ok(&["network", "connect", "--ip", "10.103.19.200", "b", "c"]);

    // Any namespace can be attached by path, e.g. one made by another tool.
    let bare = lab.bare_netns("bare");
    let o = lab.mvnet(&["network", "connect", "a", "--netns", &bare.path]);
    assert_eq!(o.code, 0, "{}", o.stderr);
}

#[test]
fn bare_namespace_attach_and_detach() {
    let lab = TestLab::new();
    lab.seed_network("a", &[]);
    let bare = lab.bare_netns("bare");
    let path = bare.path.clone();
    lab.ok(&["network", "connect", "a", "--netns", &path]);
    let addrs = lab.ip_json(&path, &["-4", "addr", "show", "eth0"]);
    assert_eq!(addrs[0]["addr_info"][0]["local"], "10.103.19.2");
    assert!(lab.machine_reaches("peer", "10.103.19.2"));
    lab.ok(&["network", "disconnect", "a", "--netns", &path]);
    assert_eq!(
        lab.ip_json(&path, &["link", "show"])
            .as_array()
            .unwrap()
            .len(),
        1,
        "only lo is left"
    );
    lab.ok(&["network", "rm", "a"]);
}

#[test]
fn stale_container_whose_netns_vanished_is_still_removable() {
    let lab = TestLab::new();
    lab.seed_network("n", &[]);
    lab.container("ghost", "n", &["--ip", "10.103.19.9"]);
    let sandbox = lab.inspect("ghost")["NetworkSettings"]["SandboxKey"]
        .as_str()
        .unwrap()
        .to_string();
    let name = sandbox.rsplit('/').next().unwrap();
    // Someone deletes the namespace behind mvnet's back.
    assert!(std::process::Command::new("ip")
        .args(["netns", "del", name])
        .status()
        .unwrap()
        .success());
    lab.ok(&["rm", "-f", "ghost"]);
    let e = lab.fails(&["rm", "ghost"]);
    assert!(
        e.contains("no such container: ghost"),
        "a second rm names the container: {e}"
    );
    // The address went back to the pool.
    lab.container("again", "n", &["--ip", "10.103.19.9"]);
}

#[test]
fn twenty_containers_on_one_network() {
    let lab = TestLab::new();
    lab.seed_network("n", &[]);
    let names: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
    for n in &names {
        lab.container(n, "n", &[]);
    }
    let mut ips = HashSet::new();
    let mut macs = HashSet::new();
    for n in &names {
        let net = &lab.inspect(n)["NetworkSettings"]["Networks"]["n"];
        ips.insert(net["IPAddress"].as_str().unwrap().to_string());
        macs.insert(net["MacAddress"].as_str().unwrap().to_string());
    }
    assert_eq!(ips.len(), 20);
    assert_eq!(macs.len(), 20);
    assert!(ips.contains("10.103.19.2") && ips.contains("10.103.19.21"));
    // Every container is on the LAN: the peer reaches each one.
    for ip in &ips {
        assert!(lab.machine_reaches("peer", ip), "{ip}");
    }
    assert_eq!(lab.ok(&["ps", "-q"]).lines().count(), 20);
    // Remove all at once.
    let mut args = vec!["rm", "-f"];
    args.extend(names.iter().map(String::as_str));
    lab.ok(&args);
    assert_eq!(lab.ok(&["ps", "-a", "-q"]), "");
    let inspect: serde_json::Value =
        serde_json::from_str(&lab.ok(&["network", "inspect", "n"])).unwrap();
    assert!(inspect[0]["Containers"].as_object().unwrap().is_empty());
}
