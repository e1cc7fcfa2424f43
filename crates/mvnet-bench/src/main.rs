//! `mvnet-bench`: mvnet against the reference CNI plugin, netavark, an iproute2 floor and
//! Docker, in one run on one private lab, interleaved so machine noise hits all alike.
//! Prints medians, p90s and ratios to mvnet; writes raw numbers (JSON) and SVG plots.
//!
//! Run it through scripts/bench.sh, which installs the contestants first.

mod contestants;
mod docker_plugin;
mod proc;
mod svg;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use serde_json::{json, Value};

use contestants::{nth_ip, Cni, Contestant, Ctx, Docker, Floor, Iproute2, MvnetCli, Netavark};
use mvnet_core::netns;
use mvnet_lab::LabGuard;
use proc::{median, percentile, run, run_in, Sample};

#[derive(Parser, Debug)]
#[command(
    about = "Benchmark mvnet against the reference CNI plugin, netavark, iproute2 and Docker"
)]
struct Args {
    /// Output directory for results.json, table.md and the plots.
    #[arg(long, default_value = "bench-out")]
    out: PathBuf,
    /// Attach/detach rounds per contestant.
    #[arg(long, default_value_t = 200)]
    n: usize,
    /// Endpoints for the scale curve (blocks of 100).
    #[arg(long, default_value_t = 2000)]
    scale: usize,
    /// Concurrent ADDs.
    #[arg(long, default_value_t = 100)]
    parallel: usize,
    /// Containers for the bulk teardown.
    #[arg(long, default_value_t = 500)]
    teardown: usize,
    /// iperf3 seconds per data-plane run.
    #[arg(long, default_value_t = 5)]
    iperf_secs: u32,
    /// Leave Docker out (the smoke test does; the full run needs docker.io).
    #[arg(long)]
    no_docker: bool,
    /// Rounds of the Docker plugin section (docker run/rm and connect/disconnect, with
    /// -d mvnet and -d macvlan each).
    #[arg(long, default_value_t = 20)]
    docker_rounds: usize,
    /// Run only the Docker plugin section (prints its table).
    #[arg(long)]
    docker_only: bool,
    /// The mvnet and mvnet-cni binaries (default: next to this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where the static (musl) builds of mvnet, mvnet-cni and mvnet-floor are, as the
    /// package ships them (scripts/bench.sh passes target/x86_64-unknown-linux-musl/release);
    /// default: the --bin-dir ones.
    #[arg(long)]
    static_dir: Option<PathBuf>,
}

/// The exec-only floor contestant (its name in contestants.rs).
pub const FLOOR: &str = "exec only (static binary, same netlink calls, no IPAM/store)";

/// The contestant on a shared pool (etcd).
const CNI_POOL: &str = "mvnet-cni (shared pool, etcd)";
/// The same with four addresses claimed ahead (`"spares": 4`).
const CNI_SPARES: &str = "mvnet-cni (shared pool, etcd, 4 spares)";
/// The shared-pool contestants: their etcd requests are counted per operation.
const POOLED: [&str; 2] = [CNI_POOL, CNI_SPARES];

/// Transactions and reads etcd's members have served so far (from their metrics).
fn etcd_requests(etcd: &mvnet_lab::testkit::EtcdCluster) -> (f64, f64) {
    let mut txn = 0.0;
    let mut range = 0.0;
    for url in etcd.endpoints().split(',') {
        // Read while it runs: the metrics are more than a pipe holds.
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "--noproxy",
                "*",
                "--max-time",
                "5",
                &format!("{url}/metrics"),
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for l in out
            .lines()
            .filter(|l| l.starts_with("grpc_server_handled_total{"))
        {
            let n: f64 = l
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            if l.contains("grpc_method=\"Txn\"") {
                txn += n;
            } else if l.contains("grpc_method=\"Range\"") {
                range += n;
            }
        }
    }
    (txn, range)
}

fn stats(v: &[f64]) -> Value {
    json!({"median": median(v), "p90": percentile(v, 0.9), "n": v.len()})
}

/// Fresh named namespaces for targets, removed on drop.
struct Targets(Vec<String>);

impl Targets {
    fn make(&mut self, name: String) -> String {
        netns::create_named(&name).expect("create target namespace");
        self.0.push(name.clone());
        name
    }
    fn remove(&mut self, name: &str) {
        let _ = netns::remove_persistent(&netns::named_path(name));
        self.0.retain(|n| n != name);
    }
}

impl Drop for Targets {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = netns::remove_persistent(&netns::named_path(n));
        }
    }
}

/// Namespaces held only by an open file (no bind mount): thousands of them cost nothing
/// extra, whereas each named namespace adds a mount and mounts get slower as they pile up.
/// Plugins get them as /proc/PID/fd/N paths.
struct FdNamespaces(Vec<std::fs::File>);

impl FdNamespaces {
    fn make(&mut self) -> String {
        let f = std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: unshare(2) changes only this thread's namespaces; no memory is involved.
                assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
                std::fs::File::open("/proc/thread-self/ns/net").expect("own netns")
            })
            .join()
            .unwrap()
        });
        let path = format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            std::os::fd::AsRawFd::as_raw_fd(&f)
        );
        self.0.push(f);
        path
    }
}

