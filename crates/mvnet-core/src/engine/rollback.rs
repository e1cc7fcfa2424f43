//! Rollback of every attach and network-create path, against the fake kernel and the
//! in-memory store (no root): a failure is injected at each step in turn, and nothing may be
//! left behind, neither a link nor a row nor an address. `cargo test -p mvnet-core rollback`.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use super::{AttachOptions, AttachRequest, AttachTarget, Engine, LinkSettings, NetworkSpec};
use crate::engine::Addressing;
use crate::model::{CreateNetworkRequest, MacAddr, Network};
use crate::os::fake::{FakeKernel, FakeOs, HOST};
use crate::store::{EndpointRequest, MemoryStore, Store};

struct World {
    engine: Engine,
    kernel: Rc<RefCell<FakeKernel>>,
    store: std::sync::Arc<std::sync::Mutex<MemoryStore>>,
}

fn world(containers: &[&str]) -> World {
    let os = FakeOs::new(containers);
    let kernel = os.kernel.clone();
    let store = std::sync::Arc::new(std::sync::Mutex::new(MemoryStore::new()));
    let engine = Engine::with_parts(
        Path::new("/nonexistent"),
        Box::new(store.clone()),
        Box::new(os),
    );
    World {
        engine,
        kernel,
        store,
    }
}

fn create(w: &mut World, name: &str, parent: &str, extra: &[&str]) -> crate::Result<Network> {
    let mut options = vec![format!("parent={parent}")];
    options.extend(extra.iter().map(|s| s.to_string()));
    w.engine
        .create_network(&CreateNetworkRequest {
            name: name.into(),
            subnets: vec!["10.103.19.0/24".into()],
            gateways: vec!["10.103.19.1".into()],
            options,
            ..Default::default()
        })
        .map(|(n, _)| n)
}

fn target(ns: &str) -> AttachTarget {
    AttachTarget {
        container_id: format!("id-{ns}"),
        container_name: ns.into(),
        netns: ns.into(),
        owned: true,
    }
}

/// Links in `ns` besides `lo`.
fn extra_links(w: &World, ns: &str) -> Vec<String> {
    w.kernel
        .borrow()
        .link_names(ns)
        .into_iter()
        .filter(|n| n != "lo")
        .collect()
}

fn calls(w: &World) -> usize {
    w.kernel.borrow().calls.len()
}

/// Runs `attach` once to count its kernel calls, then again with each call failing in turn;
/// after every failure, `check` must find nothing left.
fn fail_each_step(
    setup: impl Fn() -> (World, Network),
    attach: impl Fn(&mut World, &Network) -> crate::Result<()>,
    check: impl Fn(&World, &Network, usize),
) -> usize {
    let (mut w, net) = setup();
    let before = calls(&w);
    attach(&mut w, &net).expect("the attach works without injected failures");
    let steps = calls(&w) - before;
    assert!(steps > 5, "the attach made only {steps} calls");
    let mut failures = 0;
    for n in 1..=steps {
        let (mut w, net) = setup();
        let at = calls(&w) + n;
        w.kernel.borrow_mut().fail_at = Some(at);
        if attach(&mut w, &net).is_err() {
            failures += 1;
            check(&w, &net, n);
        }
    }
    assert!(failures > 0);
    failures
}

fn nothing_left(w: &World, net: &Network, ns: &str, step: usize) {
    let calls = w.kernel.borrow().calls.clone();
    assert!(
        extra_links(w, ns).is_empty(),
        "step {step}: links left in {ns}: {:?} (calls: {calls:?})",
        extra_links(w, ns)
    );
    let eps = w
        .store
        .lock()
        .unwrap()
        .endpoints_of_network(&net.id)
        .unwrap();
    assert!(eps.is_empty(), "step {step}: rows left: {eps:?}");
    assert_eq!(
        w.store.lock().unwrap().allocation_count(),
        0,
        "step {step}: an address is still held"
    );
}

