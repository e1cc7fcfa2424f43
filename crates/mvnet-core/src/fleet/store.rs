//! `FleetStore`: the local store, with etcd claims around the writes that give or take an
//! address of a shared pool. Networks without `--ipam-opt pool=` pass straight through
//! (no etcd, no cost), so every front end keeps its one engine path.
//!
//! Order, so a crash never leaves two hosts with one address: the local row first, then
//! the claim (a row without a claim is an attach that never got its address: rolled back
//! locally as any other); the release after the row is gone, and a claim without a row
//! is released by the keeper.

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::coord::{Coordinator, Created, EtcdCoordinator, MemoryCoordinator};
use super::queue::{self, PendingRelease};
use super::{
    claim_key, config_key, may_reuse, now_secs, Claim, HolderState, HostIdentity, PoolConfig,
    Reuse, Seen,
};
use crate::model::{Container, Endpoint, FleetPool, LanConflict, Lease, MacAddr, Network};
use crate::store::{EndpointRequest, NetworkCheck, Spare, Store};
use crate::{conflict, Error, Result};

/// How many held addresses one attach steps over before it gives up.
const TRIES: usize = 64;

type Connector = Box<dyn FnMut(&[String]) -> Result<Box<dyn Coordinator>> + Send>;

pub struct FleetStore {
    inner: Box<dyn Store>,
    root: PathBuf,
    connect: Connector,
    /// One coordinator per etcd cluster (its endpoint list).
    coords: HashMap<Vec<String>, Box<dyn Coordinator>>,
    host: Option<HostIdentity>,
    /// Start the host's keeper after the first claim (not in unit tests).
    start_keeper: bool,
    keeper_started: bool,
    /// Each network's pool, by network id, from the networks this process has read.
    pools: HashMap<String, Option<FleetPool>>,
    /// Claims tried and won by this process (the scale simulation reports retries).
    tried: u64,
    won: u64,
    /// Networks with spares, by id, from the networks this process has read.
    spare_nets: HashMap<String, Network>,
    /// Networks whose spares this request used or gave back: topped up after the reply.
    touched: Vec<Network>,
}

impl FleetStore {
    /// The store of `root` with etcd pools (connected on first use).
    pub fn new(root: &Path, inner: Box<dyn Store>) -> FleetStore {
        FleetStore {
            inner,
            root: root.to_path_buf(),
            connect: Box::new(|eps| {
                Ok(Box::new(EtcdCoordinator::new(eps)?) as Box<dyn Coordinator>)
            }),
            coords: HashMap::new(),
            host: None,
            start_keeper: std::env::var_os("MVNET_NO_FLEET_KEEPER").is_none(),
            keeper_started: false,
            pools: HashMap::new(),
            tried: 0,
            won: 0,
            spare_nets: HashMap::new(),
            touched: Vec::new(),
        }
    }

    /// The store the fleet keeper tops spares up with (it is the keeper: starts none).
    pub fn for_keeper(root: &Path, inner: Box<dyn Store>) -> FleetStore {
        let mut s = FleetStore::new(root, inner);
        s.start_keeper = false;
        s
    }

    /// (claims tried, claims won) by this store so far.
    pub fn claim_stats(&self) -> (u64, u64) {
        (self.tried, self.won)
    }

    /// A store whose pools live in `coord` (a fake cluster shared by the tests' "hosts"),
    /// as host `host`, without a keeper.
    pub fn with_memory(
        root: &Path,
        inner: Box<dyn Store>,
        coord: MemoryCoordinator,
        host: HostIdentity,
    ) -> FleetStore {
        let mut s = FleetStore::new(root, inner);
        s.connect = Box::new(move |_| Ok(Box::new(coord.clone()) as Box<dyn Coordinator>));
        s.host = Some(host);
        s.start_keeper = false;
        s
    }

    fn me(&mut self) -> Result<HostIdentity> {
        if self.host.is_none() {
            self.host = Some(super::host_identity(&self.root)?);
        }
        Ok(self.host.clone().expect("set above"))
    }

    fn coord(&mut self, pool: &FleetPool) -> Result<&mut dyn Coordinator> {
        let eps = super::etcd_endpoints(pool)?;
        if !self.coords.contains_key(&eps) {
            let c = (self.connect)(&eps)?;
            self.coords.insert(eps.clone(), c);
        }
        Ok(self.coords.get_mut(&eps).expect("inserted above").as_mut())
    }

