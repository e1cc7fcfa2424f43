//! Process-level proof of the store's claims: many processes allocate at once without
//! duplicates, and `kill -9` at any moment loses no committed allocation and corrupts nothing.
//! No root needed: these exercise the store only.
//!
//! Child processes are this same test binary re-run with `MVNET_STORE_HELPER` set, which
//! turns the `helper` test into the worker.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use mvnet_core::model::{CreateNetworkRequest, Network};
use mvnet_core::store::{EndpointRequest, SqliteStore, Store};

/// A state root in /tmp, removed on drop even when the test fails.
struct TempRoot(PathBuf);

impl std::ops::Deref for TempRoot {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_root(tag: &str) -> TempRoot {
    let p = std::env::temp_dir().join(format!("mvnet-store-{tag}-{}", mvnet_core::ids::new_id()));
    std::fs::create_dir_all(&p).unwrap();
    TempRoot(p)
}

fn make_network(root: &Path, subnet: &str) -> Network {
    let req = CreateNetworkRequest {
        name: "net".into(),
        subnets: vec![subnet.into()],
        gateways: vec![],
        options: vec!["parent=lab0".into()],
        ..Default::default()
    };
    let v = req.validate().unwrap();
    let net = Network {
        id: mvnet_core::ids::new_id(),
        name: req.name,
        driver: v.driver,
        created: String::new(),
        pools: v.pools,
        internal: false,
        ipv6: false,
        ipv4_disabled: false,
        dhcp: false,
        fleet: None,
        labels: v.labels,
        options: v.options,
    };
    SqliteStore::open(root)
        .unwrap()
        .create_network(&net, &|_| Ok(()), false)
        .unwrap();
    net
}

fn allocate_one(store: &mut SqliteStore, net: &Network, who: &str) -> String {
    let req = EndpointRequest {
        container_id: who.into(),
        container_name: who.into(),
        netns: String::new(),
        ifname: None,
        static_ipv4: None,
        static_ipv6: None,
        mac: None,
        owner_pid: std::process::id(),
        ..Default::default()
    };
    let ep = store.reserve_endpoint(net, &req).unwrap();
    store.activate_endpoint(&ep.id).unwrap();
    ep.ipv4.unwrap().0.to_string()
}

/// The worker: allocates `MVNET_STORE_COUNT` addresses (0 = forever), printing each one only
/// after its transaction committed.
#[test]
fn helper() {
    let Ok(root) = std::env::var("MVNET_STORE_HELPER") else {
        return;
    };
    let count: usize = std::env::var("MVNET_STORE_COUNT").unwrap().parse().unwrap();
    let mut store = SqliteStore::open(Path::new(&root)).unwrap();
    let net = store.network("net").unwrap();
    let me = std::process::id();
    let mut i = 0;
    while count == 0 || i < count {
        let ip = allocate_one(&mut store, &net, &format!("c{me}-{i}"));
        println!("ALLOC {ip}");
        i += 1;
    }
}

fn worker(root: &Path, count: usize) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "helper", "--nocapture", "--test-threads=1"])
        .env("MVNET_STORE_HELPER", root)
        .env("MVNET_STORE_COUNT", count.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    c
}

fn addresses(stdout: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| l.split("ALLOC ").nth(1))
        .filter(|ip| ip.trim().parse::<std::net::IpAddr>().is_ok())
        .map(|ip| ip.trim().to_string())
        .collect()
}

#[test]
fn fifty_processes_get_fifty_distinct_addresses() {
    let root = temp_root("par");
    make_network(&root.0, "10.50.0.0/24");
    let children: Vec<_> = (0..50)
        .map(|_| worker(&root.0, 1).spawn().unwrap())
        .collect();
    let mut all = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success());
        all.extend(addresses(&out.stdout));
    }
    assert_eq!(all.len(), 50, "every process allocated");
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(unique.len(), 50, "duplicates handed out: {all:?}");
    let mut store = SqliteStore::open(&root.0).unwrap();
    assert_eq!(store.check_consistency().unwrap(), Vec::<String>::new());
}