#[test]
fn rollback_attach_fails_at_each_step_and_leaves_nothing() {
    let failures = fail_each_step(
        || {
            let mut w = world(&["c1"]);
            let net = create(&mut w, "n", "eth0", &[]).unwrap();
            (w, net)
        },
        |w, net| {
            w.engine
                .connect(net, &target("c1"), &AttachOptions::default())
                .map(|_| ())
        },
        |w, net, step| nothing_left(w, net, "c1", step),
    );
    assert!(failures >= 8, "{failures}");
}

/// The agent's way: the link is created while a helper thread reserves the address
/// (`helper::join`), with a MAC the kernel chose, then given its own. A failure at each
/// step, or a reservation that fails after the link was made, leaves nothing; a success
/// leaves the link with the MAC its address maps to.
#[test]
fn rollback_with_the_link_made_while_the_address_is_reserved() {
    std::thread::spawn(|| {
        use std::os::fd::IntoRawFd;
        let home = std::fs::File::open("/proc/self/ns/net")
            .unwrap()
            .into_raw_fd();
        crate::helper::enable_on_this_thread(home, Vec::new());
        let named = AttachOptions {
            ifname: Some("eth0".into()),
            ..Default::default()
        };
        let setup = || {
            let mut w = world(&["c1", "c2"]);
            let net = create(&mut w, "n", "eth0", &[]).unwrap();
            (w, net)
        };
        let failures = fail_each_step(
            setup,
            |w, net| {
                let ep = w.engine.connect(net, &target("c1"), &named)?;
                // Made early or (when that failed) the usual way: the MAC of its address.
                let ip = match ep.ipv4.unwrap().0 {
                    std::net::IpAddr::V4(v4) => v4,
                    other => panic!("{other}"),
                };
                assert_eq!(
                    Some(ep.mac),
                    MacAddr::from_ipv4_addr(std::net::IpAddr::V4(ip))
                );
                let k = w.kernel.borrow();
                let link = k.namespaces["c1"]
                    .links
                    .iter()
                    .find(|l| l.link.name == "eth0")
                    .expect("the link");
                assert_eq!(link.link.mac, Some(ep.mac));
                Ok(())
            },
            |w, net, step| nothing_left(w, net, "c1", step),
        );
        assert!(failures >= 8, "{failures}");
        // Without failures: made early (no MAC asked for), then given its own.
        let (mut w, net) = setup();
        w.engine.connect(&net, &target("c1"), &named).unwrap();
        let calls = w.kernel.borrow().calls.clone();
        let mac = w
            .store
            .lock()
            .unwrap()
            .endpoints_of_network(&net.id)
            .unwrap()[0]
            .mac;
        let at = |what: &str| calls.iter().position(|c| c.contains(what));
        assert!(at(" create_macvlan ").is_some(), "{calls:?}");
        assert!(
            at(&format!(" set_up_announcing 5 mac {mac}")) > at(" create_macvlan "),
            "{calls:?}"
        );
        // The store refuses after the link was made (the address is taken): it goes again.
        let (mut w, net) = setup();
        let taken = AttachOptions {
            ipv4: Some("10.103.19.9".parse().unwrap()),
            ..named.clone()
        };
        w.engine.connect(&net, &target("c1"), &taken).unwrap();
        let e = w.engine.connect(&net, &target("c2"), &taken).unwrap_err();
        assert!(e.to_string().contains("already in use"), "{e}");
        assert!(
            extra_links(&w, "c2").is_empty(),
            "{:?}",
            extra_links(&w, "c2")
        );
        let calls = w.kernel.borrow().calls.clone();
        assert!(
            calls
                .iter()
                .filter(|c| c.contains(" create_macvlan "))
                .count()
                == 2,
            "the second link was made early: {calls:?}"
        );
    })
    .join()
    .unwrap();
}

