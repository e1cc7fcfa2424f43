//! The fleet keeper of one state root (one host): a small background process, started by
//! the first claim (or by `contrib/systemd/mvnet-fleet.service`), that
//!
//! - keeps the host alive in etcd: an `alive` key on a lease it renews every 2 s (TTL
//!   10 s) and a `seen` time, which the other hosts read before they reuse an address;
//! - gets queued releases through once etcd answers again;
//! - every 30 s, releases claims of this host whose endpoint is gone here (a crash
//!   between the local removal and the release), and claims again the addresses of local
//!   endpoints whose claim etcd lost.
//!
//! One keeper per root (a lock); it leaves when the root has no shared pool for 30 s,
//! unless started with `--stay` (the systemd unit).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::coord::{Coordinator, Created, EtcdCoordinator};
use super::queue;
use super::{claim_key, now_secs, Claim, Seen};
use crate::store::{SqliteStore, Store};
use crate::{Error, Result};

/// The lease behind a host's `alive` key.
pub const ALIVE_TTL_SECS: i64 = 10;
const TICK: Duration = Duration::from_secs(2);
const RECONCILE_EVERY: Duration = Duration::from_secs(30);
const IDLE_EXIT: Duration = Duration::from_secs(30);

fn lock_path(root: &Path) -> PathBuf {
    root.join("fleet").join("keeper.lock")
}

/// Where the keeper notes when it last told the cluster `eps` this host is alive.
fn seen_file(root: &Path, eps: &[String]) -> PathBuf {
    let h = crate::ids::fnv1a(eps.join(",").bytes());
    root.join("fleet").join(format!("seen-{h:016x}"))
}