#[test]
fn kill_minus_nine_loses_and_corrupts_nothing() {
    let root = temp_root("kill");
    let net = make_network(&root.0, "10.60.0.0/16");
    let mut committed = Vec::new();
    // Kill at varied moments, including mid-transaction: several workers run at once so the
    // killed one is often holding or waiting for the write lock.
    for round in 0..12u64 {
        let mut kids: Vec<_> = (0..3)
            .map(|_| worker(&root.0, 0).spawn().unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(40 + (round * 37) % 150));
        for k in kids.iter_mut() {
            // SAFETY: kill(2) only sends a signal; no memory is involved.
            unsafe { libc::kill(k.id() as i32, libc::SIGKILL) };
        }
        for k in kids {
            let out = k.wait_with_output().unwrap();
            committed.extend(addresses(&out.stdout));
        }
        let mut store = SqliteStore::open(&root.0).unwrap();
        assert_eq!(
            store.check_consistency().unwrap(),
            Vec::<String>::new(),
            "round {round}"
        );
    }
    assert!(
        committed.len() > 50,
        "workers made progress ({})",
        committed.len()
    );
    // Every address a worker saw committed is still allocated, and none twice.
    let mut store = SqliteStore::open(&root.0).unwrap();
    let mut held = HashSet::new();
    let eps = store.endpoints_of_network(&net.id).unwrap();
    for ep in &eps {
        assert!(
            held.insert(ep.ipv4.unwrap().0.to_string()),
            "duplicate address in store"
        );
    }
    for ip in &committed {
        assert!(held.contains(ip), "committed address {ip} was lost");
    }
    // The store keeps working after all that.
    let next = allocate_one(&mut store, &net, "after");
    assert!(!held.contains(&next));
    assert_eq!(store.check_consistency().unwrap(), Vec::<String>::new());
}

#[test]
fn state_survives_reopen() {
    let root = temp_root("reopen");
    let net = make_network(&root.0, "10.70.0.0/24");
    let ip = {
        let mut s = SqliteStore::open(&root.0).unwrap();
        allocate_one(&mut s, &net, "a")
    };
    let mut s = SqliteStore::open(&root.0).unwrap();
    assert_eq!(s.network("net").unwrap(), net);
    let eps = s.endpoints_of_network(&net.id).unwrap();
    assert_eq!(eps[0].ipv4.unwrap().0.to_string(), ip);
    // The cursor persisted too: the next address follows round-robin.
    assert_eq!(allocate_one(&mut s, &net, "b"), "10.70.0.2");
}

/// A store that stays open (the CNI agent's) keeps parsed networks and prepared statements:
/// a network another process changed or removed meanwhile is read as it is now.
#[test]
fn a_store_kept_open_sees_networks_changed_by_another_process() {
    let root = temp_root("kept-open");
    let net = make_network(&root.0, "10.71.0.0/24");
    let mut kept = SqliteStore::open(&root.0).unwrap();
    assert_eq!(kept.network("net").unwrap(), net);
    assert_eq!(kept.network(&net.id).unwrap(), net);
    let mut changed = net.clone();
    changed.name = "renamed".into();
    changed.labels.insert("k".into(), "v".into());
    SqliteStore::open(&root.0)
        .unwrap()
        .update_network(&changed)
        .unwrap();
    assert_eq!(kept.network(&net.id).unwrap(), changed);
    assert!(kept.network("net").is_err(), "the old name is gone");
    assert_eq!(allocate_one(&mut kept, &changed, "a"), "10.71.0.1");
    SqliteStore::open(&root.0)
        .unwrap()
        .remove_network(&net.id)
        .unwrap_err(); // it has an endpoint
    assert_eq!(kept.network("renamed").unwrap(), changed);
}

