//! `mvnet network ...` against the real kernel, inside a private lab (root).

mod common;
use common::TestLab;

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap()
}

#[test]
fn create_ls_inspect_rm_like_docker() {
    let lab = TestLab::new();
    let id = lab.seed_network("my-macvlan-net", &[]);
    assert_eq!(id.len(), 64, "create prints the 64-hex id: {id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));

    let ls = lab.ok(&["network", "ls"]);
    let mut lines = ls.lines();
    let header = lines.next().unwrap();
    for col in ["NETWORK ID", "NAME", "DRIVER", "SCOPE"] {
        assert!(header.contains(col), "{header}");
    }
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[..4], [&id[..12], "my-macvlan-net", "macvlan", "local"]);

    let v = json(&lab.ok(&["network", "inspect", "my-macvlan-net"]));
    let n = &v[0];
    assert_eq!(n["Name"], "my-macvlan-net");
    assert_eq!(n["Id"], id);
    assert_eq!(n["Scope"], "local");
    assert_eq!(n["Driver"], "macvlan");
    assert!(n["Created"].as_str().unwrap().starts_with("20"));
    assert_eq!(n["IPAM"]["Config"][0]["Subnet"], "10.103.19.0/24");
    assert_eq!(n["IPAM"]["Config"][0]["Gateway"], "10.103.19.1");
    assert_eq!(n["Options"]["parent"], "eth0");
    assert_eq!(n["Options"]["macvlan_mode"], "bridge");
    assert_eq!(n["Internal"], false);
    assert_eq!(n["EnableIPv6"], false);
    // Inspect by short id too.
    let by_id = json(&lab.ok(&["network", "inspect", &id[..12]]));
    assert_eq!(by_id[0]["Name"], "my-macvlan-net");

    let ls_json = lab.ok(&["network", "ls", "--format", "json"]);
    let row = json(ls_json.lines().next().unwrap());
    assert_eq!(row["Name"], "my-macvlan-net");
    assert_eq!(row["ParentPresent"], true);

    assert_eq!(
        lab.ok(&["network", "rm", "my-macvlan-net"]).trim(),
        "my-macvlan-net"
    );
    assert_eq!(
        lab.ok(&["network", "ls"]).lines().count(),
        1,
        "only the header is left"
    );
}

#[test]
fn all_create_options_are_kept() {
    let lab = TestLab::new();
    lab.ok(&[
        "network",
        "create",
        "--subnet=10.103.19.0/24",
        "--gateway=10.103.19.1",
        "--ip-range=10.103.19.128/25",
        "--aux-address",
        "printer=10.103.19.200",
        "--subnet=2001:db8:19::/64",
        "--gateway=2001:db8:19::1",
        "--ipv6",
        "--internal",
        "--label",
        "team=net",
        "-o",
        "parent=eth0",
        "-o",
        "macvlan_mode=private",
        "-o",
        "mtu=1400",
        "full",
    ]);
    let n = &json(&lab.ok(&["network", "inspect", "full"]))[0];
    assert_eq!(n["IPAM"]["Config"][0]["IPRange"], "10.103.19.128/25");
    assert_eq!(
        n["IPAM"]["Config"][0]["AuxiliaryAddresses"]["printer"],
        "10.103.19.200"
    );
    assert_eq!(n["IPAM"]["Config"][1]["Subnet"], "2001:db8:19::/64");
    assert_eq!(n["IPAM"]["Config"][1]["Gateway"], "2001:db8:19::1");
    assert_eq!(n["EnableIPv6"], true);
    assert_eq!(n["Internal"], true);
    assert_eq!(n["Labels"]["team"], "net");
    assert_eq!(n["Options"]["macvlan_mode"], "private");
    assert_eq!(n["Options"]["mtu"], "1400");
}

