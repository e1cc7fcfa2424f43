//! `mvnet-fleet-sim`: many hosts allocating from one shared pool at once, IPAM only (no
//! links): each simulated host is a process with its own state root and host identity,
//! allocating through mvnet's store (`FleetStore` over SQLite) against one etcd. Prints
//! the throughput, the retries per allocation and whether every address is distinct.
//!
//!     mvnet-fleet-sim --etcd http://10.103.19.31:2379 --hosts 100 --per-host 100

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use clap::Parser;
use mvnet_core::fleet::FleetStore;
use mvnet_core::model::{CreateNetworkRequest, Network};
use mvnet_core::store::{EndpointRequest, SqliteStore, Store};

#[derive(Parser, Debug)]
struct Args {
    /// etcd client URLs.
    #[arg(long)]
    etcd: String,
    #[arg(long, default_value_t = 100)]
    hosts: usize,
    #[arg(long, default_value_t = 100)]
    per_host: usize,
    /// The shared subnet (large enough for hosts x per-host addresses).
    #[arg(long, default_value = "10.200.0.0/16")]
    subnet: String,
    /// Where the simulated hosts keep their state (removed at the end).
    #[arg(long, default_value = "/dev/shm/mvnet-fleet-sim")]
    dir: PathBuf,
    /// Internal: run as simulated host N.
    #[arg(long, hide = true)]
    host: Option<usize>,
}

fn network(args: &Args) -> Network {
    let req = CreateNetworkRequest {
        name: "sim".into(),
        subnets: vec![args.subnet.clone()],
        options: vec!["parent=sim0".into(), "probe_ms=0".into()],
        ipam_options: vec!["pool=scale".into(), format!("etcd={}", args.etcd)],
        ..Default::default()
    };
    let v = req.validate().expect("a valid pool network");
    Network {
        id: mvnet_core::ids::new_id(),
        name: "sim".into(),
        driver: v.driver,
        created: mvnet_core::model::time::now_rfc3339(),
        pools: v.pools,
        internal: false,
        ipv6: false,
        ipv4_disabled: false,
        dhcp: false,
        fleet: v.fleet,
        labels: Default::default(),
        options: v.options,
    }
}

/// One simulated host: its own root, its own pool network, `per_host` allocations.
fn host(args: &Args, n: usize) -> serde_json::Value {
    let root = args.dir.join(format!("h{n}"));
    std::env::set_var("MVNET_HOST_NAME", format!("sim{n}"));
    std::env::set_var("MVNET_NO_FLEET_KEEPER", "1");
    let inner = SqliteStore::open(&root).expect("a state root");
    let mut store = FleetStore::new(&root, Box::new(inner));
    let net = network(args);
    store
        .create_network(&net, &|_| Ok(()), false)
        .expect("the pool network");
    let started = Instant::now();
    let mut addresses = Vec::new();
    let mut errors = Vec::new();
    for i in 0..args.per_host {
        let req = EndpointRequest {
            container_id: format!("h{n}-c{i}"),
            container_name: format!("h{n}-c{i}"),
            netns: String::new(),
            owner_pid: std::process::id(),
            ..Default::default()
        };
        match store.reserve_endpoint(&net, &req) {
            Ok(ep) => addresses.push(ep.ipv4.map(|(ip, _)| ip.to_string()).unwrap_or_default()),
            Err(e) => errors.push(e.to_string()),
        }
    }
    let (tried, won) = store.claim_stats();
    serde_json::json!({
        "host": n,
        "ms": started.elapsed().as_secs_f64() * 1000.0,
        "tried": tried,
        "won": won,
        "addresses": addresses,
        "errors": errors,
    })
}

fn main() {
    let args = Args::parse();
    if let Some(n) = args.host {
        println!("{}", host(&args, n));
        return;
    }
    let _ = std::fs::remove_dir_all(&args.dir);
    mvnet_core::store::root::prepare(&args.dir).expect("the simulation directory");
    let exe = std::env::current_exe().expect("myself");
    let started = Instant::now();
    let children: Vec<_> = (0..args.hosts)
        .map(|n| {
            Command::new(&exe)
                .args(["--etcd", &args.etcd, "--subnet", &args.subnet])
                .arg("--per-host")
                .arg(args.per_host.to_string())
                .arg("--dir")
                .arg(&args.dir)
                .arg("--host")
                .arg(n.to_string())
                .stdout(Stdio::piped())
                .spawn()
                .expect("a simulated host")
        })
        .collect();
    let reports: Vec<serde_json::Value> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("a simulated host's report");
            serde_json::from_slice(&out.stdout).unwrap_or_else(
                |_| serde_json::json!({"errors": [String::from_utf8_lossy(&out.stdout)]}),
            )
        })
        .collect();
    let took = started.elapsed().as_secs_f64();
    let mut all: Vec<String> = reports
        .iter()
        .flat_map(|r| r["addresses"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    let allocated = all.len();
    all.sort();
    all.dedup();
    let tried: u64 = reports.iter().filter_map(|r| r["tried"].as_u64()).sum();
    let won: u64 = reports.iter().filter_map(|r| r["won"].as_u64()).sum();
    let errors: Vec<String> = reports
        .iter()
        .flat_map(|r| r["errors"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e.as_str().map(str::to_string))
        .collect();
    let summary = serde_json::json!({
        "hosts": args.hosts,
        "per_host": args.per_host,
        "allocated": allocated,
        "distinct": all.len(),
        "errors": errors.len(),
        "first_error": errors.first(),
        "seconds": took,
        "allocations_per_second": allocated as f64 / took,
        "claims_tried": tried,
        "retries_per_allocation": (tried.saturating_sub(won)) as f64 / won.max(1) as f64,
    });
    println!("{summary}");
    let _ = std::fs::remove_dir_all(&args.dir);
    if all.len() != allocated || allocated != args.hosts * args.per_host {
        std::process::exit(1);
    }
}
