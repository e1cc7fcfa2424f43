//! IPAM allocation cost as a /16 fills: time per allocation at 1, 1,000 and 60,000 existing
//! allocations, for the pure allocator and through the real SQLite store (each allocation a
//! full reserve + activate, i.e. two committed transactions, as an attach does).
//!
//! Run: cargo bench -p mvnet-core --bench ipam        (no root needed)
//! It reports the median of a window of allocations taken at each fill level, and the ratio
//! to the first level: flat means O(1).

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::IpAddr;
use std::time::Instant;

use mvnet_core::ipam::Pool;
use mvnet_core::model::{CreateNetworkRequest, Network};
use mvnet_core::store::{EndpointRequest, SqliteStore, Store};

const LEVELS: [usize; 3] = [1, 1_000, 60_000];
const WINDOW: usize = 200;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Allocates up to each level, then times WINDOW allocations there; returns ns per alloc.
fn run_levels(mut alloc_one: impl FnMut()) -> Vec<f64> {
    let mut done = 0usize;
    let mut out = Vec::new();
    for level in LEVELS {
        while done < level {
            alloc_one();
            done += 1;
        }
        let mut samples = Vec::with_capacity(WINDOW);
        for _ in 0..WINDOW {
            let t = Instant::now();
            alloc_one();
            samples.push(t.elapsed().as_nanos() as f64);
            done += 1;
        }
        out.push(median(samples));
    }
    out
}

fn main() {
    let subnet = "10.20.0.0/16";
    // Pure allocator over a hash set.
    let pool = Pool::new(
        subnet.parse().unwrap(),
        Some("10.20.0.1".parse().unwrap()),
        None,
        vec![],
    )
    .unwrap();
    let mut taken: HashSet<IpAddr> = HashSet::new();
    let mut cursor = None;
    let pure = run_levels(|| {
        let ip = pool
            .allocate::<Infallible>(cursor, taken.len() as u128, |ip| Ok(taken.contains(&ip)))
            .unwrap()
            .unwrap();
        taken.insert(ip);
        cursor = Some(ip);
    });

    // The real store, on disk, WAL mode.
    let root = std::env::temp_dir().join(format!("mvnet-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let mut store = SqliteStore::open(&root).unwrap();
    let req = CreateNetworkRequest {
        name: "bench".into(),
        subnets: vec![subnet.into()],
        gateways: vec!["10.20.0.1".into()],
        options: vec!["parent=lab0".into()],
        ..Default::default()
    };
    let v = req.validate().unwrap();
    let net = Network {
        id: mvnet_core::ids::new_id(),
        name: req.name.clone(),
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
    store.create_network(&net, &|_| Ok(()), false).unwrap();
    let mut n = 0u64;
    let stored = run_levels(|| {
        n += 1;
        let r = EndpointRequest {
            container_id: format!("c{n}"),
            container_name: format!("c{n}"),
            netns: String::new(),
            ifname: None,
            static_ipv4: None,
            static_ipv6: None,
            mac: None,
            owner_pid: std::process::id(),
            ..Default::default()
        };
        let ep = store.reserve_endpoint(&net, &r).unwrap();
        store.activate_endpoint(&ep.id).unwrap();
    });
    let _ = std::fs::remove_dir_all(&root);

    println!("IPAM allocation in a /16 (median of {WINDOW} allocations at each fill level)");
    println!(
        "{:>20} {:>16} {:>8} {:>22} {:>8}",
        "existing allocations", "pure allocator", "ratio", "SQLite store (2 txns)", "ratio"
    );
    for (i, level) in LEVELS.iter().enumerate() {
        println!(
            "{:>20} {:>13.0} ns {:>7.2}x {:>19.1} us {:>7.2}x",
            level,
            pure[i],
            pure[i] / pure[0],
            stored[i] / 1000.0,
            stored[i] / stored[0]
        );
    }
}
