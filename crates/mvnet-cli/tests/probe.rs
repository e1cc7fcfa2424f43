//! Probing before an address is used (root; real traffic in a private lab). The lab's peer
//! really holds 10.103.19.20 (and, for IPv6, an address added here); mvnet must notice it
//! on the wire, move on with a warning, record it, and refuse it when asked for by name.

mod common;
use common::{one_line_error, TestLab};

const PEER: &str = "10.103.19.20";

fn peer_mac(lab: &TestLab) -> String {
    let peer = lab.guard.lab.netns_path("peer");
    let v = lab.ip_json(peer.to_str().unwrap(), &["link", "show", "eth0"]);
    v[0]["address"].as_str().unwrap().to_string()
}

/// The addresses configured in a container, from `ip -j` (independent of mvnet's records).
fn container_addrs(lab: &TestLab, container: &str) -> (Vec<String>, String) {
    let netns = lab.inspect(container)["NetworkSettings"]["SandboxKey"]
        .as_str()
        .unwrap()
        .to_string();
    let v = lab.ip_json(&netns, &["addr", "show", "eth0"]);
    let addrs = v[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["scope"] == "global")
        .map(|a| a["local"].as_str().unwrap().to_string())
        .collect();
    (addrs, v[0]["address"].as_str().unwrap().to_string())
}