#[test]
fn rollback_dual_stack_with_probing_and_dad() {
    fail_each_step(
        || {
            let mut w = world(&["c1"]);
            let net = w
                .engine
                .create_network(&CreateNetworkRequest {
                    name: "d".into(),
                    subnets: vec!["10.103.19.0/24".into(), "fd00:19::/64".into()],
                    gateways: vec!["10.103.19.1".into(), "fd00:19::1".into()],
                    ipv6: true,
                    options: vec!["parent=eth0".into(), "probe_ms=10".into()],
                    ..Default::default()
                })
                .unwrap()
                .0;
            (w, net)
        },
        |w, net| {
            w.engine
                .connect(net, &target("c1"), &AttachOptions::default())
                .map(|_| ())
        },
        |w, net, step| nothing_left(w, net, "c1", step),
    );
}

#[test]
fn rollback_after_a_probe_conflict_keeps_only_the_conflict() {
    fail_each_step(
        || {
            let mut w = world(&["c1"]);
            let net = create(&mut w, "n", "eth0", &["probe_ms=10"]).unwrap();
            // A LAN device holds .2: the attach moves to .3 (a new MAC goes on the link).
            w.kernel
                .borrow_mut()
                .lan
                .insert("10.103.19.2".parse().unwrap(), MacAddr([2, 9, 9, 9, 9, 9]));
            (w, net)
        },
        |w, net| {
            let ep = w
                .engine
                .connect(net, &target("c1"), &AttachOptions::default())?;
            assert_eq!(ep.ipv4.unwrap().0.to_string(), "10.103.19.3");
            Ok(())
        },
        |w, net, step| {
            assert!(extra_links(w, "c1").is_empty(), "step {step}");
            let mut s = w.store.lock().unwrap();
            assert!(s.endpoints_of_network(&net.id).unwrap().is_empty());
            // Only the conflict the probe found (if it got that far) holds an address.
            let conflicts = s.lan_conflicts(net).unwrap().len();
            drop(s);
            assert_eq!(
                w.store.lock().unwrap().allocation_count(),
                conflicts,
                "step {step}"
            );
        },
    );
}

#[test]
fn rollback_of_a_static_address_the_lan_holds_records_it() {
    let mut w = world(&["c1"]);
    let net = create(&mut w, "n", "eth0", &["probe_ms=10"]).unwrap();
    w.kernel
        .borrow_mut()
        .lan
        .insert("10.103.19.50".parse().unwrap(), MacAddr([2, 9, 9, 9, 9, 9]));
    let opts = AttachOptions {
        ipv4: Some("10.103.19.50".parse().unwrap()),
        ..Default::default()
    };
    let e = w.engine.connect(&net, &target("c1"), &opts).unwrap_err();
    assert!(e.to_string().contains("already used on the LAN"), "{e}");
    assert!(extra_links(&w, "c1").is_empty());
    let held = w.store.lock().unwrap().lan_conflicts(&net).unwrap();
    assert_eq!(held.len(), 1, "the refused address is remembered");
    assert_eq!(w.store.lock().unwrap().allocation_count(), 1);
}

#[test]
fn rollback_with_the_temporary_name_of_older_kernels() {
    // Kernels before 6.x check a new link's name in the caller's namespace too, where the
    // host's own eth0 lives: the attach goes through a temporary name and a rename.
    fail_each_step(
        || {
            let mut w = world(&["c1"]);
            w.kernel.borrow_mut().checks_name_in_caller = true;
            let net = create(&mut w, "n", "eth0", &["probe_ms=0"]).unwrap();
            (w, net)
        },
        |w, net| {
            w.engine
                .connect(net, &target("c1"), &AttachOptions::default())?;
            assert_eq!(extra_links(w, "c1"), ["eth0"]);
            Ok(())
        },
        |w, net, step| nothing_left(w, net, "c1", step),
    );
}

