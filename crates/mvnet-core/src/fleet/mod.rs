//! Fleets: several hosts on one LAN share one address pool, and etcd (an existing
//! distributed store, never a home-made one) records who holds which address.
//!
//! A network made with `--ipam-opt pool=NAME` on every host (same subnet, same name) is one
//! pool. Each host keeps its own endpoints, links and containers in its SQLite store, as
//! always; etcd holds one key per address in use:
//!
//! ```text
//! /mvnet/v1/pools/<pool>/config      the subnet every host must agree on
//! /mvnet/v1/pools/<pool>/ip/<addr>   who holds <addr>: host, endpoint, container, since
//! /mvnet/v1/hosts/<host>/alive       bound to the host's etcd lease (its keeper renews it)
//! /mvnet/v1/hosts/<host>/seen        when the host was last seen alive (not leased)
//! ```
//!
//! - **Claim before use.** An address is claimed in etcd (a transaction that creates the
//!   key only if it does not exist) after its local row exists and before any link has it;
//!   it is released after the link is gone. A crash in between leaves a claim without a
//!   row, which the host's keeper (and `mvnet restore`) releases: never a duplicate.
//! - **One round trip per attach** in the steady state: the local allocator picks the
//!   candidate, and an address found held by another host is marked locally so it is not
//!   tried again (until the pool looks full, when the marks are refreshed from etcd).
//! - **Liveness without false frees.** Address keys are *not* bound to etcd leases: a host
//!   that is only cut off from etcd may still run its containers. A host's keeper renews an
//!   `alive` key on a lease and a `seen` time; another host reuses an address of a host
//!   that has been gone for the pool's grace period (default 60 s) only through the
//!   conflict probe, which keeps it off an address whose container still answers.
//! - **No quorum, no new address.** etcd calls give up after 3 s with a message; removals
//!   work locally, and their releases wait in a queue (`queue.rs`) until etcd is back.
//!
//! - `coord.rs`: the etcd operations behind a trait (and an in-memory fake);
//! - `store.rs`: the `Store` wrapper that claims and releases around the local store;
//! - `queue.rs`: releases waiting for etcd;
//! - `keeper.rs`: the per-host process that keeps the host alive in etcd and drains the
//!   queue;
//! - `view.rs`: what `mvnet pool ls` and `pool inspect` show.

pub mod coord;
pub mod keeper;
pub mod queue;
mod store;
pub mod view;

pub use store::FleetStore;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::FleetPool;
use crate::{Error, Result};

const PREFIX: &str = "/mvnet/v1";
/// The holder of an address a LAN device (not a host of the fleet) answered for.
pub const LAN_HOST: &str = "lan";

pub fn config_key(pool: &str) -> String {
    format!("{PREFIX}/pools/{pool}/config")
}
pub fn claims_prefix(pool: &str) -> String {
    format!("{PREFIX}/pools/{pool}/ip/")
}
pub fn claim_key(pool: &str, ip: IpAddr) -> String {
    format!("{}{ip}", claims_prefix(pool))
}
pub fn pools_prefix() -> String {
    format!("{PREFIX}/pools/")
}
pub fn hosts_prefix() -> String {
    format!("{PREFIX}/hosts/")
}
pub fn alive_key(host: &str) -> String {
    format!("{PREFIX}/hosts/{host}/alive")
}
pub fn seen_key(host: &str) -> String {
    format!("{PREFIX}/hosts/{host}/seen")
}

/// Who holds an address (the value of its key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub host: String,
    #[serde(default)]
    pub host_name: String,
    #[serde(default)]
    pub endpoint: String,
    #[serde(default)]
    pub container: String,
    #[serde(default)]
    pub network: String,
    /// Unix seconds.
    pub since: i64,
    /// For `host == "lan"`: the MAC of the LAN device that answered the probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
}

impl Claim {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("claims serialize")
    }
    pub fn parse(s: &str) -> Option<Claim> {
        serde_json::from_str(s).ok()
    }
}

/// What every host of a pool must agree on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolConfig {
    pub subnet: String,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub ip_range: Option<String>,
}

/// `/mvnet/v1/hosts/<host>/seen`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub name: String,
    /// Unix seconds.
    pub at: i64,
}

/// This host in the fleet: a random id kept in the state root (so two state roots on one
/// machine, as in the lab, are two hosts), and a name for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostIdentity {
    pub id: String,
    pub name: String,
}

fn identity_file(root: &Path) -> PathBuf {
    root.join("fleet").join("host-id")
}

/// This state root's host identity, made on first use. The name is `MVNET_HOST_NAME`, or
/// the machine's host name.
pub fn host_identity(root: &Path) -> Result<HostIdentity> {
    let path = identity_file(root);
    let id = match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
        _ => {
            let dir = path.parent().expect("a parent");
            crate::store::root::private_dir(dir)?;
            let id = crate::ids::new_id()[..16].to_string();
            // Written whole, then linked into place: two first uses at once agree on the
            // one that was linked first.
            let tmp = dir.join(format!("host-id.{}", std::process::id()));
            {
                use std::io::Write;
                let mut f = crate::store::root::create_private_file(&tmp)?;
                f.write_all(id.as_bytes())
                    .map_err(|e| Error::io(format!("write {}", tmp.display()), e))?;
            }
            std::fs::hard_link(&tmp, &path).ok();
            let _ = std::fs::remove_file(&tmp);
            std::fs::read_to_string(&path)
                .map(|s| s.trim().to_string())
                .map_err(|e| Error::io(format!("read {}", path.display()), e))?
        }
    };
    let name = std::env::var("MVNET_HOST_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| id.clone())
        });
    Ok(HostIdentity { id, name })
}