    /// The pool of network `id`, if it has one.
    fn pool_of(&mut self, network_id: &str) -> Result<Option<FleetPool>> {
        if let Some(p) = self.pools.get(network_id) {
            return Ok(p.clone());
        }
        let p = match self.inner.network(network_id) {
            Ok(n) => n.fleet,
            Err(Error::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        self.pools.insert(network_id.to_string(), p.clone());
        Ok(p)
    }

    /// `MVNET_FLEET_LOG=1`: every claim and release with its etcd revision and the time, in
    /// `<root>/fleet/claims.log` (the churn test checks that no two owners' intervals of
    /// one address overlap).
    fn log(&self, what: &str, revision: i64, ip: IpAddr, endpoint: &str) {
        log_claim(&self.root, what, revision, ip, endpoint);
    }

    fn holder_state(&mut self, pool: &FleetPool, claim: &Claim) -> Result<HolderState> {
        if claim.host == super::LAN_HOST {
            return Ok(HolderState {
                alive: false,
                seen: None,
            });
        }
        let c = self.coord(pool)?;
        let alive = c.get(&super::alive_key(&claim.host))?.is_some();
        let seen = c
            .get(&super::seen_key(&claim.host))?
            .and_then(|(v, _)| serde_json::from_str::<Seen>(&v).ok())
            .map(|s| s.at);
        Ok(HolderState { alive, seen })
    }

    /// Claims `ip` for endpoint `ep` of `net`: `Ok(true)` when it is ours now, `Ok(false)`
    /// when another host (or a LAN device) keeps it. `probes`: the attach probes the LAN
    /// before it uses the address (a gone host's address is taken over only then).
    fn claim(
        &mut self,
        net: &Network,
        pool: &FleetPool,
        ep: &mut Endpoint,
        ip: IpAddr,
        probes: bool,
    ) -> Result<bool> {
        let me = self.me()?;
        let claim = Claim {
            host: me.id.clone(),
            host_name: me.name.clone(),
            endpoint: ep.id.clone(),
            container: ep.container_name.clone(),
            network: net.name.clone(),
            since: now_secs(),
            holder: None,
        };
        let key = claim_key(&pool.pool, ip);
        let value = claim.to_json();
        self.tried += 1;
        let (held, mod_revision) = match self.coord(pool)?.create(&key, &value)? {
            Created::Yes(rev) => {
                self.log("claim", rev, ip, &ep.id);
                self.won += 1;
                return Ok(true);
            }
            Created::Held {
                value,
                mod_revision,
            } => (Claim::parse(&value), mod_revision),
        };
        let Some(held) = held else {
            return Ok(false); // not mvnet's record: keep off
        };
        if held.host == me.id && held.endpoint == ep.id {
            // A claim retried after etcd had taken it: ours already.
            self.log("claim", mod_revision, ip, &ep.id);
            return Ok(true);
        }
        let we_have = held.host == me.id
            && self
                .inner
                .endpoints_of_network(&net.id)?
                .iter()
                .any(|e| e.id == held.endpoint);
        let holder = self.holder_state(pool, &held)?;
        let reuse = may_reuse(
            &held,
            &me.id,
            we_have,
            holder,
            now_secs(),
            pool.grace_secs,
            probes,
        );
        if reuse == Reuse::No {
            return Ok(false);
        }
        match self.coord(pool)?.swap(&key, mod_revision, &value)? {
            Some(rev) => {
                tracing::info!(%ip, from = %held.host_name, ?reuse, "took over a pool address");
                // The previous holder's claim ends here (its own release will find the key
                // taken and do nothing).
                self.log("release", rev, ip, &held.endpoint);
                self.log("claim", rev, ip, &ep.id);
                if reuse == Reuse::Gone && Some(ep.mac) == MacAddr::from_ipv4_addr(ip) {
                    // The gone host's container may still be out there with 02:42 + this
                    // address. Another MAC lets the probe hear it (a reply to one's own MAC
                    // never leaves that host's macvlan), and keeps two switch ports from
                    // claiming one MAC.
                    ep.mac = MacAddr::random_local();
                    self.inner.update_endpoint(ep)?;
                }
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Releases this host's claim of `ip` for `endpoint`; queued when etcd does not answer.
    fn release(&mut self, pool: &FleetPool, ip: IpAddr, endpoint: &str) {
        let me = match self.me() {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "no host identity: claim left for the keeper");
                return;
            }
        };
        let done = self
            .coord(pool)
            .and_then(|c| super::release_claim(c, &pool.pool, ip, &me.id, endpoint));
        match done {
            Ok(Some(rev)) => self.log("release", rev, ip, endpoint),
            Ok(None) => {}
            Err(e) => {
                let queued = super::etcd_endpoints(pool).and_then(|etcd| {
                    queue::push(
                        &self.root,
                        &PendingRelease {
                            etcd,
                            pool: pool.pool.clone(),
                            ip,
                            host: me.id.clone(),
                            endpoint: endpoint.to_string(),
                        },
                    )
                });
                match queued {
                    Ok(()) => crate::warn_user(&format!(
                        "the release of {ip} in pool {} waits for etcd ({e}); it is queued and retried",
                        pool.pool
                    )),
                    Err(q) => tracing::warn!(error = %q, "cannot queue a release"),
                }
                self.ensure_keeper();
            }
        }
    }

    /// Tries the queued releases of `pool`'s cluster (stops at the first that cannot
    /// reach it: the attach that follows will say so).
    fn drain_queue(&mut self, pool: &FleetPool) {
        if queue::is_empty(&self.root) {
            return;
        }
        let Ok(eps) = super::etcd_endpoints(pool) else {
            return;
        };
        for (path, r) in queue::pending(&self.root) {
            if r.etcd != eps {
                continue;
            }
            let done = self
                .coord(pool)
                .and_then(|c| super::release_claim(c, &r.pool, r.ip, &r.host, &r.endpoint));
            match done {
                Ok(rev) => {
                    if let Some(rev) = rev {
                        self.log("release", rev, r.ip, &r.endpoint);
                    }
                    queue::done(&path);
                }
                Err(_) => return,
            }
        }
    }

    /// Where this host's round-robin starts in `net`'s pool: a place of its own (a hash
    /// of its id), so hosts rarely ask for the same address at the same time.
    fn start_of(&mut self, net: &Network) -> Option<IpAddr> {
        let me = self.me().ok()?;
        place_in(net, &me.id)
    }

    fn ensure_keeper(&mut self) {
        if self.start_keeper && !self.keeper_started {
            self.keeper_started = true;
            super::keeper::ensure_running(&self.root);
        }
    }

    fn remember(&mut self, n: &Network) {
        self.pools.insert(n.id.clone(), n.fleet.clone());
        if n.fleet.as_ref().is_some_and(|p| p.spares > 0) {
            self.spare_nets.insert(n.id.clone(), n.clone());
        }
    }

    fn touch(&mut self, net: &Network) {
        self.spare_nets.insert(net.id.clone(), net.clone());
        if !self.touched.iter().any(|n| n.id == net.id) {
            self.touched.push(net.clone());
        }
    }

    /// Whether this host's keeper told etcd it is alive recently enough (within half the
    /// grace period) that no other host can have taken a spare over: another host reuses
    /// an address only after the holder was not seen for the whole grace period.
    fn seen_recently(&self, pool: &FleetPool) -> bool {
        let Ok(eps) = super::etcd_endpoints(pool) else {
            return false;
        };
        super::keeper::last_seen(&self.root, &eps)
            .is_some_and(|at| (now_secs() - at) * 2 < pool.grace_secs as i64)
    }

    /// A detach on a network with spares: its address becomes a spare again (when the
    /// network has fewer than it wants), with no etcd round trip. The spare is
    /// unconfirmed until its claim is checked after the reply (or by the keeper).
    fn detach_into_spare(&mut self, id: &str) -> Result<Option<Endpoint>> {
        if self.spare_nets.is_empty() || !self.inner.keeps_spares() {
            return Ok(None);
        }
        let nets: Vec<Network> = self.spare_nets.values().cloned().collect();
        for net in nets {
            let pool = net.fleet.clone().expect("a network with spares has a pool");
            if !self
                .inner
                .endpoints_of_network(&net.id)?
                .iter()
                .any(|e| e.id == id && e.ipv4.is_some() && e.lease.is_none())
            {
                continue;
            }
            // Up to twice the count: a host that attaches and detaches in turn then
            // needs neither a claim nor a release (the top-up trims beyond that).
            let have = self.inner.spares(&net.id)?.len();
            if have >= 2 * pool.spares as usize {
                return Ok(None);
            }
            let ep = self.inner.endpoint_to_spare(&net, id)?;
            self.touch(&net);
            return Ok(ep);
        }
        Ok(None)
    }

    /// Keeps `net`'s spares between the count its pool asks for and twice that: checks the
    /// unconfirmed ones nobody is making any more (a detach's, or a crashed top-up's)
    /// against etcd, gives back those beyond twice the count, and claims new ones below
    /// the count, each a row first and a claim after.
    pub fn top_up(&mut self, net: &Network) -> Result<()> {
        let Some(pool) = net.fleet.clone() else {
            return Ok(());
        };
        if !self.inner.keeps_spares() {
            return Ok(());
        }
        let me = self.me()?;
        let mut have = 0usize;
        for s in self.inner.spares(&net.id)? {
            if s.confirmed || (s.owner_pid != 0 && crate::store::pid_alive(s.owner_pid)) {
                have += 1;
                continue;
            }
            let key = claim_key(&pool.pool, s.ip);
            match self.coord(&pool)?.get(&key)? {
                Some((v, _)) => match Claim::parse(&v) {
                    Some(c) if c.host == me.id && c.endpoint == s.id => {
                        if self.inner.confirm_spare(&s.id)? {
                            have += 1;
                        }
                    }
                    _ => {
                        self.inner.remove_spare(&s.id)?;
                        self.inner.mark_held_elsewhere(net, s.ip)?;
                    }
                },
                None => {
                    self.inner.remove_spare(&s.id)?;
                }
            }
        }
        let want = pool.spares as usize;
        if have > 2 * want {
            let extra: Vec<Spare> = self
                .inner
                .spares(&net.id)?
                .into_iter()
                .filter(|s| s.confirmed)
                .take(have - 2 * want)
                .collect();
            for s in extra {
                if self.inner.remove_spare(&s.id)?.is_some() {
                    self.release(&pool, s.ip, &s.id);
                }
            }
            return Ok(());
        }
        let mut tries = 0;
        while have < want && tries < TRIES {
            tries += 1;
            let Some(s) = self.inner.reserve_spare(net)? else {
                break; // the pool looks full here
            };
            let claim = Claim {
                host: me.id.clone(),
                host_name: me.name.clone(),
                endpoint: s.id.clone(),
                container: String::new(),
                network: net.name.clone(),
                since: now_secs(),
                holder: None,
            };
            let key = claim_key(&pool.pool, s.ip);
            self.tried += 1;
            let made = self
                .coord(&pool)
                .and_then(|c| c.create(&key, &claim.to_json()));
            match made {
                Ok(Created::Yes(rev)) => {
                    self.won += 1;
                    self.log("claim", rev, s.ip, &s.id);
                    if self.inner.confirm_spare(&s.id)? {
                        have += 1;
                    } else {
                        // Gone meanwhile (its network removed): give the claim back.
                        self.release(&pool, s.ip, &s.id);
                    }
                }
                Ok(Created::Held { .. }) => {
                    self.inner.remove_spare(&s.id)?;
                    self.inner.mark_held_elsewhere(net, s.ip)?;
                    if let Some(elsewhere) = place_in(net, &s.id) {
                        self.inner.set_cursor(net, elsewhere)?;
                    }
                }
                Err(e) => {
                    // No claim was made (or one the keeper's reconcile finds without a row).
                    self.inner.remove_spare(&s.id)?;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Learns again which addresses the other hosts hold (the local marks may be stale).
    /// An address whose holder is gone (see `may_reuse`) is left unmarked, so the next
    /// allocation tries it and takes it over through the probe.
    fn refresh_marks(&mut self, net: &Network, pool: &FleetPool, probes: bool) -> Result<()> {
        let me = self.me()?;
        self.inner.forget_held_elsewhere(net)?;
        let prefix = super::claims_prefix(&pool.pool);
        let claims = self.coord(pool)?.list(&prefix)?;
        let mut holders: HashMap<String, HolderState> = HashMap::new();
        let now = now_secs();
        for (key, value, _) in claims {
            let Some(ip) = key
                .strip_prefix(&prefix)
                .and_then(|s| s.parse::<IpAddr>().ok())
            else {
                continue;
            };
            let Some(c) = Claim::parse(&value) else {
                self.inner.mark_held_elsewhere(net, ip)?;
                continue;
            };
            if c.host == me.id {
                continue;
            }
            let state = match holders.get(&c.host) {
                Some(s) => *s,
                None => {
                    let s = self.holder_state(pool, &c)?;
                    holders.insert(c.host.clone(), s);
                    s
                }
            };
            if may_reuse(&c, &me.id, false, state, now, pool.grace_secs, probes) == Reuse::No {
                self.inner.mark_held_elsewhere(net, ip)?;
            }
        }
        Ok(())
    }
}

/// Appends one line to `<root>/fleet/claims.log` when `MVNET_FLEET_LOG` is set.
pub(crate) fn log_claim(root: &Path, what: &str, revision: i64, ip: IpAddr, endpoint: &str) {
    if std::env::var_os("MVNET_FLEET_LOG").is_none() {
        return;
    }
    let path = root.join("fleet").join("claims.log");
    let _ = crate::store::root::private_dir(&root.join("fleet"));
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        // One write per line: processes append to the log at once, and a formatted write
        // would go out in pieces that interleave.
        let line = format!("{what} {revision} {ip} {endpoint} {nanos}\n");
        let _ = f.write_all(line.as_bytes());
    }
}

/// The address at a hash of `seed` in `net`'s first pool (FNV-1a: stable on every build).
fn place_in(net: &Network, seed: &str) -> Option<IpAddr> {
    let (first, last) = net.pools.first()?.pool().first_last()?;
    let size = last - first + 1;
    let h = crate::ids::fnv1a(seed.bytes());
    let at = first + (h as u128 % size);
    u32::try_from(at).ok().map(|a| IpAddr::V4(a.into()))
}

/// Whether an allocation failed for want of a free address.
fn is_full(e: &Error) -> bool {
    matches!(e, Error::Conflict(m) if m.starts_with("no free address left"))
}

impl Store for FleetStore {
    fn keeps_spares(&self) -> bool {
        self.inner.keeps_spares()
    }
    fn spares(&mut self, network_id: &str) -> Result<Vec<Spare>> {
        self.inner.spares(network_id)
    }
    fn unconfirm_spares(&mut self, network_id: &str) -> Result<usize> {
        self.inner.unconfirm_spares(network_id)
    }

    fn after_reply(&mut self) {
        for net in std::mem::take(&mut self.touched) {
            if let Err(e) = self.top_up(&net) {
                tracing::debug!(error = %e, network = %net.name, "spares not topped up (the keeper will)");
            }
        }
    }

    fn end_of_request(&mut self) {
        // A network may be re-created with other options; the keeper may have left.
        self.pools.clear();
        self.spare_nets.clear();
        self.keeper_started = false;
        self.inner.end_of_request();
    }

    fn drop_connections(&mut self) {
        self.coords.clear();
        self.inner.drop_connections();
    }

    fn create_network(
        &mut self,
        net: &Network,
        check: NetworkCheck,
        created_parent: bool,
    ) -> Result<()> {
        if let Some(pool) = &net.fleet {
            // Every host of the pool must mean the same subnet: the first one to create
            // it records it, the others are checked against it.
            let spec = &net.pools[0];
            let ours = PoolConfig {
                subnet: spec.subnet.to_string(),
                gateway: spec.gateway.map(|g| g.to_string()),
                ip_range: spec.ip_range.map(|r| r.to_string()),
            };
            let value = serde_json::to_string(&ours).expect("serializes");
            if let Created::Held { value, .. } =
                self.coord(pool)?.create(&config_key(&pool.pool), &value)?
            {
                let theirs: Option<PoolConfig> = serde_json::from_str(&value).ok();
                if theirs.as_ref() != Some(&ours) {
                    return Err(conflict!(
                        "pool {} is {} on the other hosts, not {}: give every host the same --subnet, --gateway and --ip-range (or another pool name)",
                        pool.pool,
                        theirs.map_or_else(|| value.clone(), |t| describe(&t)),
                        describe(&ours)
                    ));
                }
            }
        }
        self.inner.create_network(net, check, created_parent)?;
        if net.fleet.is_some() {
            // Each host starts its round-robin at its own place in the pool (a hash of
            // its id), so hosts rarely ask for the same address at the same time.
            if let Some(start) = self.start_of(net) {
                self.inner.set_cursor(net, start)?;
            }
        }
        Ok(())
    }
    fn networks(&mut self) -> Result<Vec<Network>> {
        let nets = self.inner.networks()?;
        for n in &nets {
            self.remember(n);
        }
        Ok(nets)
    }
    fn update_network(&mut self, net: &Network) -> Result<()> {
        self.pools.remove(&net.id);
        self.spare_nets.remove(&net.id);
        self.inner.update_network(net)
    }
    fn network(&mut self, name_or_id: &str) -> Result<Network> {
        // Remembered: a detach has read its network already, so the release needs no
        // second read to learn whether the network has a pool.
        let n = self.inner.network(name_or_id)?;
        self.remember(&n);
        Ok(n)
    }
    fn network_named(&mut self, name: &str) -> Result<Option<Network>> {
        let n = self.inner.network_named(name)?;
        if let Some(n) = &n {
            self.remember(n);
        }
        Ok(n)
    }
    fn remove_network(&mut self, id: &str) -> Result<Option<String>> {
        // Its spares' claims go after the local rows (never a claim-less spare here).
        let pool = self.pool_of(id)?;
        let spares = match &pool {
            Some(p) if self.inner.keeps_spares() => self.inner.spares(id)?,
            _ => Vec::new(),
        };
        self.pools.remove(id);
        self.spare_nets.remove(id);
        let parent = self.inner.remove_network(id)?;
        if let Some(pool) = pool {
            for s in spares {
                self.release(&pool, s.ip, &s.id);
            }
        }
        Ok(parent)
    }
    fn parent_is_owned(&mut self, name: &str) -> Result<bool> {
        self.inner.parent_is_owned(name)
    }

    fn reserve_endpoint(&mut self, net: &Network, req: &EndpointRequest) -> Result<Endpoint> {
        let Some(pool) = net.fleet.clone() else {
            return self.inner.reserve_endpoint(net, req);
        };
        if pool.spares > 0 && self.inner.keeps_spares() {
            // Calico-style: an address claimed ahead, taken in one local transaction.
            self.touch(net);
            if self.seen_recently(&pool) {
                if let Some(ep) = self.inner.take_spare(net, req)? {
                    // Its claim still reads "spare": the keeper writes the container's
                    // name into it within a tick, off every attach's path.
                    self.ensure_keeper();
                    return Ok(ep);
                }
            }
        }
        self.drain_queue(&pool);
        let mut refreshed = false;
        for _ in 0..TRIES {
            let mut ep = match self.inner.reserve_endpoint(net, req) {
                Ok(ep) => ep,
                Err(e) if is_full(&e) && !refreshed => {
                    refreshed = true;
                    self.refresh_marks(net, &pool, req.probes)?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some((ip, _)) = ep.ipv4 else {
                return Ok(ep);
            };
            match self.claim(net, &pool, &mut ep, ip, req.probes) {
                Ok(true) => {
                    self.ensure_keeper();
                    return Ok(ep);
                }
                Ok(false) => {
                    self.inner.remove_endpoint(&ep.id)?;
                    if req.static_ipv4.is_some() {
                        return Err(conflict!(
                            "address {ip} is held by another host of pool {} (mvnet pool inspect {} says which); pick another --ip or leave it out to get a free one",
                            pool.pool,
                            pool.pool
                        ));
                    }
                    self.inner.mark_held_elsewhere(net, ip)?;
                    // Another host allocates around here: go on somewhere else (its next
                    // addresses are likely taken too).
                    if let Some(elsewhere) = place_in(net, &ep.id) {
                        self.inner.set_cursor(net, elsewhere)?;
                    }
                }
                Err(e) => {
                    let _ = self.inner.remove_endpoint(&ep.id);
                    return Err(e);
                }
            }
        }
        Err(conflict!(
            "pool {} had no free address in {TRIES} tries: the other hosts hold them (mvnet pool inspect {}); remove containers or widen the pool",
            pool.pool,
            pool.pool
        ))
    }
    fn activate_endpoint(&mut self, id: &str) -> Result<()> {
        self.inner.activate_endpoint(id)
    }
    fn update_endpoint(&mut self, ep: &Endpoint) -> Result<()> {
        self.inner.update_endpoint(ep)
    }
    fn remove_endpoint(&mut self, id: &str) -> Result<Option<Endpoint>> {
        if let Some(ep) = self.detach_into_spare(id)? {
            return Ok(Some(ep));
        }
        let ep = self.inner.remove_endpoint(id)?;
        if let Some(ep) = &ep {
            if let (Some(pool), Some((ip, _))) = (self.pool_of(&ep.network_id)?, ep.ipv4) {
                self.release(&pool, ip, &ep.id);
            }
        }
        Ok(ep)
    }
    fn endpoints_of_network(&mut self, network_id: &str) -> Result<Vec<Endpoint>> {
        self.inner.endpoints_of_network(network_id)
    }
    fn replace_conflicting_address(
        &mut self,
        net: &Network,
        endpoint_id: &str,
        ip: IpAddr,
        holder: Option<MacAddr>,
    ) -> Result<Endpoint> {
        let Some(pool) = net.fleet.clone() else {
            return self
                .inner
                .replace_conflicting_address(net, endpoint_id, ip, holder);
        };
        // The LAN device holds `ip` now: the claim becomes the LAN's, so no host tries it
        // again before the grace period (and then only through the probe).
        let me = self.me()?;
        let key = claim_key(&pool.pool, ip);
        if let Some((value, rev)) = self.coord(&pool)?.get(&key)? {
            if Claim::parse(&value).is_some_and(|c| c.host == me.id && c.endpoint == endpoint_id) {
                let lan = Claim {
                    host: super::LAN_HOST.into(),
                    host_name: "a device on the LAN".into(),
                    endpoint: String::new(),
                    container: String::new(),
                    network: net.name.clone(),
                    since: now_secs(),
                    holder: holder.map(|m| m.to_string()),
                };
                if let Some(r) = self.coord(&pool)?.swap(&key, rev, &lan.to_json())? {
                    self.log("release", r, ip, endpoint_id);
                }
            }
        }
        let mut ep = self
            .inner
            .replace_conflicting_address(net, endpoint_id, ip, holder)?;
        for _ in 0..TRIES {
            let Some((next, _)) = ep.ipv4 else {
                return Ok(ep);
            };
            // A probe is what brought us here: this attach probes.
            if self.claim(net, &pool, &mut ep, next, true)? {
                return Ok(ep);
            }
            // Another host's: step over it as over a device on the LAN.
            ep = self
                .inner
                .replace_conflicting_address(net, endpoint_id, next, None)?;
        }
        Err(conflict!(
            "pool {} had no free address in {TRIES} tries after a LAN conflict",
            pool.pool
        ))
    }
    fn move_leased_address(
        &mut self,
        net: &Network,
        endpoint_id: &str,
        lease: &Lease,
    ) -> Result<Endpoint> {
        self.inner.move_leased_address(net, endpoint_id, lease)
    }
    fn record_lan_conflict(
        &mut self,
        net: &Network,
        ip: IpAddr,
        holder: Option<MacAddr>,
    ) -> Result<()> {
        self.inner.record_lan_conflict(net, ip, holder)
    }
    fn mark_held_elsewhere(&mut self, net: &Network, ip: IpAddr) -> Result<()> {
        self.inner.mark_held_elsewhere(net, ip)
    }
    fn forget_held_elsewhere(&mut self, net: &Network) -> Result<usize> {
        self.inner.forget_held_elsewhere(net)
    }
    fn set_cursor(&mut self, net: &Network, ip: IpAddr) -> Result<()> {
        self.inner.set_cursor(net, ip)
    }
    fn lan_conflicts(&mut self, net: &Network) -> Result<Vec<LanConflict>> {
        self.inner.lan_conflicts(net)
    }
    fn clear_lan_conflicts(&mut self, net: &Network) -> Result<usize> {
        self.inner.clear_lan_conflicts(net)
    }
    fn endpoints_of_container(&mut self, container_id: &str) -> Result<Vec<Endpoint>> {
        self.inner.endpoints_of_container(container_id)
    }
    fn create_container(&mut self, c: &Container) -> Result<()> {
        self.inner.create_container(c)
    }
    fn update_container(&mut self, c: &Container) -> Result<()> {
        self.inner.update_container(c)
    }
    fn containers(&mut self) -> Result<Vec<Container>> {
        self.inner.containers()
    }
    fn container(&mut self, name_or_id: &str) -> Result<Container> {
        self.inner.container(name_or_id)
    }
    fn remove_container(&mut self, id: &str) -> Result<()> {
        self.inner.remove_container(id)
    }
    fn take_reclaimed(&mut self) -> Vec<Endpoint> {
        let eps = self.inner.take_reclaimed();
        for ep in &eps {
            if let (Ok(Some(pool)), Some((ip, _))) = (self.pool_of(&ep.network_id), ep.ipv4) {
                self.release(&pool, ip, &ep.id);
            }
        }
        eps
    }
    fn remove_unreadable_network(&mut self, name_or_id: &str) -> Result<Option<Vec<Endpoint>>> {
        // Claims of the endpoints of a record that cannot be read go back through the
        // keeper's reconciliation (their pool is in the record).
        self.inner.remove_unreadable_network(name_or_id)
    }
    fn remove_unreadable_container(&mut self, name_or_id: &str) -> Result<bool> {
        self.inner.remove_unreadable_container(name_or_id)
    }
}

fn describe(c: &PoolConfig) -> String {
    let mut s = format!("--subnet={}", c.subnet);
    if let Some(g) = &c.gateway {
        s.push_str(&format!(" --gateway={g}"));
    }
    if let Some(r) = &c.ip_range {
        s.push_str(&format!(" --ip-range={r}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CreateNetworkRequest;
    use crate::store::MemoryStore;

    /// 10.103.19.0/29 with .1 the gateway: five addresses, shared as pool "office".
    fn pooled(probe_ms: u32) -> Network {
        let req = CreateNetworkRequest {
            name: "lan".into(),
            subnets: vec!["10.103.19.0/29".into()],
            gateways: vec!["10.103.19.1".into()],
            options: vec!["parent=eth0".into(), format!("probe_ms={probe_ms}")],
            ipam_options: vec![
                "pool=office".into(),
                "etcd=http://10.0.0.5:2379".into(),
                "grace=60".into(),
            ],
            ..Default::default()
        };
        let v = req.validate().unwrap();
        Network {
            id: "net1".into(),
            name: "lan".into(),
            driver: v.driver,
            created: String::new(),
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

    /// A host's store over its own state root, which goes away with it (even when the test
    /// fails).
    struct TestHost(FleetStore);

    impl std::ops::Deref for TestHost {
        type Target = FleetStore;
        fn deref(&self) -> &FleetStore {
            &self.0
        }
    }

    impl std::ops::DerefMut for TestHost {
        fn deref_mut(&mut self) -> &mut FleetStore {
            &mut self.0
        }
    }

    impl Drop for TestHost {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0.root);
        }
    }

    fn host(coord: &MemoryCoordinator, id: &str, net: &Network) -> TestHost {
        let root = std::env::temp_dir().join(format!("mvnet-fleet-{id}-{}", crate::ids::new_id()));
        crate::store::root::prepare(&root).unwrap();
        let mut s = FleetStore::with_memory(
            &root,
            Box::new(MemoryStore::new()),
            coord.clone(),
            HostIdentity {
                id: id.into(),
                name: format!("host-{id}"),
            },
        );
        s.create_network(net, &|_| Ok(()), false).unwrap();
        TestHost(s)
    }

    fn attach(s: &mut FleetStore, net: &Network, name: &str, ip: Option<&str>) -> Result<Endpoint> {
        s.reserve_endpoint(
            net,
            &EndpointRequest {
                container_id: format!("id-{name}"),
                container_name: name.into(),
                netns: "/run/netns/x".into(),
                owner_pid: std::process::id(),
                static_ipv4: ip.map(|i| i.parse().unwrap()),
                probes: net.options.probe_window().is_some(),
                ..Default::default()
            },
        )
    }

    fn ip(ep: &Endpoint) -> String {
        ep.ipv4.unwrap().0.to_string()
    }

    #[test]
    fn two_hosts_never_get_the_same_address() {
        let coord = MemoryCoordinator::new();
        let net = pooled(0);
        let (mut a, mut b) = (host(&coord, "a", &net), host(&coord, "b", &net));
        let mut got = Vec::new();
        for i in 0..5 {
            let s = if i % 2 == 0 { &mut a } else { &mut b };
            got.push(ip(&attach(s, &net, &format!("c{i}"), None).unwrap()));
        }
        let mut unique = got.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 5, "{got:?}");
        // Full on both hosts, with a message that says where the addresses are.
        let e = attach(&mut b, &net, "late", None).unwrap_err().to_string();
        assert!(
            e.contains("no free address") || e.contains("pool office"),
            "{e}"
        );
        // A release on one host frees the address for the other (which learns it when
        // its pool looks full).
        let first = a.endpoints_of_network("net1").unwrap()[0].clone();
        a.remove_endpoint(&first.id).unwrap();
        assert_eq!(ip(&attach(&mut b, &net, "late", None).unwrap()), ip(&first));
    }

    #[test]
    fn a_static_address_another_host_holds_is_refused_and_nothing_is_left() {
        let coord = MemoryCoordinator::new();
        let net = pooled(0);
        let (mut a, mut b) = (host(&coord, "a", &net), host(&coord, "b", &net));
        let held = ip(&attach(&mut a, &net, "web", None).unwrap());
        let e = attach(&mut b, &net, "copy", Some(&held))
            .unwrap_err()
            .to_string();
        assert!(e.contains("held by another host of pool office"), "{e}");
        assert!(b.endpoints_of_network("net1").unwrap().is_empty());
        // The next dynamic attach on b steps over it.
        assert_ne!(ip(&attach(&mut b, &net, "other", None).unwrap()), held);
    }

    #[test]
    fn every_host_must_mean_the_same_subnet() {
        let coord = MemoryCoordinator::new();
        let net = pooled(0);
        let _a = host(&coord, "a", &net);
        let mut other = net.clone();
        other.pools[0].gateway = Some("10.103.19.6".parse().unwrap());
        let root = std::env::temp_dir().join(format!("mvnet-fleet-c-{}", crate::ids::new_id()));
        let mut c = TestHost(FleetStore::with_memory(
            &root,
            Box::new(MemoryStore::new()),
            coord.clone(),
            HostIdentity {
                id: "c".into(),
                name: "host-c".into(),
            },
        ));
        let e = c
            .create_network(&other, &|_| Ok(()), false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("pool office is --subnet=10.103.19.0/29 --gateway=10.103.19.1"),
            "{e}"
        );
        assert!(c.networks().unwrap().is_empty());
    }

    #[test]
    fn without_etcd_no_new_address_and_releases_wait_in_the_queue() {
        let coord = MemoryCoordinator::new();
        let net = pooled(0);
        let mut a = host(&coord, "a", &net);
        let web = attach(&mut a, &net, "web", None).unwrap();
        coord.set_down(true);
        let e = attach(&mut a, &net, "new", None).unwrap_err();
        assert!(matches!(e, Error::Unavailable(_)), "{e}");
        assert_eq!(
            a.endpoints_of_network("net1").unwrap().len(),
            1,
            "nothing left behind"
        );
        // rm works locally; the release waits.
        a.remove_endpoint(&web.id).unwrap();
        assert!(a.endpoints_of_network("net1").unwrap().is_empty());
        assert_eq!(queue::pending(&a.root).len(), 1);
        let mut check = coord.clone();
        coord.set_down(false);
        let key = claim_key("office", web.ipv4.unwrap().0);
        assert!(
            check.get(&key).unwrap().is_some(),
            "still claimed while queued"
        );
        // Back: the next attach gets the queued release through first.
        attach(&mut a, &net, "new", None).unwrap();
        assert!(queue::pending(&a.root).is_empty());
    }

    #[test]
    fn a_gone_hosts_addresses_come_back_only_after_the_grace_period_and_with_the_probe() {
        let coord = MemoryCoordinator::new();
        for (probe, reused) in [(100, true), (0, false)] {
            let coord = MemoryCoordinator::new();
            let net = pooled(probe);
            let (mut a, mut b) = (host(&coord, "a", &net), host(&coord, "b", &net));
            for i in 0..5 {
                attach(&mut a, &net, &format!("c{i}"), None).unwrap();
            }
            let mut kv = coord.clone();
            // Host a was last seen 61 s ago and its lease ran out (no alive key).
            let seen = Seen {
                name: "host-a".into(),
                at: now_secs() - 61,
            };
            kv.create(
                &super::super::seen_key("a"),
                &serde_json::to_string(&seen).unwrap(),
            )
            .unwrap();
            // The claims are older than that too.
            for (k, v, r) in kv.list(&super::super::claims_prefix("office")).unwrap() {
                let mut c = Claim::parse(&v).unwrap();
                c.since -= 120;
                kv.swap(&k, r, &c.to_json()).unwrap();
            }
            let got = attach(&mut b, &net, "new", None);
            assert_eq!(got.is_ok(), reused, "probe_ms={probe}: {got:?}");
        }
        drop(coord);
        // Still alive (its alive key exists): never.
        let coord = MemoryCoordinator::new();
        let net = pooled(100);
        let (mut a, mut b) = (host(&coord, "a", &net), host(&coord, "b", &net));
        for i in 0..5 {
            attach(&mut a, &net, &format!("c{i}"), None).unwrap();
        }
        let mut kv = coord.clone();
        kv.create(&super::super::alive_key("a"), "host-a").unwrap();
        assert!(attach(&mut b, &net, "new", None).is_err());
    }

    #[test]
    fn a_lan_conflict_hands_the_address_to_the_lan_and_claims_the_next() {
        let coord = MemoryCoordinator::new();
        let net = pooled(100);
        let mut a = host(&coord, "a", &net);
        let ep = attach(&mut a, &net, "web", None).unwrap();
        let old = ep.ipv4.unwrap().0;
        let moved = a
            .replace_conflicting_address(&net, &ep.id, old, Some(MacAddr([2, 0, 0, 0, 0, 9])))
            .unwrap();
        let new = moved.ipv4.unwrap().0;
        assert_ne!(new, old);
        let mut kv = coord.clone();
        let lan = Claim::parse(&kv.get(&claim_key("office", old)).unwrap().unwrap().0).unwrap();
        assert_eq!(lan.host, super::super::LAN_HOST);
        assert_eq!(lan.holder.as_deref(), Some("02:00:00:00:00:09"));
        let mine = Claim::parse(&kv.get(&claim_key("office", new)).unwrap().unwrap().0).unwrap();
        assert_eq!(
            (mine.host.as_str(), mine.endpoint.as_str()),
            ("a", ep.id.as_str())
        );
    }
    /// A host with `--ipam-opt spares=2` over the real SQLite store.
    fn sqlite_host(coord: &MemoryCoordinator, id: &str, net: &Network) -> TestHost {
        let root = std::env::temp_dir().join(format!("mvnet-spares-{id}-{}", crate::ids::new_id()));
        crate::store::root::prepare(&root).unwrap();
        let inner = crate::store::SqliteStore::open(&root).unwrap();
        let mut s = FleetStore::with_memory(
            &root,
            Box::new(inner),
            coord.clone(),
            HostIdentity {
                id: id.into(),
                name: format!("host-{id}"),
            },
        );
        s.create_network(net, &|_| Ok(()), false).unwrap();
        TestHost(s)
    }

    fn claims(coord: &MemoryCoordinator) -> Vec<(IpAddr, Claim)> {
        let mut c = coord.clone();
        let prefix = super::super::claims_prefix("office");
        c.list(&prefix)
            .unwrap()
            .into_iter()
            .map(|(k, v, _)| {
                (
                    k.strip_prefix(&prefix).unwrap().parse().unwrap(),
                    Claim::parse(&v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn spares_are_claimed_ahead_taken_without_etcd_and_given_back_on_detach() {
        let coord = MemoryCoordinator::new();
        let mut net = pooled(0);
        net.fleet.as_mut().unwrap().spares = 2;
        let mut a = sqlite_host(&coord, "a", &net);
        let root = a.root.clone();
        a.top_up(&net).unwrap();
        let spares = a.spares("net1").unwrap();
        assert_eq!(spares.len(), 2);
        assert!(spares.iter().all(|s| s.confirmed));
        let held = claims(&coord);
        assert_eq!(held.len(), 2);
        for s in &spares {
            let (_, c) = held.iter().find(|(ip, _)| *ip == s.ip).unwrap();
            assert_eq!(
                (c.host.as_str(), c.endpoint.as_str(), c.container.as_str()),
                ("a", s.id.as_str(), "")
            );
        }
        // Without a recent sign of life from the keeper, no spare is used: the attach
        // claims an address of its own.
        let plain = attach(&mut a, &net, "plain", None).unwrap();
        assert!(spares.iter().all(|s| s.id != plain.id));
        assert_eq!(claims(&coord).len(), 3);
        // Alive just now: an attach takes a spare, with etcd down (no round trip at all).
        super::super::keeper::note_seen(&root, &["http://10.0.0.5:2379".to_string()], now_secs());
        coord.set_down(true);
        let web = attach(&mut a, &net, "web", None).unwrap();
        let taken = spares
            .iter()
            .find(|s| s.id == web.id)
            .expect("a spare's id");
        assert_eq!(web.ipv4.unwrap().0, taken.ip);
        assert_eq!(a.spares("net1").unwrap().len(), 1);
        // A detach gives the address back as a spare (unconfirmed until checked), with
        // nothing queued for etcd.
        a.network("lan").unwrap();
        a.remove_endpoint(&web.id).unwrap();
        let back = a.spares("net1").unwrap();
        assert_eq!(back.len(), 2);
        assert!(back
            .iter()
            .any(|s| s.id == web.id && !s.confirmed && s.owner_pid == 0));
        assert!(queue::is_empty(&root));
        // Back up: the check confirms it (the claim is still ours) and nothing new is
        // claimed; the keeper's reconcile keeps every spare's claim.
        coord.set_down(false);
        a.top_up(&net).unwrap();
        let now = a.spares("net1").unwrap();
        assert_eq!(now.len(), 2);
        assert!(now.iter().all(|s| s.confirmed));
        assert_eq!(claims(&coord).len(), 3);
        let mut c = coord.clone();
        let (released, _) =
            super::super::keeper::reconcile(&mut c, &mut a.0, &net, "a", "host-a", &root).unwrap();
        assert_eq!(released, 0);
        // Out of touch for a while (the keeper unconfirms them): no spare is taken until
        // each is checked again.
        assert_eq!(a.unconfirm_spares("net1").unwrap(), 2);
        coord.set_down(true);
        let e = attach(&mut a, &net, "while-unsure", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("did not answer"), "{e}");
        coord.set_down(false);
        a.top_up(&net).unwrap();
        assert!(a.spares("net1").unwrap().iter().all(|s| s.confirmed));
        // Another host never gets a spare of a.
        let mut b = sqlite_host(&coord, "b", &net);
        let mut got = Vec::new();
        while let Ok(ep) = attach(&mut b, &net, &format!("b{}", got.len()), None) {
            got.push(ep.ipv4.unwrap().0);
        }
        assert_eq!(got.len(), 2, "five addresses: three held by a");
        for s in &now {
            assert!(!got.contains(&s.ip), "{} is a's spare", s.ip);
        }
        // Removing the network gives the spares' claims back.
        a.remove_endpoint(&plain.id).unwrap();
        a.remove_network("net1").unwrap();
        assert!(
            claims(&coord).iter().all(|(_, c)| c.host == "b"),
            "{:?}",
            claims(&coord)
        );
    }
}
