//! The netlink wrapper and namespace helpers against the real kernel, in private namespaces
//! (root). Results are checked independently with `ip -j`.

use mvnet_core::model::{MacAddr, MacvlanMode};
use mvnet_core::netlink::{MacvlanLink, Netlink, VethEnd};
use mvnet_core::netns::{self, Netns};

/// Named namespaces removed on drop, even if the test fails.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = netns::remove_persistent(&netns::named_path(n));
        }
    }
}

fn ip_json(ns: &str, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["-n", ns, "-j"];
    a.extend_from_slice(args);
    let out = std::process::Command::new("ip").args(&a).output().unwrap();
    assert!(
        out.status.success(),
        "ip {a:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn veth_and_macvlan_created_in_other_namespaces_read_back() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    assert_eq!(unsafe { libc::geteuid() }, 0, "needs root");
    let tag = &mvnet_core::ids::new_id()[..8];
    let (a, b) = (format!("nl-{tag}-a"), format!("nl-{tag}-b"));
    let _guard = Namespaces(vec![a.clone(), b.clone()]);
    let ns_a = netns::create_named(&a).unwrap();
    let ns_b = netns::create_named(&b).unwrap();

    // A veth pair made from this (root) namespace with each end created directly in its
    // target namespace: nothing ever appears in the root namespace.
    let mut root = Netlink::new().unwrap();
    root.create_veth(
        VethEnd {
            name: "lan0",
            netns: Some(&ns_a),
        },
        VethEnd {
            name: "lan0",
            netns: Some(&ns_b),
        },
    )
    .unwrap();
    assert!(
        root.link_by_name("lan0").unwrap().is_none(),
        "not in the root namespace"
    );

    // A macvlan on A's veth, created from a socket bound in A, directly into B.
    let mut nl_a = Netlink::in_netns(&ns_a).unwrap();
    let parent = nl_a.link_by_name("lan0").unwrap().expect("veth end in A");
    assert_eq!(parent.kind, "veth");
    let mac: MacAddr = "02:42:0a:00:00:07".parse().unwrap();
    // B already has a "lan0" (the veth's other end), so name the macvlan differently.
    nl_a.create_macvlan(&MacvlanLink {
        name: "mv0",
        parent_index: parent.index,
        mode: MacvlanMode::Private,
        mac: Some(mac),
        mtu: Some(1400),
        bc_queue_len: None,
        netns: Some(&ns_b),
    })
    .unwrap();

    let mut nl_b = Netlink::in_netns(&ns_b).unwrap();
    let mv = nl_b.link_by_name("mv0").unwrap().expect("macvlan in B");
    assert_eq!(mv.kind, "macvlan");
    assert_eq!(mv.macvlan_mode, Some(MacvlanMode::Private));
    assert_eq!(mv.mac, Some(mac));
    assert_eq!(mv.mtu, 1400);
    nl_b.add_address(mv.index, "10.0.0.7".parse().unwrap(), 24)
        .unwrap();
    nl_b.set_up(mv.index, true).unwrap();
    nl_b.add_route(None, Some("10.0.0.1".parse().unwrap()), mv.index)
        .unwrap();

    // Read back with iproute2, independently of our own parsing.
    let link = ip_json(&b, &["-d", "link", "show", "mv0"]);
    assert_eq!(link[0]["address"], "02:42:0a:00:00:07");
    assert_eq!(link[0]["linkinfo"]["info_kind"], "macvlan");
    assert_eq!(link[0]["linkinfo"]["info_data"]["mode"], "private");
    let addr = ip_json(&b, &["-4", "addr", "show", "mv0"]);
    assert_eq!(addr[0]["addr_info"][0]["local"], "10.0.0.7");
    assert_eq!(addr[0]["addr_info"][0]["broadcast"], "10.0.0.255");
    let routes = ip_json(&b, &["route"]);
    assert!(routes
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["dst"] == "default" && r["gateway"] == "10.0.0.1"));
    let addrs = nl_b.addresses(Some(mv.index)).unwrap();
    assert!(addrs
        .iter()
        .any(|(_, ip, p)| ip.to_string() == "10.0.0.7" && *p == 24));
    let dflt = nl_b.routes(false).unwrap();
    assert!(dflt
        .iter()
        .any(|r| r.destination.is_none() && r.oif == Some(mv.index)));

    // Errors carry the kernel's errno; deleting a missing link is success.
    let e = nl_b
        .add_address(mv.index, "10.0.0.7".parse().unwrap(), 24)
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
    nl_b.delete_link(mv.index).unwrap();
    nl_b.delete_link(mv.index).unwrap();
    assert!(nl_b.link_by_name("mv0").unwrap().is_none());
}

#[test]
fn run_in_returns_the_thread_to_its_namespace() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    assert_eq!(unsafe { libc::geteuid() }, 0, "needs root");
    let name = format!("nl-{}-r", &mvnet_core::ids::new_id()[..8]);
    let _guard = Namespaces(vec![name.clone()]);
    let ns = netns::create_named(&name).unwrap();
    let before = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    let inside = netns::run_in(&ns, || {
        std::fs::read_link("/proc/thread-self/ns/net").unwrap()
    })
    .unwrap();
    assert_ne!(before, inside);
    assert_eq!(
        std::fs::read_link("/proc/thread-self/ns/net").unwrap(),
        before
    );
    // lo is up in a fresh named namespace.
    let lo = Netlink::in_netns(&Netns::open(netns::named_path(&name)).unwrap())
        .unwrap()
        .link_by_name("lo")
        .unwrap()
        .unwrap();
    assert!(lo.up);
}