#[test]
fn default_parent_is_the_default_route_interface() {
    // Inside the lab's docker host the only default route is the lab's own eth0, so this
    // exercises detection without ever looking at the machine's real interfaces.
    let lab = TestLab::new();
    let o = lab.mvnet(&["network", "create", "--subnet=10.103.19.0/24", "auto"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stderr.contains("using eth0"),
        "says which parent it picked: {}",
        o.stderr
    );
    let n = &json(&lab.ok(&["network", "inspect", "auto"]))[0];
    assert_eq!(n["Options"]["parent"], "eth0");
}

#[test]
fn networks_share_a_parent_but_passthru_is_exclusive() {
    let lab = TestLab::new();
    lab.ok(&[
        "network",
        "create",
        "--subnet=10.103.19.0/25",
        "-o",
        "parent=eth0",
        "a",
    ]);
    lab.ok(&[
        "network",
        "create",
        "--subnet=10.103.19.128/25",
        "-o",
        "parent=eth0",
        "-o",
        "macvlan_mode=vepa",
        "b",
    ]);
    let e = lab.fails(&[
        "network",
        "create",
        "--subnet=10.9.0.0/24",
        "-o",
        "parent=eth0",
        "-o",
        "macvlan_mode=passthru",
        "p",
    ]);
    assert!(
        e.contains(
            "cannot use mode passthru, macvlan network a is already using parent interface eth0"
        ),
        "{e}"
    );
    lab.ok(&["network", "rm", "a", "b"]);
    lab.ok(&[
        "network",
        "create",
        "--subnet=10.9.0.0/24",
        "-o",
        "parent=eth0",
        "-o",
        "macvlan_mode=passthru",
        "p",
    ]);
    let e = lab.fails(&[
        "network",
        "create",
        "--subnet=10.8.0.0/24",
        "-o",
        "parent=eth0",
        "c",
    ]);
    assert!(
        e.contains("network p uses parent interface eth0 in passthru mode"),
        "{e}"
    );
}

#[test]
fn overlap_is_allowed_only_with_disjoint_ranges() {
    let lab = TestLab::new();
    lab.ok(&[
        "network",
        "create",
        "--subnet=10.103.19.0/24",
        "--ip-range=10.103.19.0/25",
        "-o",
        "parent=eth0",
        "low",
    ]);
    let e = lab.fails(&[
        "network",
        "create",
        "--subnet=10.103.19.0/24",
        "-o",
        "parent=eth0",
        "all",
    ]);
    assert!(
        e.contains("overlaps subnet 10.103.19.0/24 of network low"),
        "{e}"
    );
    lab.ok(&[
        "network",
        "create",
        "--subnet=10.103.19.0/24",
        "--ip-range=10.103.19.128/25",
        "-o",
        "parent=eth0",
        "high",
    ]);
    // Overlapping networks share one LAN, so they share allocations: a static address taken
    // through one network is refused through the other.
    lab.container("c1", "low", &["--ip", "10.103.19.140"]);
    let o = lab.mvnet(&[
        "run",
        "-d",
        "--network",
        "high",
        "--name",
        "c2",
        "--ip",
        "10.103.19.140",
        "--",
        "sleep",
        "infinity",
    ]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("already in use by c1"), "{}", o.stderr);
}

#[test]
fn prune_removes_only_unused_networks() {
    let lab = TestLab::new();
    lab.seed_network("used", &[]);
    lab.ok(&[
        "network",
        "create",
        "--subnet=10.200.0.0/24",
        "-o",
        "parent=eth0",
        "idle",
    ]);
    lab.container("busy", "used", &[]);
    let out = lab.ok(&["network", "prune", "-f"]);
    assert_eq!(out, "Deleted Networks:\nidle\n");
    let ls = lab.ok(&["network", "ls"]);
    assert!(ls.contains("used") && !ls.contains("idle"));
}

#[test]
fn remove_with_active_endpoints_names_them() {
    let lab = TestLab::new();
    lab.seed_network("n", &[]);
    lab.container("web", "n", &[]);
    lab.container("db", "n", &[]);
    let e = lab.fails(&["network", "rm", "n"]);
    assert!(e.contains("has active endpoints (web, db)"), "{e}");
    lab.ok(&["rm", "-f", "web", "db"]);
    lab.ok(&["network", "rm", "n"]);
}

#[test]
fn root_relocates_all_state() {
    let lab = TestLab::new();
    let elsewhere =
        std::env::temp_dir().join(format!("mvnet-root-{}", &mvnet_core::ids::new_id()[..8]));
    let root = elsewhere.to_str().unwrap();
    lab.ok(&[
        "--root",
        root,
        "network",
        "create",
        "--subnet=10.103.19.0/24",
        "-o",
        "parent=eth0",
        "x",
    ]);
    assert!(elsewhere.join("mvnet.db").exists());
    assert!(
        !lab.ok(&["network", "ls"]).contains(" x "),
        "the lab's default root does not see it"
    );
    assert!(lab.ok(&["--root", root, "network", "ls"]).contains("x"));
    std::fs::remove_dir_all(&elsewhere).unwrap();
}
