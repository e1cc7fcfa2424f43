//! The engine orders store and kernel work so that bad input changes nothing and a failure
//! half-way rolls back: validate -> reserve in the store -> kernel -> confirm.
//! Every front end (CLI, CNI, Docker plugin) goes through here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::driver::macvlan::{self, OnConflict};
use crate::model::{
    network::ValidatedRequest, CreateNetworkRequest, Driver, Endpoint, Frontend, MacAddr,
    MacvlanMode, Network,
};
use crate::netlink::{Link, Netlink};
use crate::netns::Netns;
use crate::probe::AddressTaken;
use crate::store::{EndpointRequest, SqliteStore, Store};
use crate::{conflict, invalid, not_found, Error, Result};

/// Where state lives unless `--root` or `MVNET_ROOT` says otherwise.
pub const DEFAULT_ROOT: &str = "/var/lib/mvnet";

/// Who is being attached: an mvnet container, or any namespace given by path.
#[derive(Debug, Clone)]
pub struct AttachTarget {
    pub container_id: String,
    pub container_name: String,
    pub netns: String,
    /// mvnet created this namespace, so a leftover interface in it (from a process killed
    /// mid-attach) is ours to delete.
    pub owned: bool,
}

impl AttachTarget {
    /// A bare namespace given by path (`--netns /proc/PID/ns/net`): its identity is the
    /// namespace inode, so two paths to one namespace are one target.
    pub fn bare_netns(path: &str) -> Result<AttachTarget> {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(path)
            .map_err(|e| Error::io(format!("cannot use network namespace {path}"), e))?;
        Ok(AttachTarget {
            container_id: format!("netns-{:x}-{:x}", md.dev(), md.ino()),
            container_name: path.to_string(),
            netns: path.to_string(),
            owned: false,
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct AttachOptions {
    pub ipv4: Option<IpAddr>,
    pub ipv6: Option<IpAddr>,
    pub mac: Option<MacAddr>,
    pub ifname: Option<String>,
    /// Use a requested static address even when a device on the LAN answers for it.
    pub force: bool,
    /// Which front end asks (recorded on the endpoint).
    pub frontend: Frontend,
}

pub struct Engine {
    root: PathBuf,
    store: Box<dyn Store>,
    netlink: Option<Netlink>,
}

impl Engine {
    pub fn open(root: &Path) -> Result<Engine> {
        Ok(Engine {
            root: root.to_path_buf(),
            store: Box::new(SqliteStore::open(root)?),
            netlink: None,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn store(&mut self) -> &mut dyn Store {
        self.store.as_mut()
    }

    /// The rtnetlink socket of the namespace mvnet runs in (the host's), opened on first use.
    pub fn netlink(&mut self) -> Result<&mut Netlink> {
        if self.netlink.is_none() {
            self.netlink = Some(Netlink::new()?);
        }
        Ok(self.netlink.as_mut().expect("just set"))
    }

    /// Runs `f` with the host's netlink socket and the store at once (kernel work whose
    /// conflict handler writes to the store).
    pub(crate) fn with_netlink_and_store<R>(
        &mut self,
        f: impl FnOnce(&mut Netlink, &mut dyn Store) -> Result<R>,
    ) -> Result<R> {
        self.netlink()?;
        let nl = self.netlink.as_mut().expect("opened just above");
        f(nl, self.store.as_mut())
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
            id: crate::ids::new_id(),
            name: req.name.clone(),
            driver: v.driver,
            created: crate::model::time::now_rfc3339(),
            pools: v.pools,
            internal: req.internal,
            ipv6: v.ipv6,
            ipv4_disabled: v.ipv4_disabled,
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
            crate::hostaccess::check_supported(&net)?;
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
                crate::hostaccess::shim_name(&net)
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
            .map_err(|e| Error::kernel(format!("look up the device under {parent}"), e))?
            .map(|l| l.name))
    }

    pub fn networks(&mut self) -> Result<Vec<Network>> {
        self.store.networks()
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
                        let _ = macvlan::delete_endpoint_link(&ep.netns, &ep.ifname, Some(ep.mac));
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
            .filter(|e| !crate::hostaccess::is_host_endpoint(e))
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
                .any(|e| !crate::hostaccess::is_host_endpoint(e));
            if !busy && self.remove_network(&net.id).is_ok() {
                removed.push(net.name);
            }
        }
        Ok(removed)
    }

    fn delete_parent(&mut self, name: &str) -> Result<()> {
        self.netlink()?
            .delete_link_by_name(name)
            .map(|_| ())
            .map_err(|e| Error::kernel(format!("delete parent {name}"), e))
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
            .map_err(|e| Error::kernel(format!("look up parent {name}"), e))?;
        match found {
            Some(l) => Ok(l),
            None if self.store.parent_is_owned(name)? => {
                let (base, vid) = crate::model::network::parse_vlan_parent(name)?
                    .ok_or_else(|| Error::Store(format!("owned parent {name} is not a VLAN name")))?;
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
        let links = self
            .netlink()?
            .links()
            .map_err(|e| Error::kernel("list links", e))?;
        let mut out = HashMap::new();
        for net in self.store.networks()? {
            let present = links.iter().any(|l| l.name == net.options.parent);
            out.insert(net.id, present);
        }
        Ok(out)
    }

    fn default_parent(&mut self) -> Result<String> {
        let nl = self.netlink()?;
        let routes = nl
            .routes(false)
            .map_err(|e| Error::kernel("read routes", e))?;
        let oif = routes
            .iter()
            .find(|r| r.destination.is_none() && r.oif.is_some())
            .and_then(|r| r.oif)
            .ok_or_else(|| {
                invalid!("no -o parent given and this host has no default route to pick one from; pass -o parent=IF")
            })?;
        let link = nl
            .link_by_index(oif)
            .map_err(|e| Error::kernel("look up default-route interface", e))?
            .ok_or_else(|| invalid!("the default-route interface vanished; pass -o parent=IF"))?;
        Ok(link.name)
    }

    // ----- endpoints ------------------------------------------------------------------

    /// Attaches `target` to `net`: reserve in the store, build in the kernel, confirm.
    /// On any failure nothing is left: no link, no address, no row.
    pub fn connect(
        &mut self,
        net: &Network,
        target: &AttachTarget,
        opts: &AttachOptions,
    ) -> Result<Endpoint> {
        if net.driver == Driver::Ipvlan && opts.mac.is_some() {
            return Err(invalid!(
                "ipvlan endpoints share the parent's MAC, so --mac-address cannot be used on ipvlan network {}; use a macvlan network to choose a MAC",
                net.name
            ));
        }
        let parent = self.parent_link_for(net)?;
        let ns = Netns::open(&target.netns)?;
        if ns.is_current()? {
            return Err(invalid!(
                "{} is mvnet's own network namespace (the host's): an endpoint there would put the container's address and routes on the host; give the container's namespace",
                crate::quote(&target.netns)
            ));
        }
        let host_addresses = self.host_addresses_in(net)?;
        let req = EndpointRequest {
            container_id: target.container_id.clone(),
            container_name: target.container_name.clone(),
            netns: target.netns.clone(),
            ifname: opts.ifname.clone(),
            static_ipv4: opts.ipv4,
            static_ipv6: opts.ipv6,
            // What inspect shows is the MAC the LAN sees: for ipvlan, the parent's.
            mac: if net.driver == Driver::Ipvlan {
                parent.mac
            } else {
                opts.mac
            },
            owner_pid: std::process::id(),
            frontend: opts.frontend,
            host_addresses,
        };
        let mut ep = self.store.reserve_endpoint(net, &req)?;
        self.delete_reclaimed_links();
        let mut refused = None;
        let mut mac_skips = 0;
        loop {
            match self.build_endpoint(net, &ep, &parent, &ns, target.owned, opts, &mut refused) {
                Ok(ep) => {
                    self.store.activate_endpoint(&ep.id)?;
                    self.host_access_follow(net, &ep, true)?;
                    return Ok(ep);
                }
                // The MAC derived from this address belongs to a macvlan mvnet does not know
                // (left by a process killed mid-attach, or made by hand): that address is
                // not usable here, so skip it like a LAN conflict and take the next one.
                Err(Error::MacInUse { mac, .. })
                    if opts.mac.is_none()
                        && mac_skips < crate::driver::macvlan::MAX_PROBED_ADDRESSES
                        && ep.ipv4.is_some_and(|(ip, _)| {
                            opts.ipv4.is_none() && MacAddr::from_ipv4_addr(ip) == Some(mac)
                        }) =>
                {
                    mac_skips += 1;
                    let (ip, _) = ep.ipv4.expect("checked above");
                    crate::warn_user(&format!(
                        "the MAC {mac} that {ip} maps to is already used by another macvlan on {}; marked {ip} as taken (mvnet network inspect {} lists it) and trying the next address",
                        net.options.parent, net.name
                    ));
                    match self
                        .store
                        .replace_conflicting_address(net, &ep.id, ip, Some(mac))
                    {
                        Ok(next) => ep = next,
                        Err(e) => {
                            self.store.remove_endpoint(&ep.id)?;
                            return Err(e);
                        }
                    }
                }
                Err(e) => {
                    self.store.remove_endpoint(&ep.id)?;
                    // A requested address found in use: remember it once it is free again.
                    if let Some(t) = refused {
                        self.store.record_lan_conflict(net, t.ip, t.holder)?;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// The addresses this host holds inside `net`'s subnets, with their interface names.
    /// A container given one would take the host's own address off the LAN, and no probe
    /// can see it (the host never answers its own ARP through a macvlan).
    pub fn host_addresses_in(&mut self, net: &Network) -> Result<Vec<(IpAddr, String)>> {
        let nl = self.netlink()?;
        let addrs = nl
            .addresses(None)
            .map_err(|e| Error::kernel("list the host's addresses", e))?;
        let mut out = Vec::new();
        for (index, ip, _) in addrs {
            if net.pools.iter().any(|p| p.subnet.contains(&ip)) {
                let name = nl
                    .link_by_index(index)
                    .ok()
                    .flatten()
                    .map_or_else(|| format!("interface {index}"), |l| l.name);
                out.push((ip, name));
            }
        }
        Ok(out)
    }

    /// Deletes the half-made links of endpoints whose creator was killed mid-attach (the
    /// store released their addresses): otherwise their MACs, derived from those addresses,
    /// would block whoever gets the addresses next. Only a macvlan/ipvlan with the recorded
    /// name and MAC is deleted.
    pub fn delete_reclaimed_links(&mut self) {
        for ep in self.store.take_reclaimed() {
            if ep.netns.is_empty() {
                continue;
            }
            if let Err(e) = macvlan::delete_endpoint_link(&ep.netns, &ep.ifname, Some(ep.mac)) {
                tracing::warn!(endpoint = %ep.id, error = %e, "cannot delete the link of an abandoned endpoint");
            }
        }
    }

    /// Builds the link; returns the endpoint as finally configured (probing may have moved
    /// it to other addresses).
    #[allow(clippy::too_many_arguments)]
    fn build_endpoint(
        &mut self,
        net: &Network,
        ep: &Endpoint,
        parent: &Link,
        ns: &Netns,
        owned: bool,
        opts: &AttachOptions,
        refused: &mut Option<AddressTaken>,
    ) -> Result<Endpoint> {
        let mut plan = macvlan::LinkPlan::for_endpoint(net, ep, parent.index);
        if macvlan::parent_is_down(parent) {
            // Neither a probe nor DAD can get an answer: skip them instead of waiting
            // (DAD would never finish) and start the container, as Docker does.
            plan.probe = None;
            crate::warn_user(&macvlan::parent_down_notice(&parent.name));
        }
        let mut current = ep.clone();
        self.with_netlink_and_store(|nl, store| {
            let mut on_conflict = |t: &AddressTaken| {
                let requested = if t.ip.is_ipv4() { opts.ipv4 } else { opts.ipv6 };
                let policy = StaticAddressPolicy {
                    requested,
                    force: opts.force,
                    fix: "pick another --ip/--ip6, or pass --force to use it anyway",
                };
                resolve_conflict(store, net, &mut current, &policy, t, refused)
            };
            macvlan::attach(nl, ns, &mut plan, owned, &mut on_conflict)
        })?;
        Ok(current)
    }

    /// Detaches an endpoint: link first, then the store (so a crash in between leaves a row
    /// that the next disconnect or rm still finds).
    pub fn disconnect(&mut self, ep: &Endpoint) -> Result<()> {
        // Only the macvlan/ipvlan with the recorded MAC: the row is data, and the name
        // alone could be some other link's.
        macvlan::delete_endpoint_link(&ep.netns, &ep.ifname, Some(ep.mac))?;
        self.release_endpoint(ep)
    }

    /// Gives an endpoint's addresses back (its link is gone or going with its namespace)
    /// and drops the host's route to it.
    pub fn release_endpoint(&mut self, ep: &Endpoint) -> Result<()> {
        self.store.remove_endpoint(&ep.id)?;
        if let Ok(net) = self.store.network(&ep.network_id) {
            self.host_access_follow(&net, ep, false)?;
        }
        Ok(())
    }

    /// The endpoint of `container_id` on `net`, or a clear error.
    pub fn endpoint_on(
        &mut self,
        net: &Network,
        container_id: &str,
        who: &str,
    ) -> Result<Endpoint> {
        self.store
            .endpoints_of_container(container_id)?
            .into_iter()
            .find(|e| e.network_id == net.id)
            .ok_or_else(|| not_found!("{who} is not connected to network {}", net.name))
    }
}

/// How to treat a conflict on an address the user asked for by name.
pub struct StaticAddressPolicy<'a> {
    /// The address asked for, in the conflict's family.
    pub requested: Option<IpAddr>,
    /// Use it even when it is taken.
    pub force: bool,
    /// How the user fixes a refusal, for the error message.
    pub fix: &'a str,
}

/// Decides what to do about an address a probe found in use on the LAN. A requested address
/// fails the attach (it is noted in `refused`, to be recorded once the endpoint is gone),
/// unless forced. Otherwise the store records the conflict and moves `ep` to the next free
/// address, and the user is warned.
pub fn resolve_conflict(
    store: &mut dyn Store,
    net: &Network,
    ep: &mut Endpoint,
    policy: &StaticAddressPolicy,
    taken: &AddressTaken,
    refused: &mut Option<AddressTaken>,
) -> Result<OnConflict> {
    if policy.requested == Some(taken.ip) {
        if policy.force {
            crate::warn_user(&format!(
                "{} is already used on the LAN by {}; using it anyway (--force)",
                taken.ip,
                taken.who()
            ));
            return Ok(OnConflict::UseAnyway);
        }
        *refused = Some(*taken);
        return Err(conflict!(
            "address {} is already used on the LAN by {} (it answered mvnet's probe); {}",
            taken.ip,
            taken.who(),
            policy.fix
        ));
    }
    let updated = store.replace_conflicting_address(net, &ep.id, taken.ip, taken.holder)?;
    let address = if taken.ip.is_ipv4() {
        updated.ipv4
    } else {
        updated.ipv6
    }
    .ok_or_else(|| Error::Store(format!("endpoint {} lost its address", ep.id)))?;
    crate::warn_user(&format!(
        "{} is already used on the LAN by {}; marked it as taken (mvnet network inspect {} lists it) and using {} instead",
        taken.ip,
        taken.who(),
        net.name,
        address.0
    ));
    *ep = updated;
    Ok(OnConflict::Replace {
        address,
        mac: ep.mac,
    })
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