/// A probe's finding: the address is recorded as LAN-held, the endpoint moves to the next
/// one (MAC following it), the allocator skips the held address, a static request may still
/// take it, and removing the network forgets it. The store stays consistent throughout.
#[test]
fn lan_conflicts_are_skipped_listed_and_forgotten() {
    let root = temp_root("conflicts");
    let net = make_network(&root.0, "10.71.0.0/29");
    let mut s = SqliteStore::open(&root.0).unwrap();
    let req = |who: &str, ip: Option<&str>| EndpointRequest {
        container_id: who.into(),
        container_name: who.into(),
        netns: String::new(),
        ifname: None,
        static_ipv4: ip.map(|i| i.parse().unwrap()),
        static_ipv6: None,
        mac: None,
        owner_pid: std::process::id(),
        ..Default::default()
    };
    let ep = s.reserve_endpoint(&net, &req("a", None)).unwrap();
    let first = ep.ipv4.unwrap().0;
    assert_eq!(first.to_string(), "10.71.0.1");
    let printer: mvnet_core::model::MacAddr = "00:11:22:33:44:55".parse().unwrap();
    let moved = s
        .replace_conflicting_address(&net, &ep.id, first, Some(printer))
        .unwrap();
    assert_eq!(moved.ipv4.unwrap().0.to_string(), "10.71.0.2");
    assert_eq!(
        moved.mac.to_string(),
        "02:42:0a:47:00:02",
        "the MAC follows the address"
    );
    assert_eq!(s.endpoints_of_network(&net.id).unwrap()[0], moved);
    let listed = s.lan_conflicts(&net).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].ip, listed[0].mac), (first, Some(printer)));
    assert_eq!(s.check_consistency().unwrap(), Vec::<String>::new());

    // Round-robin wraps through the whole /29 (.1-.6): .1 is never handed out again.
    let mut got = Vec::new();
    for i in 0..4 {
        let e = s
            .reserve_endpoint(&net, &req(&format!("b{i}"), None))
            .unwrap();
        got.push(e.ipv4.unwrap().0.to_string());
    }
    assert_eq!(got, ["10.71.0.3", "10.71.0.4", "10.71.0.5", "10.71.0.6"]);
    let full = s.reserve_endpoint(&net, &req("c", None)).unwrap_err();
    assert!(full.to_string().contains("no free address"), "{full}");

    // Asked for by name, the held address is the endpoint's (the probe decides); releasing
    // it does not bring the stale record back.
    let taker = s
        .reserve_endpoint(&net, &req("d", Some("10.71.0.1")))
        .unwrap();
    assert!(s.lan_conflicts(&net).unwrap().is_empty());
    assert_eq!(s.check_consistency().unwrap(), Vec::<String>::new());
    s.remove_endpoint(&taker.id).unwrap();
    s.record_lan_conflict(&net, first, None).unwrap();
    assert_eq!(s.lan_conflicts(&net).unwrap()[0].mac, None);
    assert_eq!(s.check_consistency().unwrap(), Vec::<String>::new());

    // Clearing and network removal forget them.
    assert_eq!(s.clear_lan_conflicts(&net).unwrap(), 1);
    s.record_lan_conflict(&net, first, Some(printer)).unwrap();
    for e in s.endpoints_of_network(&net.id).unwrap() {
        s.remove_endpoint(&e.id).unwrap();
    }
    s.remove_network(&net.id).unwrap();
    assert_eq!(s.check_consistency().unwrap(), Vec::<String>::new());
    let again = make_network(&root.0, "10.71.0.0/29");
    let e = s
        .reserve_endpoint(&again, &req("e", Some("10.71.0.1")))
        .unwrap();
    assert_eq!(e.ipv4.unwrap().0, first);
}

/// A LAN conflict outlives the network that found it when another network on the same LAN
/// covers the address.
#[test]
fn lan_conflicts_pass_to_a_network_that_still_covers_them() {
    let root = temp_root("heir");
    let a = make_network(&root.0, "10.72.0.0/24");
    let mut s = SqliteStore::open(&root.0).unwrap();
    let mut b = a.clone();
    b.id = mvnet_core::ids::new_id();
    b.name = "b".into();
    b.pools[0].ip_range = Some("10.72.0.128/25".parse().unwrap());
    s.create_network(&b, &|_| Ok(()), false).unwrap();
    let ip = "10.72.0.9".parse().unwrap();
    s.record_lan_conflict(&a, ip, None).unwrap();
    s.remove_network(&a.id).unwrap();
    assert_eq!(s.lan_conflicts(&b).unwrap()[0].ip, ip);
    assert_eq!(s.check_consistency().unwrap(), Vec::<String>::new());
    s.remove_network(&b.id).unwrap();
    assert_eq!(s.check_consistency().unwrap(), Vec::<String>::new());
}