/// The etcd endpoints of a pool: its own, else `MVNET_ETCD`.
pub fn etcd_endpoints(pool: &FleetPool) -> Result<Vec<String>> {
    if !pool.etcd.is_empty() {
        return Ok(pool.etcd.clone());
    }
    match std::env::var("MVNET_ETCD") {
        Ok(v) if !v.trim().is_empty() => crate::model::network::parse_etcd_endpoints(&v),
        _ => Err(crate::invalid!(
            "pool {} names no etcd cluster: give --ipam-opt etcd=http://HOST:2379[,...] when creating the network, or set MVNET_ETCD for every mvnet process on this host",
            pool.pool
        )),
    }
}

/// Releases `host`'s claim of `ip` for `endpoint`, if it is still theirs (a read, then a
/// delete guarded by the revision read). The revision of the release, or `None` when the
/// claim is gone or belongs to somebody else now.
pub fn release_claim(
    coord: &mut dyn coord::Coordinator,
    pool: &str,
    ip: IpAddr,
    host: &str,
    endpoint: &str,
) -> Result<Option<i64>> {
    let key = claim_key(pool, ip);
    for _ in 0..5 {
        let Some((value, rev)) = coord.get(&key)? else {
            return Ok(None);
        };
        if !Claim::parse(&value).is_some_and(|c| c.host == host && c.endpoint == endpoint) {
            return Ok(None);
        }
        if let Some(r) = coord.delete_if(&key, rev)? {
            return Ok(Some(r));
        }
        // Written since it was read: by a take-over, or by this very delete when its
        // answer was lost and it was sent again. etcd's history says which.
        if let Some((r, true)) = coord.first_change_after(&key, rev)? {
            return Ok(Some(r));
        }
    }
    Ok(None)
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// What is known about the holder of a claim another host (or the LAN) made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HolderState {
    /// Its `alive` key exists (its lease is being renewed).
    pub alive: bool,
    /// When it was last seen alive (unix seconds), if ever.
    pub seen: Option<i64>,
}

/// Whether an address held as `claim` may be taken over by host `me`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reuse {
    /// Ours, for an endpoint this host no longer has (a crash between the local removal
    /// and the release): take it back.
    OwnLeftover,
    /// The holder has been gone for the grace period: take it, and let the conflict probe
    /// decide (a container that still answers keeps it).
    Gone,
    /// Keep off.
    No,
}

/// The reuse rule (pure): see the module's "liveness without false frees".
pub fn may_reuse(
    claim: &Claim,
    me: &str,
    we_have_endpoint: bool,
    holder: HolderState,
    now: i64,
    grace_secs: u32,
    probe_on: bool,
) -> Reuse {
    if claim.host == me {
        return if we_have_endpoint {
            Reuse::No
        } else {
            Reuse::OwnLeftover
        };
    }
    if !probe_on || holder.alive {
        return Reuse::No;
    }
    let last = holder.seen.unwrap_or(claim.since).max(claim.since);
    if now - last >= grace_secs as i64 {
        Reuse::Gone
    } else {
        Reuse::No
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(host: &str, since: i64) -> Claim {
        Claim {
            host: host.into(),
            host_name: host.into(),
            endpoint: "ep".into(),
            container: "web".into(),
            network: "lan".into(),
            since,
            holder: None,
        }
    }

    #[test]
    fn keys_are_per_pool_and_address() {
        let ip: IpAddr = "10.103.19.7".parse().unwrap();
        assert_eq!(
            claim_key("office", ip),
            "/mvnet/v1/pools/office/ip/10.103.19.7"
        );
        assert!(claim_key("office", ip).starts_with(&claims_prefix("office")));
        assert_eq!(alive_key("h1"), "/mvnet/v1/hosts/h1/alive");
        let c = claim("h1", 5);
        assert_eq!(Claim::parse(&c.to_json()), Some(c));
    }

    #[test]
    fn reuse_needs_a_gone_holder_the_grace_period_and_the_probe() {
        let gone = HolderState {
            alive: false,
            seen: Some(1000),
        };
        let c = claim("other", 900);
        assert_eq!(may_reuse(&c, "me", false, gone, 1059, 60, true), Reuse::No);
        assert_eq!(
            may_reuse(&c, "me", false, gone, 1060, 60, true),
            Reuse::Gone
        );
        // Alive (its lease renewed), or no probe to protect a running container: never.
        let alive = HolderState {
            alive: true,
            seen: Some(0),
        };
        assert_eq!(
            may_reuse(&c, "me", false, alive, 99_999, 60, true),
            Reuse::No
        );
        assert_eq!(
            may_reuse(&c, "me", false, gone, 99_999, 60, false),
            Reuse::No
        );
        // Never seen: the claim's own time counts.
        let never = HolderState {
            alive: false,
            seen: None,
        };
        assert_eq!(may_reuse(&c, "me", false, never, 959, 60, true), Reuse::No);
        assert_eq!(
            may_reuse(&c, "me", false, never, 960, 60, true),
            Reuse::Gone
        );
        // Our own claim: back to us only when we no longer have the endpoint.
        let mine = claim("me", 0);
        assert_eq!(
            may_reuse(&mine, "me", true, gone, 99_999, 60, true),
            Reuse::No
        );
        assert_eq!(
            may_reuse(&mine, "me", false, gone, 0, 60, false),
            Reuse::OwnLeftover
        );
    }

    #[test]
    fn endpoints_come_from_the_pool_or_the_environment() {
        let p = FleetPool {
            pool: "office".into(),
            etcd: vec!["http://10.0.0.5:2379".into()],
            grace_secs: 60,
            spares: 0,
        };
        assert_eq!(etcd_endpoints(&p).unwrap(), ["http://10.0.0.5:2379"]);
    }
}