struct Workdir(PathBuf);
impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Contestant labels the report refers to.
const CLI: &str = "mvnet network connect (CLI, probe off)";
const CLI_PROBE: &str = "mvnet network connect (CLI, probe 30 ms = default)";
const CNI_PROBE: &str = "mvnet-cni (built-in IPAM, probe 30 ms)";

fn main() {
    let args = Args::parse();
    assert_eq!(
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() },
        0,
        "mvnet-bench needs root (it builds a lab of namespaces)"
    );
    let tag = mvnet_core::ids::new_id()[..6].to_string();
    let bin_dir = args.bin_dir.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf()
    });
    let static_dir = args.static_dir.clone().unwrap_or_else(|| bin_dir.clone());
    let lab = LabGuard::up(&format!("bn{tag}")).expect("lab comes up");
    let work = Workdir(std::env::temp_dir().join(format!("mvnet-bench-{tag}")));
    std::fs::create_dir_all(&work.0).unwrap();
    let ctx = Ctx {
        host_netns: lab.lab.host_netns(),
        work: work.0.clone(),
        mvnet: static_dir.join("mvnet"),
        mvnet_cni: static_dir.join("mvnet-cni"),
    };
    std::fs::create_dir_all(&args.out).unwrap();
    // Run from the lab's docker host, as a container runtime on that host would: every
    // contestant is then a plain spawn, with no namespace switch in the measured path.
    let host = std::fs::File::open(&ctx.host_netns).unwrap();
    // SAFETY: setns(2) on an fd that is open for the call; it changes only this thread's namespace.
    if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&host), libc::CLONE_NEWNET) } != 0 {
        panic!(
            "cannot enter the lab host namespace: {}",
            std::io::Error::last_os_error()
        );
    }
    if args.docker_only {
        let pair = docker_plugin::DockerPair::start(&ctx, &bin_dir.join("mvnet-docker"))
            .unwrap_or_else(|e| panic!("cannot start dockerd with mvnet-docker: {e}"));
        let dp = pair.measure(args.docker_rounds);
        pair.stop();
        println!("{}", docker_plugin::table(&dp));
        return;
    }
    let mut targets = Targets(Vec::new());
    let mvnet = |a: &[&str]| {
        let mut argv = vec![ctx.mvnet.to_str().unwrap()];
        argv.extend_from_slice(a);
        let (s, out) = run(
            &argv,
            &[("MVNET_ROOT", ctx.cli_root().display().to_string())],
            b"",
        );
        assert!(s.ok, "mvnet {a:?}: {out}");
        out
    };
    // The CLI twice: probing off (what Docker does) and at its default 30 ms window.
    mvnet(&[
        "network",
        "create",
        "--subnet=10.206.0.0/16",
        "--gateway=10.206.0.1",
        "-o",
        "parent=eth0",
        "-o",
        "probe_ms=0",
        "bench-cli",
    ]);
    mvnet(&[
        "network",
        "create",
        "--subnet=10.208.0.0/16",
        "--gateway=10.208.0.1",
        "-o",
        "parent=eth0",
        "bench-probe",
    ]);
    let uname = std::process::Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mut results = json!({
        "machine": {"kernel": uname, "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
        "params": {"n": args.n, "scale": args.scale, "parallel": args.parallel, "teardown": args.teardown},
    });

    // A 3-member etcd on the lab's LAN (data on tmpfs) for the shared-pool contestant.
    let etcd = mvnet_lab::testkit::EtcdCluster::start(&lab.lab, 3);

    // ----- 1. attach/detach latency, interleaved --------------------------------------
    let builtin = Cni::new(
        "mvnet-cni (built-in IPAM)",
        &ctx.mvnet_cni,
        json!({"type": "mvnet", "subnet": "10.201.0.0/16", "routes": [{"dst": "0.0.0.0/0"}]}),
    );
    let mut contest: Vec<Box<dyn Contestant>> = vec![
        Box::new(builtin.clone()),
        Box::new(Cni::new(
            "mvnet-cni + host-local",
            &ctx.mvnet_cni,
            json!({"type": "host-local", "subnet": "10.202.0.0/16", "routes": [{"dst": "0.0.0.0/0"}], "dataDir": ctx.work.join("hl-mvnet")}),
        )),
        Box::new(Cni::new(
            "reference macvlan + host-local",
            Path::new("/usr/lib/cni/macvlan"),
            json!({"type": "host-local", "subnet": "10.203.0.0/16", "routes": [{"dst": "0.0.0.0/0"}], "dataDir": ctx.work.join("hl-ref")}),
        )),
        Box::new(Netavark {
            bin: PathBuf::from("/usr/lib/podman/netavark"),
        }),
        Box::new(Iproute2),
        Box::new(Floor {
            bin: static_dir.join("mvnet-floor"),
        }),
        Box::new(MvnetCli {
            label: CLI.into(),
            network: "bench-cli".into(),
        }),
        Box::new(MvnetCli {
            label: CLI_PROBE.into(),
            network: "bench-probe".into(),
        }),
        Box::new(
            Cni::new(
                CNI_PROBE,
                &ctx.mvnet_cni,
                json!({"type": "mvnet", "subnet": "10.207.0.0/16", "routes": [{"dst": "0.0.0.0/0"}]}),
            )
            .with("probe", json!(true)),
        ),
        Box::new(Cni::new(
            CNI_POOL,
            &ctx.mvnet_cni,
            json!({"type": "mvnet", "subnet": "10.209.0.0/16", "routes": [{"dst": "0.0.0.0/0"}],
                   "pool": "bench", "etcd": etcd.endpoints()}),
        )),
        Box::new(Cni::new(
            CNI_SPARES,
            &ctx.mvnet_cni,
            json!({"type": "mvnet", "subnet": "10.210.0.0/16", "routes": [{"dst": "0.0.0.0/0"}],
                   "pool": "bench-spares", "etcd": etcd.endpoints(), "spares": 4}),
        )),
    ];
    // etcd requests of each shared-pool contestant, counted around its own operations
    // from the second round on: the steady state (the first ADD also records the pool's
    // subnet in etcd, once). (transactions, reads, operations)
    let mut etcd_counts: BTreeMap<&str, (f64, f64, usize)> = BTreeMap::new();
    let docker = if args.no_docker {
        eprintln!("bench: Docker left out (--no-docker)");
        None
    } else {
        match Docker::start(&ctx) {
            Ok(d) => Some(d),
            Err(e) => panic!("cannot start the Docker contestant: {e} (or pass --no-docker)"),
        }
    };
    let mut docker_slot = docker;
    let names: Vec<String> = contest
        .iter()
        .map(|c| c.name().to_string())
        .chain(docker_slot.iter().map(|d| d.name().to_string()))
        .collect();
    let mut adds: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    let mut dels: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    eprintln!(
        "bench: latency, {} rounds x {} contestants",
        args.n,
        names.len()
    );
    // Every target exists before the first measurement and is deleted after the last:
    // tearing a namespace down makes the kernel work for tens of milliseconds in the
    // background, which would land on whichever contestant runs next. Namespaces are held
    // by file descriptor (no mount); only the iproute2 floor gets named ones (`ip -n`).
    let k = contest.len() + docker_slot.is_some() as usize;
    let mut held = FdNamespaces(Vec::new());
    let round_targets: Vec<Vec<String>> = (0..args.n)
        .map(|i| {
            (0..k)
                .map(|j| {
                    if names[j].starts_with("iproute2") {
                        targets.make(format!("bt{tag}-{j}-{i}"))
                    } else {
                        held.make()
                    }
                })
                .collect()
        })
        .collect();
    // Runs one operation; for a shared-pool contestant, counts the etcd requests it made,
    // including what its agent does after the reply (spares topped up): a short settle
    // after it, so that work does not land on the next contestant's clock either.
    let mut timed = |j: usize, i: usize, op: &mut dyn FnMut() -> Sample| -> Sample {
        let pooled = POOLED.iter().find(|p| **p == names[j]);
        let before = match pooled {
            Some(_) if i > 0 => Some(etcd_requests(&etcd)),
            _ => None,
        };
        let s = op();
        if let Some(p) = pooled {
            std::thread::sleep(std::time::Duration::from_millis(30));
            if let Some(b) = before {
                let a = etcd_requests(&etcd);
                let e = etcd_counts.entry(p).or_default();
                e.0 += a.0 - b.0;
                e.1 += a.1 - b.1;
                e.2 += 1;
            }
        }
        s
    };
    for (i, ts) in round_targets.iter().enumerate() {
        let order: Vec<usize> = (0..k).map(|j| (i + j) % k).collect();
        for &j in &order {
            let s = timed(j, i, &mut || match contest.get_mut(j) {
                Some(c) => c.add(&ctx, i, &ts[j]),
                None => docker_slot.as_mut().unwrap().add(&ctx, i, &ts[j]),
            });
            adds.entry(names[j].clone()).or_default().push(s);
        }
        for &j in &order {
            let s = timed(j, i, &mut || match contest.get_mut(j) {
                Some(c) => c.del(&ctx, i, &ts[j]),
                None => docker_slot.as_mut().unwrap().del(&ctx, i, &ts[j]),
            });
            dels.entry(names[j].clone()).or_default().push(s);
        }
    }
    // Per ADD + DEL pair (two operations).
    results["etcd_requests"] = etcd_counts
        .iter()
        .map(|(name, (txn, range, ops))| {
            let pairs = (*ops as f64 / 2.0).max(1.0);
            (
                name.to_string(),
                json!({"txn_per_pair": txn / pairs, "range_per_pair": range / pairs, "pairs": pairs}),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into();
    drop(held);
    for ts in &round_targets {
        for t in ts.iter().filter(|t| !t.starts_with('/')) {
            targets.remove(t);
        }
    }
    if let Some(d) = docker_slot.take() {
        d.stop(&ctx);
    }

    // ----- 1b. mvnet's Docker plugin beside Docker's own macvlan driver ------------------
    if !args.no_docker {
        eprintln!(
            "bench: Docker plugin, {} rounds of run/rm and connect/disconnect per driver",
            args.docker_rounds
        );
        let pair = docker_plugin::DockerPair::start(&ctx, &bin_dir.join("mvnet-docker"))
            .unwrap_or_else(|e| panic!("cannot start dockerd with mvnet-docker: {e}"));
        results["docker_plugin"] = pair.measure(args.docker_rounds);
        pair.stop();
    }
    let wall = |v: &[Sample]| v.iter().map(|s| s.wall_ms).collect::<Vec<_>>();
    let mut latency = serde_json::Map::new();
    for n in &names {
        let (a, d) = (&adds[n], &dels[n]);
        latency.insert(n.clone(), json!({
            "add_ms": stats(&wall(a)), "del_ms": stats(&wall(d)),
            "add_cpu_ms": stats(&a.iter().map(|s| s.cpu_ms).collect::<Vec<_>>()),
            "add_max_rss_kib": stats(&a.iter().map(|s| s.max_rss_kib as f64).collect::<Vec<_>>()),
            "errors": a.iter().chain(d.iter()).filter(|s| !s.ok).count(),
            "add_samples_ms": wall(a), "del_samples_ms": wall(d),
        }));
    }
    results["latency"] = Value::Object(latency);

    // ----- 2. parallel ADDs ---------------------------------------------------------
    // Before the scale section (whose thousands of namespaces the kernel tears down in the
    // background for a while), and alternating contestants over rounds so neither always
    // runs first.
    eprintln!("bench: {} parallel ADDs", args.parallel);
    let contenders = [
        builtin.clone(),
        Cni::new(
            "reference macvlan + host-local",
            Path::new("/usr/lib/cni/macvlan"),
            json!({"type": "host-local", "subnet": "10.214.0.0/16", "dataDir": ctx.work.join("hl-par")}),
        ),
    ];
    let mut walls: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    // Eight rounds (four each): one burst is noisy on a small machine; the median counts.
    for round in 0..8 {
        let c = &contenders[round % 2];
        let mut held = FdNamespaces(Vec::new());
        let ts: Vec<String> = (0..args.parallel).map(|_| held.make()).collect();
        let start = Instant::now();
        let samples: Vec<Sample> = std::thread::scope(|s| {
            let hs: Vec<_> = ts
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let mut c = c.clone();
                    let ctx = &ctx;
                    s.spawn(move || c.add(ctx, i, t))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        walls
            .entry(c.label.clone())
            .or_default()
            .push(start.elapsed().as_secs_f64() * 1e3);
        *errors.entry(c.label.clone()).or_default() += samples.iter().filter(|s| !s.ok).count();
        let mut c2 = c.clone();
        for t in &ts {
            c2.del(&ctx, 0, t);
        }
        drop(held);
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    let mut parallel = serde_json::Map::new();
    for (label, w) in &walls {
        parallel.insert(
            label.clone(),
            json!({"wall_ms": median(w), "rounds_ms": w, "errors": errors[label]}),
        );
    }
    results["parallel"] = Value::Object(parallel);

    // ----- 3. scale: ADD latency as the network fills ---------------------------------
    eprintln!("bench: scale to {} endpoints", args.scale);
    let mut reference = Cni::new(
        "reference macvlan + host-local",
        Path::new("/usr/lib/cni/macvlan"),
        json!({"type": "host-local", "subnet": "10.212.0.0/16", "dataDir": ctx.work.join("hl-scale")}),
    );
    reference.conf["name"] = json!("bench-scale-ref");
    let mut ours = Cni::new(
        "mvnet-cni (built-in IPAM)",
        &ctx.mvnet_cni,
        json!({"type": "mvnet", "subnet": "10.213.0.0/16"}),
    );
    ours.conf["name"] = json!("bench-scale-mvnet");
    let mut curve: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut scale_targets = Vec::new();
    let mut held = FdNamespaces(Vec::new());
    let all_targets: Vec<[String; 3]> = (0..args.scale)
        .map(|_| [held.make(), held.make(), held.make()])
        .collect();
    const KERNEL: &str = "kernel only: ip link add (macvlan)";
    for (i, ts) in all_targets.iter().enumerate() {
        for (j, c) in [&mut ours, &mut reference].into_iter().enumerate() {
            let s = c.add(&ctx, i, &ts[j]);
            assert!(s.ok, "scale: {} ADD {i} failed", c.label);
            curve.entry(c.label.clone()).or_default().push(s.wall_ms);
            scale_targets.push((j, ts[j].clone()));
        }
        // The same kernel work with no plugin at all: does the kernel itself slow down as
        // macvlans pile up on one parent?
        let (s, out) = run(
            &[
                "ip", "link", "add", "link", "eth0", "name", "eth0", "netns", &ts[2], "type",
                "macvlan", "mode", "bridge",
            ],
            &[],
            b"",
        );
        assert!(s.ok, "scale: ip link add {i} failed: {out}");
        curve.entry(KERNEL.to_string()).or_default().push(s.wall_ms);
    }
    let blocks: BTreeMap<String, Vec<f64>> = curve
        .iter()
        .map(|(k, v)| (k.clone(), v.chunks(100).map(median).collect()))
        .collect();
    for (j, t) in scale_targets.drain(..) {
        let c = if j == 0 { &mut ours } else { &mut reference };
        c.del(&ctx, 0, &t);
    }
    drop(held);
    results["scale"] = json!({"block": 100, "add_median_ms_per_block": blocks});

    // ----- 4. data plane: macvlan vs Linux bridge + veth ------------------------------
    eprintln!("bench: data plane");
    results["dataplane"] = dataplane(&ctx, &lab, &mut targets, &tag, args.iperf_secs);

    // ----- 5. bulk teardown ---------------------------------------------------------
    eprintln!("bench: bulk teardown of {}", args.teardown);
    mvnet(&[
        "network",
        "create",
        "--subnet=10.211.0.0/16",
        "-o",
        "parent=eth0",
        // Setup only (the measured part is the rm): no need to wait for probes.
        "-o",
        "probe_ms=0",
        "bench-td",
    ]);
    let names_td: Vec<String> = (0..args.teardown).map(|i| format!("td{i}")).collect();
    for n in &names_td {
        mvnet(&[
            "run",
            "-d",
            "--network",
            "bench-td",
            "--name",
            n,
            "--",
            "sleep",
            "infinity",
        ]);
    }
    let mut rm_args = vec!["rm", "-f"];
    rm_args.extend(names_td.iter().map(String::as_str));
    let start = Instant::now();
    mvnet(&rm_args);
    let mvnet_rm_ms = start.elapsed().as_secs_f64() * 1e3;
    let mut refdel = Cni::new(
        "reference macvlan + host-local",
        Path::new("/usr/lib/cni/macvlan"),
        json!({"type": "host-local", "subnet": "10.215.0.0/16", "dataDir": ctx.work.join("hl-td")}),
    );
    refdel.conf["name"] = json!("bench-td-ref");
    let ts: Vec<String> = (0..args.teardown)
        .map(|i| targets.make(format!("bd{tag}-{i}")))
        .collect();
    for (i, t) in ts.iter().enumerate() {
        refdel.add(&ctx, i, t);
    }
    let start = Instant::now();
    for t in &ts {
        refdel.del(&ctx, 0, t);
    }
    let ref_del_ms = start.elapsed().as_secs_f64() * 1e3;
    for t in &ts {
        targets.remove(t);
    }
    drop(targets);
    // The shared pool's keeper and cluster go before the lab they live on.
    mvnet_core::fleet::keeper::stop(&ctx.work.join("cni-state"));
    drop(etcd);
    let start = Instant::now();
    drop(lab);
    let lab_down_ms = start.elapsed().as_secs_f64() * 1e3;
    results["teardown"] = json!({"count": args.teardown, "mvnet_rm_ms": mvnet_rm_ms, "reference_sequential_del_ms": ref_del_ms, "mvnet_lab_down_ms": lab_down_ms});

    report(&args, &names, results);
}

/// iperf3 and ping between two endpoints, and from one to the LAN peer, on an mvnet macvlan
/// network and on a reference `bridge` CNI network (Linux bridge + veth).
fn dataplane(ctx: &Ctx, lab: &LabGuard, targets: &mut Targets, tag: &str, secs: u32) -> Value {
    let in_ns =
        |ns: &str, argv: &[&str]| run_in(Path::new(&format!("/run/netns/{ns}")), argv, &[], b"");
    let peer = lab.lab.netns_name("peer");
    // The peer reaches the bridge network through the docker host, which routes for it.
    let host = mvnet_core::netns::Netns::open(lab.lab.host_netns()).unwrap();
    mvnet_core::netns::run_in(&host, || {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
    })
    .unwrap()
    .unwrap();
    let run = |argv: &[&str], env: &[(&str, String)], stdin: &[u8]| run(argv, env, stdin);
    in_ns(
        &peer,
        &[
            "ip",
            "route",
            "add",
            "10.209.0.0/24",
            "via",
            mvnet_lab::HOST_IP,
        ],
    );
    let env = [("MVNET_ROOT", ctx.cli_root().display().to_string())];
    run(
        &[
            ctx.mvnet.to_str().unwrap(),
            "network",
            "create",
            "--subnet=10.103.19.0/24",
            "--ip-range=10.103.19.128/26",
            "-o",
            "parent=eth0",
            "bench-dp",
        ],
        &env,
        b"",
    );
    let bridge_conf = json!({"cniVersion": "1.0.0", "name": "bench-br", "type": "bridge", "bridge": "cnibr0", "isGateway": true, "ipMasq": false,
        "ipam": {"type": "host-local", "subnet": "10.209.0.0/24", "routes": [{"dst": "0.0.0.0/0"}], "dataDir": ctx.work.join("hl-br")}});
    let mut out = serde_json::Map::new();
    for kind in [
        "mvnet macvlan (bridge mode)",
        "Linux bridge + veth (reference bridge plugin)",
    ] {
        let a = targets.make(format!("dp{tag}-{}-a", out.len()));
        let b = targets.make(format!("dp{tag}-{}-b", out.len()));
        let mut ip_of = BTreeMap::new();
        for t in [&a, &b] {
            let r = if kind.starts_with("mvnet") {
                run(
                    &[
                        ctx.mvnet.to_str().unwrap(),
                        "network",
                        "connect",
                        "bench-dp",
                        "--netns",
                        &format!("/run/netns/{t}"),
                    ],
                    &env,
                    b"",
                )
            } else {
                let e = [
                    ("CNI_COMMAND", "ADD".to_string()),
                    ("CNI_CONTAINERID", format!("br-{t}")),
                    ("CNI_NETNS", format!("/run/netns/{t}")),
                    ("CNI_IFNAME", "eth0".to_string()),
                    ("CNI_PATH", "/usr/lib/cni".to_string()),
                ];
                run(
                    &["/usr/lib/cni/bridge"],
                    &e,
                    bridge_conf.to_string().as_bytes(),
                )
            };
            assert!(r.0.ok, "{kind} attach: {}", r.1);
            let (_, addr) = in_ns(t, &["ip", "-4", "-o", "addr", "show", "eth0"]);
            let ip = addr
                .split_whitespace()
                .nth(3)
                .unwrap_or("")
                .split('/')
                .next()
                .unwrap_or("")
                .to_string();
            ip_of.insert(t.clone(), ip);
        }
        let iperf = |server_ns: &str, server_ip: &str, client_ns: &str| -> f64 {
            let mut c = mvnet_core::netns::command_in(
                Path::new(&format!("/run/netns/{server_ns}")),
                "iperf3",
            )
            .unwrap();
            c.args(["-s", "-1"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            let mut server = c.spawn().expect("iperf3 is installed");
            std::thread::sleep(std::time::Duration::from_millis(300));
            let (_, json_out) = in_ns(
                client_ns,
                &["iperf3", "-c", server_ip, "-t", &secs.to_string(), "-J"],
            );
            let _ = server.kill();
            let _ = server.wait();
            serde_json::from_str::<Value>(&json_out)
                .ok()
                .and_then(|v| v["end"]["sum_received"]["bits_per_second"].as_f64())
                .map(|b| b / 1e9)
                .unwrap_or(f64::NAN)
        };
        let rtt = |client_ns: &str, ip: &str| -> f64 {
            let (_, o) = in_ns(client_ns, &["ping", "-c", "50", "-i", "0.01", "-q", ip]);
            o.split("= ")
                .nth(1)
                .and_then(|s| s.split('/').nth(1))
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(f64::NAN)
        };
        let (ipa, _) = (ip_of[&a].clone(), ());
        out.insert(
            kind.to_string(),
            json!({
                "container_to_container_gbit_s": iperf(&a, &ipa, &b),
                "container_to_container_rtt_ms": rtt(&b, &ipa),
                "container_to_lan_peer_gbit_s": iperf(&peer, mvnet_lab::PEER_IP, &b),
                "container_to_lan_peer_rtt_ms": rtt(&b, mvnet_lab::PEER_IP),
            }),
        );
        targets.remove(&a);
        targets.remove(&b);
    }
    Value::Object(out)
}

fn report(args: &Args, names: &[String], mut results: Value) {
    let lat = results["latency"].clone();
    let me = "mvnet-cni (built-in IPAM)";
    let m = |n: &str, f: &str| lat[n][f]["median"].as_f64().unwrap_or(f64::NAN);
    let mut table = String::from("| contestant | ADD median (ms) | ADD p90 | DEL median (ms) | DEL p90 | ADD vs mvnet-cni | peak RSS (KiB) | CPU (ms) | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for n in names {
        table += &format!(
            "| {n} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1}x | {:.0} | {:.2} | {} |\n",
            m(n, "add_ms"),
            lat[n]["add_ms"]["p90"].as_f64().unwrap_or(f64::NAN),
            m(n, "del_ms"),
            lat[n]["del_ms"]["p90"].as_f64().unwrap_or(f64::NAN),
            m(n, "add_ms") / m(me, "add_ms"),
            m(n, "add_max_rss_kib"),
            m(n, "add_cpu_ms"),
            lat[n]["errors"]
        );
    }
    let blocks = &results["scale"]["add_median_ms_per_block"].clone();
    let flat = |n: &str| {
        let v: Vec<f64> = blocks[n]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        v.iter().cloned().fold(f64::MIN, f64::max) / v.iter().cloned().fold(f64::MAX, f64::min)
    };
    let td = &results["teardown"].clone();
    let par = &results["parallel"].clone();
    table += &format!("\nScale (ADD median per block of 100, 0..{}): mvnet-cni max/min = {:.2}, reference = {:.2}, kernel only (ip link add) = {:.2}\n",
        args.scale, flat(me), flat("reference macvlan + host-local"), flat("kernel only: ip link add (macvlan)"));
    table += &format!("Parallel ({} ADDs at once): mvnet-cni {:.0} ms wall, {} errors; reference {:.0} ms wall, {} errors\n",
        args.parallel, par[me]["wall_ms"].as_f64().unwrap_or(f64::NAN), par[me]["errors"],
        par["reference macvlan + host-local"]["wall_ms"].as_f64().unwrap_or(f64::NAN), par["reference macvlan + host-local"]["errors"]);
    table += &format!("Bulk teardown of {}: mvnet rm -f {:.0} ms; {} sequential reference DELs {:.0} ms ({:.1}x); mvnet lab down {:.0} ms\n",
        args.teardown, td["mvnet_rm_ms"].as_f64().unwrap_or(f64::NAN), args.teardown, td["reference_sequential_del_ms"].as_f64().unwrap_or(f64::NAN),
        td["reference_sequential_del_ms"].as_f64().unwrap_or(f64::NAN) / td["mvnet_rm_ms"].as_f64().unwrap_or(f64::NAN), td["mvnet_lab_down_ms"].as_f64().unwrap_or(f64::NAN));
    let dp = results["docker_plugin"].clone();
    let dop = |driver: &str, op: &str| {
        dp["ops"][format!("{driver} {op}")]["median_ms"]
            .as_f64()
            .unwrap_or(f64::NAN)
    };
    if !dp.is_null() {
        table += &docker_plugin::table(&dp);
    }
    table += "\n| data plane | container-container Gbit/s | RTT ms | container-LAN peer Gbit/s | RTT ms |\n|---|---:|---:|---:|---:|\n";
    for (k, v) in results["dataplane"]
        .as_object()
        .cloned()
        .unwrap_or_default()
    {
        table += &format!(
            "| {k} | {:.1} | {:.3} | {:.1} | {:.3} |\n",
            v["container_to_container_gbit_s"]
                .as_f64()
                .unwrap_or(f64::NAN),
            v["container_to_container_rtt_ms"]
                .as_f64()
                .unwrap_or(f64::NAN),
            v["container_to_lan_peer_gbit_s"]
                .as_f64()
                .unwrap_or(f64::NAN),
            v["container_to_lan_peer_rtt_ms"]
                .as_f64()
                .unwrap_or(f64::NAN)
        );
    }
    table += &format!(
        "\nConflict probing (window 30 ms; nobody answers, so every probe waits the whole window): CLI connect {:.1} ms with vs {:.1} ms without (+{:.1} ms); CNI ADD {:.1} ms with vs {:.1} ms without (+{:.1} ms)\n",
        m(CLI_PROBE, "add_ms"),
        m(CLI, "add_ms"),
        m(CLI_PROBE, "add_ms") - m(CLI, "add_ms"),
        m(CNI_PROBE, "add_ms"),
        m(me, "add_ms"),
        m(CNI_PROBE, "add_ms") - m(me, "add_ms"),
    );
    let er = &results["etcd_requests"];
    let per_pair = |name: &str, what: &str| er[name][what].as_f64().unwrap_or(f64::NAN);
    table += &format!(
        "\nShared pool (etcd, 3 members on the lab LAN, data on tmpfs): ADD {:.2} ms vs {:.2} ms with the local store ({:.2}x); etcd requests per ADD + DEL pair: {:.2} transactions, {:.2} reads (an ADD claims in one transaction; a DEL reads its claim, then deletes it guarded by that read)\n",
        m(CNI_POOL, "add_ms"),
        m(me, "add_ms"),
        m(CNI_POOL, "add_ms") / m(me, "add_ms"),
        per_pair(CNI_POOL, "txn_per_pair"),
        per_pair(CNI_POOL, "range_per_pair"),
    );
    table += &format!(
        "\nShared pool with 4 spares (`\"spares\": 4`): ADD {:.2} ms ({:.2}x the local store), DEL {:.2} ms; etcd requests per ADD + DEL pair: {:.2} transactions, {:.2} reads, none of them before the reply (an ADD takes a spare and a DEL gives it back, both in one local transaction; after it answers, the agent reads the returned spare's claim to check it is still this host's, and claims a new spare when fewer than 4 are left; the keeper writes container names into the claims every 2 s)\n",
        m(CNI_SPARES, "add_ms"),
        m(CNI_SPARES, "add_ms") / m(me, "add_ms"),
        m(CNI_SPARES, "del_ms"),
        per_pair(CNI_SPARES, "txn_per_pair"),
        per_pair(CNI_SPARES, "range_per_pair"),
    );
    table += &format!(
        "\nThe floor (a static binary making the same kernel calls, no IPAM, no store): ADD {:.2} ms. Over the floor: mvnet-cni {:.2}x, CLI connect {:.2}x, netavark {:.2}x, reference + host-local {:.2}x, iproute2 {:.2}x\n",
        m(FLOOR, "add_ms"),
        m(me, "add_ms") / m(FLOOR, "add_ms"),
        m(CLI, "add_ms") / m(FLOOR, "add_ms"),
        m("netavark (static IP)", "add_ms") / m(FLOOR, "add_ms"),
        m("reference macvlan + host-local", "add_ms") / m(FLOOR, "add_ms"),
        m("iproute2 floor (no IPAM)", "add_ms") / m(FLOOR, "add_ms"),
    );
    // Targets, stated as ratios measured in this run.
    let ratio = |a: f64, b: f64| a / b;
    let ip = "iproute2 floor (no IPAM)";
    let cli = CLI;
    let dk = "docker network connect";
    let mut targets = vec![
        (
            "ADD <= 0.25x the reference + host-local",
            ratio(
                m(me, "add_ms"),
                m("reference macvlan + host-local", "add_ms"),
            ),
            0.25,
            false,
        ),
        (
            "ADD <= 0.5x netavark",
            ratio(m(me, "add_ms"), m("netavark (static IP)", "add_ms")),
            0.5,
            false,
        ),
        (
            "DEL within 10% of the iproute2 floor",
            ratio(m(me, "del_ms"), m(ip, "del_ms")),
            1.1,
            false,
        ),
        (
            "disconnect within 1.2x of the iproute2 DEL floor",
            ratio(m(cli, "del_ms"), m(ip, "del_ms")),
            1.2,
            false,
        ),
        (
            "shared-pool (etcd, 4 spares) ADD within 1.5x of the local-store ADD",
            ratio(m(CNI_SPARES, "add_ms"), m(me, "add_ms")),
            1.5,
            false,
        ),
        (
            "etcd transactions per shared-pool ADD + DEL pair, no spares (one each; up to 0.1 more from the keepers' background writes that fall in a window)",
            per_pair(CNI_POOL, "txn_per_pair"),
            2.1,
            false,
        ),
        (
            "scale curve flat within 20% (max/min block)",
            flat(me),
            1.2,
            false,
        ),
        (
            "peak RSS of one ADD <= 8 MiB (in MiB)",
            m(me, "add_max_rss_kib") / 1024.0,
            8.0,
            false,
        ),
        (
            "bulk teardown >= 5x faster than sequential reference DELs",
            ratio(
                td["reference_sequential_del_ms"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
                td["mvnet_rm_ms"].as_f64().unwrap_or(f64::NAN),
            ),
            5.0,
            true,
        ),
    ];
    if lat.get(dk).is_some() {
        targets.push((
            "connect <= 0.06x docker network connect",
            ratio(m(cli, "add_ms"), m(dk, "add_ms")),
            0.06,
            false,
        ));
    }
    if !dp.is_null() {
        let both = |d: &str, a: &str, b: &str| dop(d, a) + dop(d, b);
        targets.push((
            "docker run + rm with -d mvnet within 1.1x of -d macvlan",
            both("mvnet", "run", "rm") / both("macvlan", "run", "rm"),
            1.1,
            false,
        ));
        targets.push((
            "docker network connect + disconnect with -d mvnet within 1.1x of -d macvlan",
            both("mvnet", "connect", "disconnect") / both("macvlan", "connect", "disconnect"),
            1.1,
            false,
        ));
        targets.push((
            "plugin CreateEndpoint + Join under 2 ms (median, ms)",
            dp["plugin"]["create_endpoint_plus_join_ms"]["median"]
                .as_f64()
                .unwrap_or(f64::NAN),
            2.0,
            false,
        ));
    }
    table += "\n| target | measured | goal | met |\n|---|---:|---:|---|\n";
    let mut tj = Vec::new();
    for (name, v, goal, higher_better) in targets {
        let met = if higher_better { v >= goal } else { v <= goal };
        table += &format!(
            "| {name} | {v:.2} | {goal} | {} |\n",
            if met { "yes" } else { "NO" }
        );
        tj.push(json!({"target": name, "measured": v, "goal": goal, "met": met}));
    }
    results["targets"] = Value::Array(tj);
    println!("{table}");
    std::fs::write(args.out.join("table.md"), &table).unwrap();
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_string_pretty(&results).unwrap(),
    )
    .unwrap();
    let labels: Vec<String> = names.to_vec();
    let series = vec![
        (
            "ADD",
            names
                .iter()
                .map(|n| {
                    (
                        m(n, "add_ms"),
                        lat[n]["add_ms"]["p90"].as_f64().unwrap_or(f64::NAN),
                    )
                })
                .collect(),
        ),
        (
            "DEL",
            names
                .iter()
                .map(|n| {
                    (
                        m(n, "del_ms"),
                        lat[n]["del_ms"]["p90"].as_f64().unwrap_or(f64::NAN),
                    )
                })
                .collect(),
        ),
    ];
    std::fs::write(
        args.out.join("latency.svg"),
        svg::bars(
            "Attach (ADD) and detach (DEL) latency per container",
            "ms",
            &labels,
            &series,
        ),
    )
    .unwrap();
    let curve: Vec<(&str, Vec<(f64, f64)>)> = [
        me,
        "reference macvlan + host-local",
        "kernel only: ip link add (macvlan)",
    ]
    .iter()
    .map(|n| {
        (
            *n,
            blocks[*n]
                .as_array()
                .map(|a| {
                    a.iter()
                        .enumerate()
                        .map(|(i, v)| ((i * 100 + 50) as f64, v.as_f64().unwrap_or(0.0)))
                        .collect()
                })
                .unwrap_or_default(),
        )
    })
    .collect();
    std::fs::write(
        args.out.join("scale.svg"),
        svg::lines(
            "ADD latency as one /16 fills",
            "endpoints already attached",
            "median ADD ms (block of 100)",
            &curve,
        ),
    )
    .unwrap();
    eprintln!(
        "bench: wrote {}/results.json, table.md, latency.svg, scale.svg",
        args.out.display()
    );
    let _ = nth_ip;
}