/// Issue 19, item 5: an endpoint left `creating` by a dead process gives its address back
/// *and* is handed to the caller, whose job is to delete its half-made link.
#[test]
fn abandoned_endpoints_are_handed_back_for_their_links() {
    let root = temp_root("reclaim");
    let net = make_network(&root.0, "10.72.0.0/29");
    let mut s = SqliteStore::open(&root.0).unwrap();
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let req = |who: &str, pid: u32| EndpointRequest {
        container_id: who.into(),
        container_name: who.into(),
        netns: format!("/run/netns/{who}"),
        ifname: None,
        owner_pid: pid,
        ..Default::default()
    };
    let abandoned = s.reserve_endpoint(&net, &req("a", dead_pid)).unwrap();
    assert!(s.take_reclaimed().is_empty());
    let next = s
        .reserve_endpoint(&net, &req("b", std::process::id()))
        .unwrap();
    let reclaimed = s.take_reclaimed();
    assert_eq!(reclaimed.len(), 1);
    assert_eq!(reclaimed[0].id, abandoned.id);
    assert_eq!(reclaimed[0].netns, "/run/netns/a");
    assert_eq!(reclaimed[0].mac, abandoned.mac);
    assert!(s.take_reclaimed().is_empty(), "handed back once");
    assert_ne!(next.id, abandoned.id);
    assert!(s.check_consistency().unwrap().is_empty());
}

/// Issue 19, item 2: addresses the host holds are skipped by the allocator and refused by
/// name.
#[test]
fn host_addresses_are_never_allocated() {
    let root = temp_root("hostaddr");
    let net = make_network(&root.0, "10.73.0.0/29");
    let mut s = SqliteStore::open(&root.0).unwrap();
    let host = vec![("10.73.0.2".parse().unwrap(), "eth0".to_string())];
    let req = |who: &str, ip: Option<&str>| EndpointRequest {
        container_id: who.into(),
        container_name: who.into(),
        static_ipv4: ip.map(|i| i.parse().unwrap()),
        owner_pid: std::process::id(),
        host_addresses: host.clone(),
        ..Default::default()
    };
    let e = s
        .reserve_endpoint(&net, &req("x", Some("10.73.0.2")))
        .unwrap_err();
    assert!(
        e.to_string().contains("belongs to this host") && e.to_string().contains("eth0"),
        "{e}"
    );
    let got: Vec<String> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|w| {
            s.reserve_endpoint(&net, &req(w, None))
                .unwrap()
                .ipv4
                .unwrap()
                .0
                .to_string()
        })
        .collect();
    assert!(!got.contains(&"10.73.0.2".to_string()), "{got:?}");
    assert_eq!(got.len(), 5, "the rest of the /29 is still handed out");
    let e = s.reserve_endpoint(&net, &req("f", None)).unwrap_err();
    assert!(e.to_string().contains("no free address"), "{e}");
}

/// Background processes (keepers, agents, monitors) open with `open_existing`: a removed
/// state root, or one without its database, stays as it is.
#[test]
fn open_existing_never_creates_a_root_or_a_database() {
    let root = temp_root("existing");
    let gone = root.join("removed");
    assert!(matches!(
        SqliteStore::open_existing(&gone),
        Err(mvnet_core::Error::NotFound(_))
    ));
    assert!(!gone.exists(), "the root came back");
    assert!(matches!(
        SqliteStore::open_existing(&root),
        Err(mvnet_core::Error::NotFound(_))
    ));
    assert!(!root.join("mvnet.db").exists(), "a database was created");
    // An emptied database is not filled in either.
    std::fs::write(root.join("mvnet.db"), b"").unwrap();
    assert!(SqliteStore::open_existing(&root).is_err());
    assert_eq!(std::fs::metadata(root.join("mvnet.db")).unwrap().len(), 0);
    std::fs::remove_file(root.join("mvnet.db")).unwrap();
    // Made by a command, it opens.
    drop(SqliteStore::open(&root).unwrap());
    let mut s = SqliteStore::open_existing(&root).unwrap();
    assert!(s.networks().unwrap().is_empty());
}
