//! The four macvlan modes behave as the kernel defines them, proven with traffic (root).

mod common;
use common::TestLab;

use mvnet_core::netlink::Netlink;
use mvnet_core::netns::Netns;

fn two_containers(lab: &TestLab, mode: &str) -> (String, String) {
    lab.seed_network("n", &["-o", &format!("macvlan_mode={mode}")]);
    lab.container("a", "n", &[]);
    lab.container("b", "n", &[]);
    let sandbox = lab.inspect("a")["NetworkSettings"]["SandboxKey"]
        .as_str()
        .unwrap()
        .to_string();
    let link = lab.ip_json(&sandbox, &["-d", "link", "show", "eth0"]);
    assert_eq!(
        link[0]["linkinfo"]["info_data"]["mode"], mode,
        "kernel mode matches"
    );
    (lab.ip_of("a", "n"), lab.ip_of("b", "n"))
}

#[test]
fn bridge_mode_containers_reach_each_other() {
    let lab = TestLab::new();
    let (_, b) = two_containers(&lab, "bridge");
    assert!(lab.container_reaches("a", &b));
    assert!(lab.container_reaches("a", "10.103.19.20"), "and the LAN");
}

#[test]
fn private_mode_containers_are_isolated_from_each_other() {
    let lab = TestLab::new();
    let (_, b) = two_containers(&lab, "private");
    assert!(
        !lab.container_reaches("a", &b),
        "private: no traffic between sub-interfaces"
    );
    assert!(
        lab.container_reaches("a", "10.103.19.1"),
        "but the LAN still works"
    );
    assert!(lab.container_reaches("b", "10.103.19.20"));
}

/// Turns hairpin on or off on the switch port that leads to the lab's docker host.
fn hairpin(lab: &TestLab, on: bool) {
    let sw = Netns::open(lab.guard.lab.netns_path("sw")).unwrap();
    let mut nl = Netlink::in_netns(&sw).unwrap();
    let port = nl.link_by_name("p-host").unwrap().unwrap();
    nl.set_hairpin(port.index, on).unwrap();
}

#[test]
fn vepa_mode_needs_a_hairpinning_switch() {
    let lab = TestLab::new();
    let (_, b) = two_containers(&lab, "vepa");
    assert!(
        !lab.container_reaches("a", &b),
        "vepa without hairpin: the switch never sends it back"
    );
    hairpin(&lab, true);
    // The first exchange also teaches the switch where each MAC lives: allow a few tries.
    let through = (0..5).any(|_| lab.container_reaches("a", &b));
    assert!(through, "vepa through an 802.1Qbg-style hairpinning switch");
    hairpin(&lab, false);
    // Flush the learned neighbour so the next try really goes out again.
    lab.ok(&["exec", "a", "--", "ip", "neigh", "flush", "dev", "eth0"]);
    assert!(!lab.container_reaches("a", &b));
}

#[test]
fn passthru_gives_the_parent_to_exactly_one_container() {
    let lab = TestLab::new();
    lab.seed_network("p", &["-o", "macvlan_mode=passthru"]);
    lab.container("owner", "p", &[]);
    let sandbox = lab.inspect("owner")["NetworkSettings"]["SandboxKey"]
        .as_str()
        .unwrap()
        .to_string();
    let link = lab.ip_json(&sandbox, &["-d", "link", "show", "eth0"]);
    assert_eq!(link[0]["linkinfo"]["info_data"]["mode"], "passthru");
    assert_eq!(
        link[0]["address"], "02:42:0a:67:13:02",
        "inspect's MAC is the real one"
    );
    assert!(lab.container_reaches("owner", "10.103.19.20"));
    assert!(lab.container_reaches("owner", "198.51.100.10"));
    let o = lab.mvnet(&[
        "run",
        "-d",
        "--network",
        "p",
        "--name",
        "second",
        "--",
        "sleep",
        "infinity",
    ]);
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains("already belongs to owner"),
        "{}",
        o.stderr
    );
    // Once the owner is gone, another container may take the parent.
    lab.ok(&["rm", "-f", "owner"]);
    lab.container("next", "p", &[]);
    assert!(lab.container_reaches("next", "10.103.19.20"));
}