/// When (unix seconds) this host's keeper last wrote its `seen` time to the cluster `eps`
/// and etcd took it: spares are used only while that is recent.
pub fn last_seen(root: &Path, eps: &[String]) -> Option<i64> {
    std::fs::read_to_string(seen_file(root, eps))
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub(crate) fn note_seen(root: &Path, eps: &[String], at: i64) {
    let path = seen_file(root, eps);
    let tmp = path.with_extension("tmp");
    let written = crate::store::root::private_dir(&root.join("fleet"))
        .and_then(|()| crate::store::root::create_private_file(&tmp))
        .and_then(|mut f| {
            use std::io::Write;
            f.write_all(at.to_string().as_bytes())
                .map_err(|e| Error::io("write the keeper's seen time", e))
        });
    if written.is_ok() {
        let _ = std::fs::rename(&tmp, &path);
    }
}

/// Takes the keeper lock of `root` (`None`: a keeper runs already).
fn try_lock(root: &Path) -> Result<Option<std::fs::File>> {
    crate::store::root::private_dir(&root.join("fleet"))?;
    let f = crate::store::root::open_private(&lock_path(root))?;
    Ok(crate::store::root::flock(&f, libc::LOCK_EX | libc::LOCK_NB).then_some(f))
}

/// Stops the keeper of `root`, if one runs (its pid is in the lock file).
pub fn stop(root: &Path) {
    let pid = std::fs::read_to_string(lock_path(root))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    if let (Some(pid), true) = (pid, is_running(root)) {
        // SAFETY: kill(2) only sends a signal.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
}

/// Whether a keeper holds `root`'s lock.
pub fn is_running(root: &Path) -> bool {
    match try_lock(root) {
        Ok(Some(_)) => false, // ours for a moment: nobody else's (dropped here)
        _ => true,
    }
}

/// Starts the keeper of `root` unless one runs: `mvnet fleet-keeper`, detached.
pub fn ensure_running(root: &Path) {
    if is_running(root) {
        return;
    }
    let Ok(bin) = crate::process::find_binary("mvnet", "MVNET_BIN") else {
        tracing::warn!("mvnet is not installed: no fleet keeper (claims of a crashed attach wait for `mvnet restore`)");
        return;
    };
    use std::os::unix::process::CommandExt;
    let log = crate::store::root::private_dir(&root.join("fleet"))
        .and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(root.join("fleet").join("keeper.log"))
                .map_err(|e| Error::io("open the fleet keeper's log", e))
        })
        .ok();
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("--root")
        .arg(root)
        .arg("fleet-keeper")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    match log {
        Some(l) => cmd.stderr(l),
        None => cmd.stderr(std::process::Stdio::null()),
    };
    crate::process::close_inherited_fds(&mut cmd);
    // SAFETY: only setsid runs between fork and exec; it is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            crate::os::run_anywhere_in_child();
            Ok(())
        });
    }
    match cmd.spawn() {
        Ok(mut child) => {
            std::thread::spawn(move || {
                let _ = child.wait();
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot start the fleet keeper"),
    }
}

/// One etcd cluster the keeper keeps this host alive in.
struct Cluster {
    coord: EtcdCoordinator,
    lease: Option<i64>,
    /// The last keep-alive went through. Until one does after the keeper starts or after
    /// a failure, this host may have looked gone to the others, who may have taken over
    /// its spares: those are checked again before any is used.
    in_touch: bool,
}

/// The keeper's loop (`mvnet fleet-keeper`). Returns when another keeper holds the lock,
/// or when the root has had no shared pool for a while (`stay`: never).
pub fn run(root: &Path, stay: bool) -> Result<()> {
    let Some(mut lock) = try_lock(root)? else {
        eprintln!(
            "mvnet fleet-keeper: another keeper serves {}",
            root.display()
        );
        return Ok(());
    };
    {
        // Who holds it, for `stop` (and people).
        use std::io::Write;
        let _ = lock.set_len(0);
        let _ = writeln!(lock, "{}", std::process::id());
    }
    let me = super::host_identity(root)?;
    eprintln!(
        "mvnet fleet-keeper: host {} ({}) for {}",
        me.name,
        me.id,
        root.display()
    );
    let mut clusters: HashMap<Vec<String>, Cluster> = HashMap::new();
    let mut idle_since: Option<Instant> = None;
    let mut last_reconcile: Option<Instant> = None;
    // The store that tops spares up (networks with --ipam-opt spares=N), if any.
    let mut spares_store: Option<super::FleetStore> = None;
    loop {
        // The root went away (a lab torn down): so does its keeper, without re-creating it.
        if !root.join("mvnet.db").exists() {
            eprintln!("mvnet fleet-keeper: {} is gone; leaving", root.display());
            return Ok(());
        }
        let mut store = match SqliteStore::open_existing(root) {
            Ok(s) => s,
            Err(Error::NotFound(_)) => {
                eprintln!("mvnet fleet-keeper: {} is gone; leaving", root.display());
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let nets: Vec<_> = store
            .networks()?
            .into_iter()
            .filter(|n| n.fleet.is_some())
            .collect();
        if nets.is_empty() && queue::is_empty(root) {
            let since = *idle_since.get_or_insert_with(Instant::now);
            if !stay && since.elapsed() > IDLE_EXIT {
                eprintln!("mvnet fleet-keeper: no shared pool left; leaving");
                return Ok(());
            }
        } else {
            idle_since = None;
        }
        // 1. Alive in every cluster this host uses.
        let mut wanted: Vec<Vec<String>> = Vec::new();
        for n in &nets {
            if let Ok(eps) = super::etcd_endpoints(n.fleet.as_ref().expect("filtered")) {
                if !wanted.contains(&eps) {
                    wanted.push(eps);
                }
            }
        }
        for (eps, _, _) in queue::pending(root)
            .iter()
            .map(|(p, r)| (r.etcd.clone(), p, r))
        {
            if !wanted.contains(&eps) {
                wanted.push(eps);
            }
        }
        clusters.retain(|eps, _| wanted.contains(eps));
        for eps in &wanted {
            if !clusters.contains_key(eps) {
                clusters.insert(
                    eps.clone(),
                    Cluster {
                        coord: EtcdCoordinator::new(eps)?,
                        lease: None,
                        in_touch: false,
                    },
                );
            }
            let c = clusters.get_mut(eps).expect("inserted above");
            match keep_alive(c, &me) {
                Ok(at) => {
                    if !c.in_touch {
                        // Before the spares count as usable again (the seen time below).
                        c.in_touch = nets
                            .iter()
                            .filter(|n| {
                                n.fleet.as_ref().and_then(|p| super::etcd_endpoints(p).ok())
                                    == Some(eps.clone())
                            })
                            .all(|n| match store.unconfirm_spares(&n.id) {
                                Ok(_) => true,
                                Err(e) => {
                                    eprintln!("mvnet fleet-keeper: spares of {}: {e}", n.name);
                                    false
                                }
                            });
                    }
                    if c.in_touch {
                        note_seen(root, eps, at);
                    }
                }
                Err(e) => {
                    c.in_touch = false;
                    eprintln!("mvnet fleet-keeper: {e}");
                }
            }
        }
        // 2. Queued releases.
        for (path, r) in queue::pending(root) {
            let Some(c) = clusters.get_mut(&r.etcd) else {
                continue;
            };
            match super::release_claim(&mut c.coord, &r.pool, r.ip, &r.host, &r.endpoint) {
                Ok(rev) => {
                    if let Some(rev) = rev {
                        super::store::log_claim(root, "release", rev, r.ip, &r.endpoint);
                    }
                    eprintln!(
                        "mvnet fleet-keeper: released {} of pool {} (queued)",
                        r.ip, r.pool
                    );
                    queue::done(&path);
                }
                Err(_) => break, // still unreachable
            }
        }
        // 3. Now and then: claims and rows agree again.
        if last_reconcile.is_none_or(|t| t.elapsed() >= RECONCILE_EVERY) {
            last_reconcile = Some(Instant::now());
            for n in &nets {
                let pool = n.fleet.as_ref().expect("filtered");
                let Ok(eps) = super::etcd_endpoints(pool) else {
                    continue;
                };
                let Some(c) = clusters.get_mut(&eps) else {
                    continue;
                };
                match reconcile(&mut c.coord, &mut store, n, &me.id, &me.name, root) {
                    Ok((released, claimed)) if released + claimed > 0 => eprintln!(
                        "mvnet fleet-keeper: pool {}: released {released} stale claims, claimed {claimed} again",
                        pool.pool
                    ),
                    Ok(_) => {}
                    Err(e) => eprintln!("mvnet fleet-keeper: pool {}: {e}", pool.pool),
                }
            }
        }
        // 4. Spares (networks with --ipam-opt spares=N): claims name their users, the
        // spares are checked and topped up.
        for n in nets
            .iter()
            .filter(|n| n.fleet.as_ref().is_some_and(|p| p.spares > 0))
        {
            let Ok(eps) = super::etcd_endpoints(n.fleet.as_ref().expect("filtered")) else {
                continue;
            };
            if let Some(c) = clusters.get_mut(&eps) {
                if let Err(e) = retag(&mut c.coord, &mut store, n, &me.id) {
                    eprintln!("mvnet fleet-keeper: claims of {}: {e}", n.name);
                }
            }
        }
        drop(store);
        let with_spares: Vec<_> = nets
            .iter()
            .filter(|n| n.fleet.as_ref().is_some_and(|p| p.spares > 0))
            .collect();
        if with_spares.is_empty() {
            spares_store = None;
        } else {
            // Kept from tick to tick, with its etcd connections.
            if spares_store.is_none() {
                spares_store = Some(super::FleetStore::for_keeper(
                    root,
                    Box::new(SqliteStore::open_existing(root)?),
                ));
            }
            let fleet = spares_store.as_mut().expect("set above");
            for n in with_spares {
                if let Err(e) = fleet.top_up(n) {
                    eprintln!("mvnet fleet-keeper: spares of {}: {e}", n.name);
                }
            }
            fleet.end_of_request();
        }
        std::thread::sleep(TICK);
    }
}

/// Renews this host's lease (a new one when it ran out) and its `alive` and `seen` keys.
fn keep_alive(c: &mut Cluster, me: &super::HostIdentity) -> Result<i64> {
    let renewed = match c.lease {
        Some(id) => c.coord.keep_alive(id)?,
        None => false,
    };
    if !renewed {
        let id = c.coord.grant(ALIVE_TTL_SECS)?;
        c.lease = Some(id);
        c.coord.put(&super::alive_key(&me.id), &me.name, id)?;
    }
    let seen = Seen {
        name: me.name.clone(),
        at: now_secs(),
    };
    c.coord.put(
        &super::seen_key(&me.id),
        &serde_json::to_string(&seen).expect("serializes"),
        0,
    )?;
    Ok(seen.at)
}

/// Releases the claims of host `me` in `net`'s pool whose endpoint this host no longer
/// has, and claims the addresses of local endpoints that etcd lost. The claims are read
/// *before* the local rows: a row always exists before its claim, so a claim seen without
/// a row is stale, never one being made. Returns (released, claimed).
pub fn reconcile(
    coord: &mut dyn Coordinator,
    store: &mut dyn Store,
    net: &crate::model::Network,
    me: &str,
    me_name: &str,
    root: &Path,
) -> Result<(usize, usize)> {
    let pool = net.fleet.as_ref().expect("a pooled network");
    let prefix = super::claims_prefix(&pool.pool);
    let claims = coord.list(&prefix)?;
    let local = store.endpoints_of_network(&net.id)?;
    // A spare's row, too, exists before its claim; its claim names the spare's id.
    let spares = store.spares(&net.id)?;
    let mut released = 0;
    for (key, value, rev) in &claims {
        let Some(c) = Claim::parse(value) else {
            continue;
        };
        if c.host != me
            || c.network != net.name
            || local.iter().any(|e| e.id == c.endpoint)
            || spares.iter().any(|s| s.id == c.endpoint)
        {
            continue;
        }
        if let Some(r) = coord.delete_if(key, *rev)? {
            let ip = key.strip_prefix(&prefix).unwrap_or_default();
            if let Ok(ip) = ip.parse::<IpAddr>() {
                super::store::log_claim(root, "release", r, ip, &c.endpoint);
            }
            released += 1;
        }
    }
    retag_claims(coord, &claims, &local, &spares, net, me)?;
    let mut claimed = 0;
    for ep in &local {
        let Some((ip, _)) = ep.ipv4 else {
            continue;
        };
        if claims.iter().any(|(k, ..)| *k == claim_key(&pool.pool, ip)) {
            continue;
        }
        let claim = Claim {
            host: me.to_string(),
            host_name: me_name.to_string(),
            endpoint: ep.id.clone(),
            container: ep.container_name.clone(),
            network: net.name.clone(),
            since: now_secs(),
            holder: None,
        };
        match coord.create(&claim_key(&pool.pool, ip), &claim.to_json())? {
            Created::Yes(_) => claimed += 1,
            Created::Held { value, .. } => {
                if !Claim::parse(&value).is_some_and(|c| c.host == me && c.endpoint == ep.id) {
                    eprintln!(
                        "mvnet fleet-keeper: {ip} of {} is claimed by another host ({value}); that host and this one both use it: remove one of the containers",
                        ep.container_name
                    );
                }
            }
        }
    }
    Ok((released, claimed))
}

/// Rewrites this host's claims that name another container than the one using the address
/// now (an attach took a spare, or a detach made one), so `pool inspect` on every host
/// shows who uses what. Off the attach's path: the keeper does it every tick for networks
/// with spares. Returns how many it rewrote.
fn retag_claims(
    coord: &mut dyn Coordinator,
    claims: &[(String, String, i64)],
    local: &[crate::model::Endpoint],
    spares: &[crate::store::Spare],
    net: &crate::model::Network,
    me: &str,
) -> Result<usize> {
    let mut rewritten = 0;
    for (key, value, rev) in claims {
        let Some(mut c) = Claim::parse(value) else {
            continue;
        };
        if c.host != me || c.network != net.name {
            continue;
        }
        let used_by = match local.iter().find(|e| e.id == c.endpoint) {
            Some(e) => e.container_name.clone(),
            None if spares.iter().any(|s| s.id == c.endpoint) => String::new(),
            None => continue,
        };
        if c.container != used_by {
            c.container = used_by;
            if coord.swap(key, *rev, &c.to_json())?.is_some() {
                rewritten += 1;
            }
        }
    }
    Ok(rewritten)
}

/// `retag_claims` for one network, reading the claims and then the rows.
pub fn retag(
    coord: &mut dyn Coordinator,
    store: &mut dyn Store,
    net: &crate::model::Network,
    me: &str,
) -> Result<usize> {
    let pool = net.fleet.as_ref().expect("a pooled network");
    let claims = coord.list(&super::claims_prefix(&pool.pool))?;
    let local = store.endpoints_of_network(&net.id)?;
    let spares = store.spares(&net.id)?;
    retag_claims(coord, &claims, &local, &spares, net, me)
}
