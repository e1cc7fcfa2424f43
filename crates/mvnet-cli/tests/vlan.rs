//! 802.1Q trunk parents (`-o parent=ens19.1318`, as in the seed). Needs a kernel with 8021q:
//! scripts/vm-tests.sh runs these under Debian's kernel in a VM (root).

mod common;
use common::{full_kernel_or_skip, kernel_has, TestLab};

fn host_link(lab: &TestLab, name: &str) -> Option<serde_json::Value> {
    let links = lab.ip_json(
        lab.guard.lab.host_netns().to_str().unwrap(),
        &["-d", "link"],
    );
    links
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["ifname"] == name)
        .cloned()
}

#[test]
fn seed_vlan_example_auto_creates_the_parent_and_stays_on_its_vlan() {
    if !full_kernel_or_skip("vlan", "seed_vlan_example") {
        return;
    }
    let lab = TestLab::new();
    assert!(lab.guard.lab.has_trunk());
    assert!(
        !host_link(&lab, "ens19").unwrap()["flags"]
            .as_array()
            .unwrap()
            .contains(&"UP".into()),
        "trunk starts down"
    );
    let o = lab.mvnet(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet=10.103.18.0/24",
        "--gateway=10.103.18.1",
        "-o",
        "parent=ens19.1318",
        "my-8021q-1318-macvlan-net",
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let vlan = host_link(&lab, "ens19.1318").expect("VLAN parent created");
    assert_eq!(vlan["linkinfo"]["info_kind"], "vlan");
    assert_eq!(vlan["linkinfo"]["info_data"]["id"], 1318);
    assert!(vlan["flags"].as_array().unwrap().contains(&"UP".into()));
    assert!(
        host_link(&lab, "ens19").unwrap()["flags"]
            .as_array()
            .unwrap()
            .contains(&"UP".into()),
        "trunk brought up"
    );

    lab.container(
        "my-8021q-1318-macvlan-alpine",
        "my-8021q-1318-macvlan-net",
        &[],
    );
    let n = &lab.inspect("my-8021q-1318-macvlan-alpine")["NetworkSettings"]["Networks"]
        ["my-8021q-1318-macvlan-net"];
    assert_eq!(n["IPAddress"], "10.103.18.2");
    assert_eq!(n["MacAddress"], "02:42:0a:67:12:02");
    assert!(
        lab.container_reaches("my-8021q-1318-macvlan-alpine", "10.103.18.1"),
        "gateway on VLAN 1318"
    );
    // Same subnet, but on VLAN 1317 (.99) or untagged (.98): layer 2 keeps them apart.
    assert!(
        !lab.container_reaches("my-8021q-1318-macvlan-alpine", "10.103.18.99"),
        "host on another VLAN"
    );
    assert!(
        !lab.container_reaches("my-8021q-1318-macvlan-alpine", "10.103.18.98"),
        "host on the untagged LAN"
    );
}

#[test]
fn vlan_option_is_the_same_as_the_dotted_name() {
    if !full_kernel_or_skip("vlan", "vlan_option") {
        return;
    }
    let lab = TestLab::new();
    lab.ok(&[
        "network",
        "create",
        "--subnet=10.103.17.0/24",
        "--gateway=10.103.17.1",
        "-o",
        "parent=ens19",
        "-o",
        "vlan=1317",
        "v1317",
    ]);
    let n: serde_json::Value =
        serde_json::from_str(&lab.ok(&["network", "inspect", "v1317"])).unwrap();
    assert_eq!(n[0]["Options"]["parent"], "ens19.1317");
    assert!(host_link(&lab, "ens19.1317").is_some());
    lab.container("c", "v1317", &[]);
    assert!(lab.container_reaches("c", "10.103.17.1"));
    assert!(
        lab.container_reaches("c", "10.103.17.20"),
        "peer on the same VLAN"
    );
}

#[test]
fn rm_deletes_only_what_mvnet_created_and_only_with_the_last_network() {
    if !full_kernel_or_skip("vlan", "vlan_rm_rules") {
        return;
    }
    let lab = TestLab::new();
    // Shared by two networks: gone only after the last one.
    lab.ok(&[
        "network",
        "create",
        "--subnet=10.103.18.0/24",
        "--ip-range=10.103.18.0/25",
        "-o",
        "parent=ens19.1318",
        "a",
    ]);
    lab.ok(&[
        "network",
        "create",
        "--subnet=10.103.18.0/24",
        "--ip-range=10.103.18.128/25",
        "-o",
        "parent=ens19.1318",
        "b",
    ]);
    lab.ok(&["network", "rm", "a"]);
    assert!(host_link(&lab, "ens19.1318").is_some(), "still used by b");
    lab.ok(&["network", "rm", "b"]);
    assert!(
        host_link(&lab, "ens19.1318").is_none(),
        "removed with the last network"
    );
    // Made by someone else before: never deleted.
    let o = lab.on(
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
    assert_eq!(o.code, 0, "{}", o.stderr);
    lab.ok(&[
        "network",
        "create",
        "--subnet=10.103.17.0/24",
        "-o",
        "parent=ens19.1317",
        "pre",
    ]);
    lab.ok(&["network", "rm", "pre"]);
    assert!(
        host_link(&lab, "ens19.1317").is_some(),
        "a pre-existing VLAN parent is kept"
    );
}

#[test]
fn bad_vlan_parents_create_nothing() {
    if !full_kernel_or_skip("vlan", "bad_vlan_parents") {
        return;
    }
    let lab = TestLab::new();
    let before = lab.host_links();
    for (parent, want) in [
        (
            "ens19.5000",
            "vlan id must be between 1-4094, received: 5000",
        ),
        ("ens19.0", "vlan id must be between 1-4094, received: 0"),
        (
            "ens77.10",
            "-o parent interface was not found on the host: ens77",
        ),
        (
            "ens19.x",
            "unable to parse a valid vlan id from: x (ex. eth0.10 for vlan 10)",
        ),
    ] {
        let e = lab.fails(&[
            "network",
            "create",
            "--subnet=10.103.18.0/24",
            "-o",
            &format!("parent={parent}"),
            "bad",
        ]);
        assert!(e.contains(want), "{parent}: {e}");
        assert_eq!(lab.host_links(), before, "{parent} created a link");
    }
    // A VLAN parent is rolled back when the network itself is refused.
    lab.seed_network("taken", &[]);
    let e = lab.fails(&[
        "network",
        "create",
        "--subnet=10.103.18.0/24",
        "-o",
        "parent=ens19.1318",
        "taken",
    ]);
    assert!(e.contains("already exists"), "{e}");
    let mut with_lan = before.clone();
    with_lan.sort();
    let mut now = lab.host_links();
    now.sort();
    assert_eq!(now, with_lan);
}

#[test]
fn a_missing_vlan_parent_is_marked_and_recreated_on_first_use() {
    if !full_kernel_or_skip("vlan", "vlan_after_reboot") {
        return;
    }
    let lab = TestLab::new();
    lab.ok(&[
        "network",
        "create",
        "--subnet=10.103.18.0/24",
        "--gateway=10.103.18.1",
        "-o",
        "parent=ens19.1318",
        "v",
    ]);
    // A reboot (simulated): the VLAN link is gone, the state remains.
    assert_eq!(lab.on("host", &["ip", "link", "del", "ens19.1318"]).code, 0);
    assert!(lab.ok(&["network", "ls"]).contains("ens19.1318 (missing)"));
    lab.container("c", "v", &[]);
    assert!(
        host_link(&lab, "ens19.1318").is_some(),
        "re-created on first use"
    );
    assert!(lab.container_reaches("c", "10.103.18.1"));
    assert!(!lab.ok(&["network", "ls"]).contains("missing"));
}

#[test]
fn without_8021q_a_vlan_network_fails_naming_the_module() {
    common::require_root();
    if kernel_has("vlan") {
        eprintln!("skipped without_8021q: this kernel has 8021q (the other VLAN tests cover it)");
        return;
    }
    let lab = TestLab::new();
    let before = lab.lab_snapshot();
    let e = lab.fails(&[
        "network",
        "create",
        "--subnet=10.103.18.0/24",
        "-o",
        "parent=eth0.1318",
        "v",
    ]);
    assert!(
        e.contains("8021q") && e.contains("CONFIG_VLAN_8021Q"),
        "{e}"
    );
    assert_eq!(lab.lab_snapshot(), before, "nothing created");
}