#[test]
fn rollback_bring_up_waits_out_a_busy_mac_then_gives_up_cleanly() {
    let mut w = world(&["c1", "c2"]);
    let net = create(&mut w, "n", "eth0", &["probe_ms=0"]).unwrap();
    w.kernel.borrow_mut().busy_mac_answers = 3;
    w.engine
        .connect(&net, &target("c1"), &AttachOptions::default())
        .expect("three busy answers are waited out");
    // A MAC that stays busy (a chosen one, so no other address can help) fails cleanly.
    w.kernel.borrow_mut().busy_mac_answers = 1000;
    let opts = AttachOptions {
        mac: Some(MacAddr([2, 0, 0, 0, 0, 0x42])),
        ..Default::default()
    };
    let e = w.engine.connect(&net, &target("c2"), &opts).unwrap_err();
    assert!(
        e.to_string().contains("already used by another macvlan"),
        "{e}"
    );
    assert!(extra_links(&w, "c2").is_empty());
    assert_eq!(
        w.store
            .lock()
            .unwrap()
            .endpoints_of_network(&net.id)
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn rollback_network_create_with_a_vlan_parent() {
    // `-o parent=eth0.10`: mvnet creates the 802.1Q parent; any failure after that deletes
    // it again, and leaves no network.
    let setup = || world(&[]);
    let mut w = setup();
    let before = calls(&w);
    create(&mut w, "v", "eth0.10", &[]).unwrap();
    assert!(w
        .kernel
        .borrow()
        .link_names(HOST)
        .contains(&"eth0.10".to_string()));
    let steps = calls(&w) - before;
    for n in 1..=steps {
        let mut w = setup();
        let at = calls(&w) + n;
        w.kernel.borrow_mut().fail_at = Some(at);
        if create(&mut w, "v", "eth0.10", &[]).is_err() {
            assert!(
                !w.kernel
                    .borrow()
                    .link_names(HOST)
                    .contains(&"eth0.10".to_string()),
                "step {n}: the VLAN parent was left"
            );
            assert!(w.store.lock().unwrap().networks().unwrap().is_empty());
        }
    }
    // The store refusing the record (a full disk, say) also takes the parent away.
    let mut w = setup();
    w.store.lock().unwrap().fail_write_at = Some(1);
    assert!(create(&mut w, "v", "eth0.10", &[]).is_err());
    assert!(!w
        .kernel
        .borrow()
        .link_names(HOST)
        .contains(&"eth0.10".to_string()));
}

#[test]
fn rollback_of_a_store_failure_at_activation() {
    let mut w = world(&["c1"]);
    let net = create(&mut w, "n", "eth0", &["probe_ms=0"]).unwrap();
    // Writes so far: create_network. The attach writes reserve (2), then activate (3).
    w.store.lock().unwrap().fail_write_at = Some(3);
    assert!(w
        .engine
        .connect(&net, &target("c1"), &AttachOptions::default())
        .is_err());
    nothing_left(&w, &net, "c1", 0);
}

#[test]
fn rollback_kill9_reclaim_deletes_the_abandoned_link() {
    let mut w = world(&["c1", "c2"]);
    let net = create(&mut w, "n", "eth0", &["probe_ms=0"]).unwrap();
    // A process killed mid-attach: its row is `creating`, its link exists with the MAC of
    // the address it had.
    let dead_pid = 0x3fff_fff0;
    let ep = w
        .store
        .lock()
        .unwrap()
        .reserve_endpoint(
            &net,
            &EndpointRequest {
                container_id: "id-c1".into(),
                container_name: "c1".into(),
                netns: "c1".into(),
                owner_pid: dead_pid,
                ..Default::default()
            },
        )
        .unwrap();
    {
        let mut k = w.kernel.borrow_mut();
        let eth0 = k.namespaces[HOST]
            .links
            .iter()
            .find(|l| l.link.name == "eth0")
            .unwrap()
            .link
            .index;
        k.add_nic("c1", "eth0", ep.mac, false);
        let n = k.namespaces.get_mut("c1").unwrap();
        let l = n.links.iter_mut().find(|l| l.link.name == "eth0").unwrap();
        l.link.kind = "macvlan".into();
        l.link.parent_index = Some(eth0);
    }
    // The next attach (any address) reclaims the row and deletes its link.
    let first = w
        .engine
        .connect(&net, &target("c2"), &AttachOptions::default())
        .unwrap();
    assert_ne!(first.ipv4, ep.ipv4, "round-robin moves on");
    assert!(
        extra_links(&w, "c1").is_empty(),
        "the abandoned link was deleted"
    );
    // So the reclaimed address, and the MAC derived from it, are usable at once.
    let opts = AttachOptions {
        ipv4: ep.ipv4.map(|(ip, _)| ip),
        ..Default::default()
    };
    let again = w.engine.connect(&net, &target("c1"), &opts).unwrap();
    assert_eq!(again.mac, ep.mac);
}

#[test]
fn rollback_skips_an_address_whose_mac_a_foreign_macvlan_holds() {
    let mut w = world(&["c1", "other"]);
    let net = create(&mut w, "n", "eth0", &["probe_ms=0"]).unwrap();
    {
        // A macvlan nobody recorded holds 02:42:0a:67:13:02, the MAC of .2.
        let mut k = w.kernel.borrow_mut();
        let eth0 = k.namespaces[HOST]
            .links
            .iter()
            .find(|l| l.link.name == "eth0")
            .unwrap()
            .link
            .index;
        let mac = MacAddr::from_ipv4("10.103.19.2".parse().unwrap());
        k.add_nic("other", "mv0", mac, true);
        let l = k
            .namespaces
            .get_mut("other")
            .unwrap()
            .links
            .last_mut()
            .unwrap();
        l.link.kind = "macvlan".into();
        l.link.parent_index = Some(eth0);
    }
    let ep = w
        .engine
        .connect(&net, &target("c1"), &AttachOptions::default())
        .unwrap();
    assert_eq!(ep.ipv4.unwrap().0.to_string(), "10.103.19.3");
    assert_eq!(extra_links(&w, "c1"), ["eth0"]);
}

#[test]
fn rollback_of_an_ensured_network_takes_the_new_record_away() {
    let mut w = world(&["c1"]);
    let template = crate::model::CreateNetworkRequest {
        name: "cni".into(),
        subnets: vec!["10.103.19.0/24".into()],
        options: vec!["parent=eth0".into()],
        ..Default::default()
    };
    let v = template.validate().unwrap();
    let net = Network {
        id: crate::ids::new_id(),
        name: "cni".into(),
        driver: v.driver,
        created: String::new(),
        pools: v.pools,
        internal: false,
        ipv6: false,
        ipv4_disabled: false,
        dhcp: false,
        fleet: None,
        labels: Default::default(),
        options: v.options,
    };
    let req = AttachRequest {
        network: NetworkSpec::Ensure(net),
        target: target("c1"),
        options: AttachOptions::default(),
        addressing: Addressing::Managed,
        link: LinkSettings {
            parent: Some("eth0".into()),
            probe: Some(None),
            ..Default::default()
        },
    };
    let before = calls(&w);
    w.kernel.borrow_mut().fail_at = Some(before + 6);
    assert!(w.engine.attach(&req).is_err());
    assert!(w.store.lock().unwrap().networks().unwrap().is_empty());
    assert!(extra_links(&w, "c1").is_empty());
    w.kernel.borrow_mut().fail_at = None;
    let done = w.engine.attach(&req).unwrap();
    assert_eq!(done.addresses[0].0.to_string(), "10.103.19.1");
}

#[test]
fn rollback_never_attaches_to_the_host_itself() {
    let mut w = world(&[]);
    let net = create(&mut w, "n", "eth0", &[]).unwrap();
    let e = w
        .engine
        .connect(&net, &target(HOST), &AttachOptions::default())
        .unwrap_err();
    assert!(e.to_string().contains("own network namespace"), "{e}");
    assert_eq!(extra_links(&w, HOST), ["eth0"]);
}