fn conflicts(lab: &TestLab, net: &str) -> Vec<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(&lab.ok(&["network", "inspect", net])).unwrap();
    v[0]["LanConflicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["IPAddress"].as_str().unwrap().to_string(),
                c["MacAddress"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn an_address_held_on_the_lan_is_skipped_recorded_and_refused_by_name() {
    let lab = TestLab::new();
    let peer_mac = peer_mac(&lab);
    // The range starts at the peer's address, so the first allocation would collide.
    lab.seed_network("n", &["--ip-range", "10.103.19.20/30"]);

    let o = lab.try_container("a", "n", &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let warning = format!(
        "mvnet: warning: {PEER} is already used on the LAN by the device with MAC {peer_mac}; marked it as taken (mvnet network inspect n lists it) and using 10.103.19.21 instead"
    );
    assert!(o.stderr.contains(&warning), "stderr: {}", o.stderr);
    assert_eq!(lab.ip_of("a", "n"), "10.103.19.21");
    let (addrs, mac) = container_addrs(&lab, "a");
    assert_eq!(
        addrs,
        ["10.103.19.21"],
        "only the free address is configured"
    );
    assert_eq!(
        mac, "02:42:0a:67:13:15",
        "the MAC follows the address it ended up with"
    );
    assert_eq!(
        lab.inspect("a")["NetworkSettings"]["Networks"]["n"]["MacAddress"],
        "02:42:0a:67:13:15"
    );
    // Both keep working: the peer still owns .20, the container is reachable at .21.
    assert!(lab.machine_reaches("peer", "10.103.19.21"));
    assert!(lab.container_reaches("a", PEER));
    assert_eq!(conflicts(&lab, "n"), [(PEER.to_string(), peer_mac.clone())]);

    // The next container does not try .20 again.
    let o = lab.try_container("b", "n", &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        !o.stderr.contains("warning"),
        "no new conflict: {}",
        o.stderr
    );
    assert_eq!(lab.ip_of("b", "n"), "10.103.19.22");

    // Asked for by name: a clear one-line error, and nothing changes.
    let before = lab.lab_snapshot();
    let err = one_line_error(lab.try_container("c", "n", &["--ip", PEER]));
    assert_eq!(
        err,
        format!("mvnet: error: address {PEER} is already used on the LAN by the device with MAC {peer_mac} (it answered mvnet's probe); pick another --ip/--ip6, or pass --force to use it anyway")
    );
    assert_eq!(lab.lab_snapshot(), before);
    assert_eq!(conflicts(&lab, "n").len(), 1, "still recorded");
    // The same through network connect, on a bare namespace (left without an interface).
    let bare = lab.bare_netns("probe");
    let err = lab.fails(&[
        "network", "connect", "--ip", PEER, "--netns", &bare.path, "n",
    ]);
    assert!(err.contains("pass --force"), "{err}");
    let links = lab.ip_json(&bare.path, &["link", "show"]);
    assert_eq!(links.as_array().unwrap().len(), 1, "only lo: {links}");
    assert_eq!(lab.lab_snapshot(), before);

    // --force uses it anyway, with a warning.
    let o = lab.try_container("c", "n", &["--ip", PEER, "--force"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stderr.contains(&format!(
            "mvnet: warning: {PEER} is already used on the LAN by the device with MAC {peer_mac}; using it anyway (--force)"
        )),
        "{}",
        o.stderr
    );
    assert_eq!(container_addrs(&lab, "c").0, [PEER]);
    lab.ok(&["rm", "-f", "c"]);

    // The device leaves: asking for the address by name now works, and the record goes.
    let o = lab.on(
        "peer",
        &["ip", "addr", "del", &format!("{PEER}/24"), "dev", "eth0"],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = lab.try_container("d", "n", &["--ip", PEER]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(!o.stderr.contains("warning"), "{}", o.stderr);
    assert_eq!(container_addrs(&lab, "d").0, [PEER]);
    assert!(conflicts(&lab, "n").is_empty());
}

#[test]
fn probing_off_behaves_like_docker_and_conflicts_can_be_cleared() {
    let lab = TestLab::new();
    lab.seed_network(
        "quiet",
        &["--ip-range", "10.103.19.20/30", "-o", "probe_ms=0"],
    );
    let v: serde_json::Value =
        serde_json::from_str(&lab.ok(&["network", "inspect", "quiet"])).unwrap();
    assert_eq!(v[0]["Options"]["probe_ms"], "0");
    let o = lab.try_container("a", "quiet", &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(!o.stderr.contains("warning"), "{}", o.stderr);
    assert_eq!(
        lab.ip_of("a", "quiet"),
        PEER,
        "no probe: the taken address is handed out"
    );
    lab.ok(&["rm", "-f", "a"]);
    lab.ok(&["network", "rm", "quiet"]);

    // A longer window still finds it, and --clear-lan-conflicts forgets the record.
    lab.seed_network(
        "slow",
        &["--ip-range", "10.103.19.20/30", "-o", "probe_ms=200"],
    );
    lab.container("b", "slow", &[]);
    assert_eq!(lab.ip_of("b", "slow"), "10.103.19.21");
    assert_eq!(conflicts(&lab, "slow").len(), 1);
    let o = lab.mvnet(&["network", "update", "--clear-lan-conflicts", "slow"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stderr.contains("forgot 1 LAN conflict"), "{}", o.stderr);
    assert!(conflicts(&lab, "slow").is_empty());
    let o = lab.mvnet(&["network", "update", "slow"]);
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains("--clear-lan-conflicts"),
        "says what it needs: {}",
        o.stderr
    );
    let err = lab.fails(&[
        "network",
        "create",
        "--subnet",
        "10.9.0.0/24",
        "-o",
        "parent=eth0",
        "-o",
        "probe_ms=9000",
        "x",
    ]);
    assert!(err.contains("at most 5000 ms"), "{err}");
}

#[test]
fn ipv6_duplicate_address_detection_failure_moves_on_and_names_the_defender() {
    let lab = TestLab::new();
    let peer_mac = peer_mac(&lab);
    let o = lab.on(
        "peer",
        &[
            "ip",
            "addr",
            "add",
            "fd00:19::20/64",
            "dev",
            "eth0",
            "nodad",
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    lab.seed_network(
        "v6",
        &[
            "--ipv6",
            "--subnet",
            "fd00:19::/64",
            "--ip-range",
            "fd00:19::20/126",
        ],
    );
    let o = lab.try_container("a", "v6", &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stderr.contains(&format!(
            "fd00:19::20 is already used on the LAN by the device with MAC {peer_mac}"
        )),
        "{}",
        o.stderr
    );
    let got = lab.inspect("a")["NetworkSettings"]["Networks"]["v6"]["GlobalIPv6Address"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(got, "fd00:19::21");
    let (addrs, _) = container_addrs(&lab, "a");
    assert!(addrs.contains(&"fd00:19::21".to_string()), "{addrs:?}");
    assert!(
        !addrs.contains(&"fd00:19::20".to_string()),
        "failed address removed: {addrs:?}"
    );
    // Not tentative and not failed: usable at once.
    let netns = lab.inspect("a")["NetworkSettings"]["SandboxKey"]
        .as_str()
        .unwrap()
        .to_string();
    let v = lab.ip_json(&netns, &["addr", "show", "eth0"]);
    for a in v[0]["addr_info"].as_array().unwrap() {
        assert!(
            a.get("tentative").is_none() && a.get("dadfailed").is_none(),
            "{a}"
        );
    }
    assert!(lab.machine_reaches("peer", "fd00:19::21"));
    assert!(conflicts(&lab, "v6").contains(&("fd00:19::20".to_string(), peer_mac)));
}
