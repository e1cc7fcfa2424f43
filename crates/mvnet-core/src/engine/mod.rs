//! The engine orders store and kernel work so that bad input changes nothing and a failure
//! half-way rolls back: validate -> reserve in the store -> kernel -> confirm.
//! Every front end (CLI, CNI, Docker plugin) goes through here; none touches the store.
//!
//! - `mod.rs`: networks (create, remove, parents) and read access for front ends;
//! - `attach.rs`: the one attach and detach path;
//! - `handover.rs`: links a container runtime moves itself (Docker's `Join`);
//! - `hostaccess.rs`: the host-side shim that lets the host reach its containers.

mod attach;
mod dhcp;
mod handover;
pub mod hostaccess;
#[cfg(test)]
mod rollback;

pub use attach::{
    resolve_conflict, routes_from_ipam, Addressing, AttachOptions, AttachRequest, AttachTarget,
    Attached, LinkSettings, NetworkSpec, StaticAddressPolicy,
};

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::KernelContext;
use crate::model::{
    network::ValidatedRequest, Container, CreateNetworkRequest, Driver, Endpoint, LanConflict,
    MacvlanMode, Network,
};
use crate::netlink::Link;
use crate::os::{Os, RealOs, Rtnl};
use crate::store::{SqliteStore, Store};
use crate::{conflict, invalid, not_found, Error, Result};

/// Where state lives unless `--root` or `MVNET_ROOT` says otherwise.
pub const DEFAULT_ROOT: &str = "/var/lib/mvnet";

pub struct Engine {
    root: PathBuf,
    store: Box<dyn Store>,
    os: Box<dyn Os>,
}

impl Engine {
    /// The engine of the state root `root`, on the real kernel.
    pub fn open(root: &Path) -> Result<Engine> {
        Ok(Engine::with_store(root, Engine::open_store(root)?))
    }

    /// `open`, for a root whose database exists already: what work in the background uses
    /// (a lease renewal, a plugin's delayed announcement), which may come after the root was
    /// removed and must not bring it back.
    pub fn open_existing(root: &Path) -> Result<Engine> {
        Ok(Engine::with_store(root, Engine::open_existing_store(root)?))
    }

    /// The store `open` uses: SQLite, and for shared pools (`--ipam-opt pool=`) the etcd
    /// claims around it; other networks pass straight through.
    pub fn open_store(root: &Path) -> Result<Box<dyn Store>> {
        let store = crate::fleet::FleetStore::new(root, Box::new(SqliteStore::open(root)?));
        Ok(Box::new(store))
    }

    /// `open_store` for a root whose database must exist already (a resident agent's
    /// worker: its root may have been removed under it, and must stay removed).
    pub fn open_existing_store(root: &Path) -> Result<Box<dyn Store>> {
        let store =
            crate::fleet::FleetStore::new(root, Box::new(SqliteStore::open_existing(root)?));
        Ok(Box::new(store))
    }

    /// The engine of `root` over a store opened before (a resident process keeps its store,
    /// and its etcd connections, from one request to the next).
    pub fn with_store(root: &Path, store: Box<dyn Store>) -> Engine {
        Engine::with_parts(root, store, Box::new(RealOs::new()))
    }

    /// Gives the store back, ready for the next request (see `with_store`).
    pub fn into_store(mut self) -> Box<dyn Store> {
        self.store.end_of_request();
        self.store
    }

    /// The engine of `root` without etcd: what a teardown of the whole root uses (a lab
    /// going away has nobody to hand its shared addresses to).
    pub fn open_local(root: &Path) -> Result<Engine> {
        Ok(Engine::with_parts(
            root,
            Box::new(SqliteStore::open(root)?),
            Box::new(RealOs::new()),
        ))
    }

    /// Commits a reserved endpoint (marks it active). In an agent whose caller ended while
    /// it waited (see `resident::caller_gone`), fails instead, so the attach rolls back as
    /// it would have in the killed process itself.
    pub(crate) fn commit_endpoint(&mut self, id: &str) -> Result<()> {
        if crate::resident::caller_gone() {
            return Err(Error::Unavailable(
                "the command's caller ended before the attach was committed; rolled back: run it again".into(),
            ));
        }
        self.store.activate_endpoint(id)
    }

    /// An engine over any store and OS (unit tests use the in-memory ones).
    pub fn with_parts(root: &Path, store: Box<dyn Store>, os: Box<dyn Os>) -> Engine {
        Engine {
            root: root.to_path_buf(),
            store,
            os,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The store, for the core's own modules (front ends read through the methods below).
    pub(crate) fn store(&mut self) -> &mut dyn Store {
        self.store.as_mut()
    }

    /// rtnetlink of the namespace mvnet runs in (the host's).
    pub(crate) fn netlink(&mut self) -> Result<&mut dyn Rtnl> {
        self.os.host()
    }

    /// Runs `f` with the host's rtnetlink and the store at once (kernel work whose conflict
    /// handler writes to the store).
    pub(crate) fn with_netlink_and_store<R>(
        &mut self,
        f: impl FnOnce(&mut dyn Rtnl, &mut dyn Store) -> Result<R>,
    ) -> Result<R> {
        let nl = self.os.host()?;
        f(nl, self.store.as_mut())
    }

    // ----- reads, for front ends --------------------------------------------------------

    pub fn endpoints_of_network(&mut self, network_id: &str) -> Result<Vec<Endpoint>> {
        self.store.endpoints_of_network(network_id)
    }

    pub fn endpoints_of_container(&mut self, container_id: &str) -> Result<Vec<Endpoint>> {
        self.store.endpoints_of_container(container_id)
    }

    pub fn lan_conflicts(&mut self, net: &Network) -> Result<Vec<LanConflict>> {
        self.store.lan_conflicts(net)
    }

    /// Forgets the LAN conflicts of `net`; returns how many.
    pub fn clear_lan_conflicts(&mut self, net: &Network) -> Result<usize> {
        self.store.clear_lan_conflicts(net)
    }

    pub fn containers(&mut self) -> Result<Vec<Container>> {
        self.store.containers()
    }

    /// By exact name, full id, or unique id prefix.
    pub fn container(&mut self, name_or_id: &str) -> Result<Container> {
        self.store.container(name_or_id)
    }

    // ----- networks -------------------------------------------------------------------

    /// Creates a network. Returns it with notices for the user (e.g. the parent picked).
    pub fn create_network(&mut self, req: &CreateNetworkRequest) -> Result<(Network, Vec<String>)> {
        let v: ValidatedRequest = req.validate()?;
        let mut notices: Vec<String> = v.warnings.iter().map(|w| format!("warning: {w}")).collect();
        let mut options = v.options;
        if options.parent.is_empty() {
            let parent = self.default_parent()?;
            notices.push(format!(
                "no -o parent given: using {parent}, the interface that holds the default route"
            ));
            options.parent = parent;
        }
        crate::model::network::fold_vlan_option(&mut options)?;
        options.lan = self.lower_device_of(&options.parent)?;
        if let Some(lower) = &options.lan {
            notices.push(format!(
                "warning: parent {} is itself a macvlan of {lower}, so this network shares {lower}'s LAN and address book; giving -o parent={lower} says so directly",
                options.parent
            ));
        }
        let net = Network {
            id: req.id.clone().unwrap_or_else(crate::ids::new_id),
            name: req.name.clone(),
            driver: v.driver,
            created: crate::model::time::now_rfc3339(),
            pools: v.pools,
            internal: req.internal,
            ipv6: v.ipv6,
            ipv4_disabled: v.ipv4_disabled,
            dhcp: v.dhcp,
            fleet: v.fleet,
            labels: v.labels,
            options,
        };
        // Refuse what the store would refuse before creating any link.
        let existing = self.store.networks()?;
        if existing.iter().any(|n| n.name == net.name) {
            return Err(conflict!(
                "network with name {} already exists; pick another name or remove it first (mvnet network rm {})",
                net.name,
                net.name
            ));
        }
        check_against_existing(&net, &existing)?;
        if net.options.host_access {
            crate::engine::hostaccess::check_supported(&net)?;
        }
        let (parent, created) = self.ensure_parent(&net.options.parent, net.driver)?;
        let stored = (|| {
            if let Some(mtu) = net.options.mtu {
                if mtu > parent.mtu {
                    return Err(invalid!(
                        "-o mtu={mtu} is larger than the MTU {} of parent {}; use -o mtu={} or less",
                        parent.mtu,
                        parent.name,
                        parent.mtu
                    ));
                }
            }
            if created {
                notices.push(format!("created 802.1Q parent {}", parent.name));
            }
            let check = |existing: &[Network]| check_against_existing(&net, existing);
            self.store.create_network(&net, &check, created)
        })();
        if let Err(e) = stored {
            if created {
                let _ = self.delete_parent(&parent.name);
            }
            return Err(e);
        }
        if net.options.host_access {
            if let Err(e) = self.sync_host_access(&net) {
                let _ = self.remove_network(&net.id);
                return Err(e);
            }
            notices.push(format!(
                "host access: this host reaches the network's containers through {}",
                crate::engine::hostaccess::shim_name(&net)
            ));
        }
        Ok((net, notices))
    }

    /// The device under `parent` when `parent` is a macvlan (or macvtap): the kernel puts a
    /// macvlan of a macvlan on the lower device, so both are one LAN.
    fn lower_device_of(&mut self, parent: &str) -> Result<Option<String>> {
        let nl = self.netlink()?;
        let Some(link) = nl
            .link_by_name(parent)
            .map_err(|e| Error::kernel(format!("look up parent {}", crate::quote(parent)), e))?
        else {
            return Ok(None);
        };
        if !matches!(link.kind.as_str(), "macvlan" | "macvtap") {
            return Ok(None);
        }
        let Some(lower) = link.parent_index else {
            return Ok(None);
        };
        Ok(nl
            .link_by_index(lower)
            .kernel(format!("look up the device under {parent}"))?
            .map(|l| l.name))
    }

    pub fn networks(&mut self) -> Result<Vec<Network>> {
        self.store.networks()
    }

    // ----- shared pools (fleets) --------------------------------------------------------

    /// The shared pools this host's networks use, each with its networks here.
    pub fn fleet_pools(&mut self) -> Result<Vec<(crate::model::FleetPool, Vec<Network>)>> {
        let mut out: Vec<(crate::model::FleetPool, Vec<Network>)> = Vec::new();
        for n in self.store.networks()? {
            let Some(p) = n.fleet.clone() else { continue };
            match out.iter_mut().find(|(q, _)| q.pool == p.pool) {
                Some((_, nets)) => nets.push(n),
                None => out.push((p, vec![n])),
            }
        }
        Ok(out)
    }

    /// `mvnet pool inspect NAME`, from etcd.
    pub fn pool_inspect(&mut self, name: &str) -> Result<serde_json::Value> {
        let (pool, nets) = self
            .fleet_pools()?
            .into_iter()
            .find(|(p, _)| p.pool == name)
            .ok_or_else(|| {
                not_found!(
                    "no network on this host uses pool {}; mvnet pool ls lists the pools here",
                    crate::quote(name)
                )
            })?;
        let mut coord =
            crate::fleet::coord::EtcdCoordinator::new(&crate::fleet::etcd_endpoints(&pool)?)?;
        crate::fleet::view::inspect(&pool, &nets, &mut coord)
    }

    /// Makes etcd and this host's rows agree for every shared pool (`mvnet restore`; the
    /// keeper does it every 30 s): stale claims of this host released, lost ones made again.
    pub fn fleet_reconcile(&mut self) -> Result<Vec<String>> {
        let mut done = Vec::new();
        let me = crate::fleet::host_identity(&self.root)?;
        for (pool, nets) in self.fleet_pools()? {
            let mut coord =
                crate::fleet::coord::EtcdCoordinator::new(&crate::fleet::etcd_endpoints(&pool)?)?;
            for net in nets {
                let (released, claimed) = crate::fleet::keeper::reconcile(
                    &mut coord,
                    self.store.as_mut(),
                    &net,
                    &me.id,
                    &me.name,
                    &self.root,
                )?;
                if released + claimed > 0 {
                    done.push(format!(
                        "pool {} (network {}): released {released} stale claims, claimed {claimed} again",
                        pool.pool, net.name
                    ));
                }
            }
        }
        Ok(done)
    }

    pub fn network(&mut self, name_or_id: &str) -> Result<Network> {
        self.store.network(name_or_id)
    }

    /// Removes a network; a VLAN parent mvnet created goes with the last network using it.
    pub fn remove_network(&mut self, name_or_id: &str) -> Result<Network> {
        let net = match self.store.network(name_or_id) {
            Ok(net) => net,
            // A row that cannot be read is removed as it is (with its endpoints' links),
            // so one corrupt record never blocks the command that repairs it.
            Err(e) => match self.store.remove_unreadable_network(name_or_id)? {
                Some(eps) => {
                    for ep in eps.iter().filter(|e| !e.netns.is_empty()) {
                        let _ = crate::driver::delete_endpoint_link(
                            self.os.as_mut(),
                            &ep.netns,
                            &ep.ifname,
                            Some(ep.mac),
                        );
                    }
                    crate::warn_user(&format!(
                        "removed network {}, whose stored record was corrupt",
                        crate::quote(name_or_id)
                    ));
                    return Ok(Network {
                        id: String::new(),
                        name: name_or_id.to_string(),
                        driver: Driver::Macvlan,
                        created: String::new(),
                        pools: Vec::new(),
                        internal: false,
                        ipv6: false,
                        ipv4_disabled: false,
                        dhcp: false,
                        fleet: None,
                        labels: Default::default(),
                        options: Default::default(),
                    });
                }
                None => return Err(e),
            },
        };
        let eps = self.store.endpoints_of_network(&net.id)?;
        let containers: Vec<&str> = eps
            .iter()
            .filter(|e| !crate::engine::hostaccess::is_host_endpoint(e))
            .map(|e| e.container_name.as_str())
            .collect();
        if !containers.is_empty() {
            return Err(conflict!(
                "error while removing network: network {} id {} has active endpoints ({}); disconnect or remove them first",
                net.name,
                crate::ids::short(&net.id),
                containers.join(", ")
            ));
        }
        // The host-access shim goes with its network.
        self.remove_host_access(&net)?;
        if let Some(parent) = self.store.remove_network(&net.id)? {
            self.delete_parent(&parent)?;
        }
        Ok(net)
    }

    /// Removes every network without endpoints; returns their names.
    pub fn prune_networks(&mut self) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for net in self.store.networks()? {
            let busy = self
                .store
                .endpoints_of_network(&net.id)?
                .iter()
                .any(|e| !crate::engine::hostaccess::is_host_endpoint(e));
            if !busy && self.remove_network(&net.id).is_ok() {
                removed.push(net.name);
            }
        }
        Ok(removed)
    }

    fn delete_parent(&mut self, name: &str) -> Result<()> {
        self.os
            .host()?
            .delete_link_by_name(name)
            .map(|_| ())
            .kernel(format!("delete parent {name}"))
    }

    fn ensure_parent(&mut self, name: &str, driver: Driver) -> Result<(Link, bool)> {
        crate::parent::ensure(self.netlink()?, name, &driver.to_string())
    }

    /// The parent of an existing network, re-created if it is a VLAN parent mvnet made that
    /// has gone missing (after a reboot, say).
    pub(crate) fn parent_link_for(&mut self, net: &Network) -> Result<Link> {
        let name = &net.options.parent;
        let found = self
            .netlink()?
            .link_by_name(name)
            .kernel(format!("look up parent {name}"))?;
        match found {
            Some(l) => Ok(l),
            None if self.store.parent_is_owned(name)? => {
                let (base, vid) = crate::model::network::parse_vlan_parent(name)?
                    .ok_or_else(|| Error::Internal(format!("owned parent {name} is not a VLAN name")))?;
                tracing::info!(parent = %name, "re-creating missing 802.1Q parent");
                Ok(crate::parent::create_vlan(self.netlink()?, name, &base, vid)?.0)
            }
            None => Err(not_found!(
                "parent interface {name} of network {} is missing; bring it back, or remove the network (mvnet network rm {})",
                net.name,
                net.name
            )),
        }
    }

    /// Whether each network's parent exists right now (for `network ls`).
    pub fn parents_present(&mut self) -> Result<HashMap<String, bool>> {
        let links = self.netlink()?.links().kernel("list links")?;
        let mut out = HashMap::new();
        for net in self.store.networks()? {
            let present = links.iter().any(|l| l.name == net.options.parent);
            out.insert(net.id, present);
        }
        Ok(out)
    }

    /// The interface that holds the default route: the parent when none is given.
    pub fn default_parent(&mut self) -> Result<String> {
        let nl = self.netlink()?;
        let routes = nl.routes(false).kernel("read routes")?;
        let oif = routes
            .iter()
            .find(|r| r.destination.is_none() && r.oif.is_some())
            .and_then(|r| r.oif)
            .ok_or_else(|| {
                invalid!("no -o parent given and this host has no default route to pick one from; pass -o parent=IF")
            })?;
        let link = nl
            .link_by_index(oif)
            .kernel("look up default-route interface")?
            .ok_or_else(|| invalid!("the default-route interface vanished; pass -o parent=IF"))?;
        Ok(link.name)
    }
}

/// Rules across networks on one parent (run inside the store's write transaction).
pub fn check_against_existing(net: &Network, existing: &[Network]) -> Result<()> {
    for other in existing
        .iter()
        .filter(|o| o.address_domain() == net.address_domain())
    {
        // Better than the kernel's "device or resource busy": say who holds the parent.
        if other.driver != net.driver {
            return Err(conflict!(
                "cannot put an {} network on parent {}: {} network {} already uses it, and macvlan and ipvlan cannot share a parent",
                net.driver,
                net.options.parent,
                other.driver,
                other.name
            ));
        }
        if net.driver == Driver::Ipvlan
            && (other.options.ipvlan_mode != net.options.ipvlan_mode
                || other.options.ipvlan_flag != net.options.ipvlan_flag)
        {
            return Err(conflict!(
                "ipvlan network {} already uses parent {} with ipvlan_mode={} ipvlan_flag={}; networks sharing a parent must use the same mode and flag (the kernel keeps one per parent)",
                other.name,
                net.options.parent,
                other.options.ipvlan_mode,
                other.options.ipvlan_flag
            ));
        }
        if net.options.macvlan_mode == MacvlanMode::Passthru {
            return Err(conflict!(
                "cannot use mode passthru, macvlan network {} is already using parent interface {}",
                other.name,
                net.options.parent
            ));
        }
        if other.options.macvlan_mode == MacvlanMode::Passthru {
            return Err(conflict!(
                "network {} uses parent interface {} in passthru mode, which is exclusive; pick another parent or remove {}",
                other.name,
                net.options.parent,
                other.name
            ));
        }
        for p in &net.pools {
            for q in &other.pools {
                crate::ipam::check_overlap(&p.pool(), &q.pool(), &other.name)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NetworkOptions, PoolSpec};

    fn net(name: &str, parent: &str, mode: MacvlanMode, subnet: &str) -> Network {
        Network {
            id: name.into(),
            name: name.into(),
            driver: crate::model::Driver::Macvlan,
            created: String::new(),
            pools: vec![PoolSpec {
                subnet: subnet.parse().unwrap(),
                gateway: None,
                ip_range: None,
                aux: Default::default(),
                range_start: None,
                range_end: None,
            }],
            internal: false,
            ipv6: false,
            ipv4_disabled: false,
            dhcp: false,
            fleet: None,
            labels: Default::default(),
            options: NetworkOptions {
                parent: parent.into(),
                macvlan_mode: mode,
                mtu: None,
                vlan: None,
                host_access: false,
                host_access_ip: None,
                ipvlan_mode: Default::default(),
                ipvlan_flag: Default::default(),
                probe_ms: None,
                lan: None,
                dhcp_timeout: None,
            },
        }
    }

    #[test]
    fn passthru_is_exclusive_both_ways() {
        let a = net("a", "eth0", MacvlanMode::Bridge, "10.0.0.0/24");
        let p = net("p", "eth0", MacvlanMode::Passthru, "10.1.0.0/24");
        let e = check_against_existing(&p, std::slice::from_ref(&a))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("macvlan network a is already using parent interface eth0"),
            "{e}"
        );
        let b = net("b", "eth0", MacvlanMode::Bridge, "10.2.0.0/24");
        let e = check_against_existing(&b, std::slice::from_ref(&p))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("network p uses parent interface eth0 in passthru"),
            "{e}"
        );
        // Other parents are independent.
        let c = net("c", "eth1", MacvlanMode::Passthru, "10.0.0.0/24");
        assert!(check_against_existing(&c, &[a, p]).is_ok());
    }

    #[test]
    fn shared_parent_and_overlap() {
        let a = net("a", "eth0", MacvlanMode::Bridge, "10.0.0.0/24");
        let b = net("b", "eth0", MacvlanMode::Private, "10.0.1.0/24");
        assert!(check_against_existing(&b, std::slice::from_ref(&a)).is_ok());
        let c = net("c", "eth0", MacvlanMode::Bridge, "10.0.0.0/16");
        assert!(check_against_existing(&c, std::slice::from_ref(&a))
            .unwrap_err()
            .to_string()
            .contains("network a"));
        let d = net("d", "eth1", MacvlanMode::Bridge, "10.0.0.0/24");
        assert!(
            check_against_existing(&d, &[a]).is_ok(),
            "same subnet on another LAN is fine"
        );
    }
}
