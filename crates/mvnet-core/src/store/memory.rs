//! An in-memory `Store`: the same rules as the SQLite one (one address book per LAN, static
//! and round-robin allocation over every pool, LAN conflicts, reclaiming endpoints whose
//! creator died), kept in maps. It serves unit tests of the engine, and it is the second
//! implementation that keeps the trait honest before a distributed one (etcd) arrives.
//! A test can make its Nth write fail.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::{EndpointRequest, NetworkCheck, Store};
use crate::model::{
    Container, Endpoint, EndpointState, LanConflict, MacAddr, MacvlanMode, Network,
};
use crate::{conflict, not_found, Error, Result};

/// Who holds an address: an endpoint, or (empty) a device on the LAN.
type Holder = String;

/// See the SQLite store's constant of the same name.
const FLEET_HOLDER: &str = "\u{1}fleet";

#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    networks: Vec<Network>,
    owned_parents: BTreeSet<String>,
    endpoints: Vec<Endpoint>,
    /// (domain, address) -> holder, as SQLite's `allocations`.
    allocations: BTreeMap<(String, IpAddr), (String, Holder)>,
    cursors: BTreeMap<(String, usize), IpAddr>,
    conflicts: BTreeMap<(String, IpAddr), (String, Option<MacAddr>)>,
    containers: Vec<Container>,
    reclaimed: Vec<Endpoint>,
    writes: usize,
    /// Fail the write with this number (1-based), as a full disk would.
    pub fail_write_at: Option<usize>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn write(&mut self, what: &str) -> Result<()> {
        self.writes += 1;
        if self.fail_write_at == Some(self.writes) {
            return Err(Error::Internal(format!("injected store failure at {what}")));
        }
        Ok(())
    }

    /// How many addresses are held (by endpoints and LAN devices), for leak checks.
    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    fn domain_count(&self, domain: &str) -> u128 {
        self.allocations.keys().filter(|(d, _)| d == domain).count() as u128
    }

    fn take_address(
        &mut self,
        net: &Network,
        idx: usize,
        requested: Option<IpAddr>,
        endpoint_id: &str,
        host_addresses: &[(IpAddr, String)],
    ) -> Result<(IpAddr, u8)> {
        let spec = &net.pools[idx];
        let pool = spec.pool();
        let domain = net.address_domain().to_string();
        let ip = match requested {
            Some(ip) => {
                pool.check_static(ip)?;
                if let Some((_, ifname)) = host_addresses.iter().find(|(a, _)| *a == ip) {
                    return Err(conflict!(
                        "address {ip} belongs to this host (it is on {ifname}); a container with it would take the host off the LAN: pick another --ip"
                    ));
                }
                match self.allocations.get(&(domain.clone(), ip)) {
                    Some((_, h)) if h.is_empty() => {
                        // Asked for by name: the probe decides whether the device is there.
                        self.forget_conflict(&domain, ip);
                    }
                    Some((_, h)) if h == FLEET_HOLDER => {
                        self.allocations.remove(&(domain.clone(), ip));
                    }
                    Some((_, h)) => {
                        let who = self
                            .endpoints
                            .iter()
                            .find(|e| &e.id == h)
                            .map_or("another endpoint".to_string(), |e| e.container_name.clone());
                        return Err(conflict!(
                            "address {ip} is already in use by {who} on this LAN; pick another --ip or leave it out to get a free one"
                        ));
                    }
                    None => {}
                }
                ip
            }
            None => {
                let cursor = self.cursors.get(&(net.id.clone(), idx)).copied();
                let bound = self.domain_count(&domain) + host_addresses.len() as u128;
                let found = pool.allocate(cursor, bound, |ip| -> Result<bool> {
                    Ok(host_addresses.iter().any(|(a, _)| *a == ip)
                        || self.allocations.contains_key(&(domain.clone(), ip)))
                })?;
                let ip = found.ok_or_else(|| {
                    conflict!(
                        "no free address left in {} of network {}; widen --ip-range or remove containers",
                        spec.ip_range.unwrap_or(spec.subnet),
                        net.name
                    )
                })?;
                self.cursors.insert((net.id.clone(), idx), ip);
                ip
            }
        };
        self.allocations
            .insert((domain, ip), (net.id.clone(), endpoint_id.to_string()));
        Ok((ip, spec.subnet.prefix_len()))
    }

    fn take_in(
        &mut self,
        net: &Network,
        pools: &[usize],
        requested: Option<IpAddr>,
        endpoint_id: &str,
        host_addresses: &[(IpAddr, String)],
    ) -> Result<Option<(IpAddr, u8)>> {
        super::take_over_pools(net, pools, requested, |idx, ip| {
            self.take_address(net, idx, ip, endpoint_id, host_addresses)
        })
    }

    /// Records a DHCP-leased address (see the SQLite store's `record_leased`).
    fn take_leased(
        &mut self,
        net: &Network,
        ip: IpAddr,
        endpoint_id: &str,
        host_addresses: &[(IpAddr, String)],
    ) -> Result<()> {
        let domain = net.address_domain().to_string();
        if let Some((_, ifname)) = host_addresses.iter().find(|(a, _)| *a == ip) {
            return Err(super::leased_taken(ip, &format!("this host ({ifname})")));
        }
        match self.allocations.get(&(domain.clone(), ip)) {
            Some((_, h)) if h.is_empty() => self.forget_conflict(&domain, ip),
            Some((_, h)) => {
                let who = self
                    .endpoints
                    .iter()
                    .find(|e| &e.id == h)
                    .map_or("another endpoint".to_string(), |e| e.container_name.clone());
                return Err(super::leased_taken(ip, &who));
            }
            None => {}
        }
        self.allocations
            .insert((domain, ip), (net.id.clone(), endpoint_id.to_string()));
        Ok(())
    }

    fn release(&mut self, endpoint_id: &str) {
        self.allocations.retain(|_, (_, h)| h != endpoint_id);
    }

    fn forget_conflict(&mut self, domain: &str, ip: IpAddr) {
        let key = (domain.to_string(), ip);
        self.conflicts.remove(&key);
        if self
            .allocations
            .get(&key)
            .is_some_and(|(_, h)| h.is_empty())
        {
            self.allocations.remove(&key);
        }
    }

    fn insert_conflict(&mut self, net: &Network, ip: IpAddr, holder: Option<MacAddr>) {
        let key = (net.address_domain().to_string(), ip);
        match self.allocations.get(&key) {
            Some((_, h)) if !h.is_empty() => return,
            Some(_) => {}
            None => {
                self.allocations
                    .insert(key.clone(), (net.id.clone(), String::new()));
            }
        }
        self.conflicts.insert(key, (net.id.clone(), holder));
    }

    /// Endpoints left `creating` by a dead process give their addresses back.
    fn reclaim_abandoned(&mut self) {
        let dead: Vec<Endpoint> = self
            .endpoints
            .iter()
            .filter(|e| e.state == EndpointState::Creating && !super::pid_alive(e.owner_pid))
            .cloned()
            .collect();
        for ep in dead {
            self.release(&ep.id);
            self.endpoints.retain(|e| e.id != ep.id);
            self.reclaimed.push(ep);
        }
    }
}

fn by_name_or_id<'a, T>(
    items: &'a [T],
    key: &str,
    name: impl Fn(&T) -> &str,
    id: impl Fn(&T) -> &str,
) -> Option<&'a T> {
    items
        .iter()
        .find(|t| name(t) == key || id(t) == key)
        .or_else(|| {
            let mut matching = items.iter().filter(|t| id(t).starts_with(key));
            match (matching.next(), matching.next()) {
                (Some(one), None) if crate::ids::is_hex_prefix(key) => Some(one),
                _ => None,
            }
        })
}

impl Store for MemoryStore {
    fn create_network(
        &mut self,
        net: &Network,
        check: NetworkCheck,
        created_parent: bool,
    ) -> Result<()> {
        if self.networks.iter().any(|n| n.name == net.name) {
            return Err(conflict!(
                "network with name {} already exists; pick another name or remove it first (mvnet network rm {})",
                net.name,
                net.name
            ));
        }
        check(&self.networks)?;
        self.write("create_network")?;
        self.networks.push(net.clone());
        if created_parent {
            self.owned_parents.insert(net.options.parent.clone());
        }
        Ok(())
    }

    fn networks(&mut self) -> Result<Vec<Network>> {
        Ok(self.networks.clone())
    }

    fn update_network(&mut self, net: &Network) -> Result<()> {
        self.write("update_network")?;
        if self
            .networks
            .iter()
            .any(|n| n.name == net.name && n.id != net.id)
        {
            return Err(conflict!("network with name {} already exists", net.name));
        }
        match self.networks.iter_mut().find(|n| n.id == net.id) {
            Some(n) => {
                *n = net.clone();
                Ok(())
            }
            None => Err(not_found!("network {} was removed meanwhile", net.name)),
        }
    }

    fn network(&mut self, name_or_id: &str) -> Result<Network> {
        by_name_or_id(&self.networks, name_or_id, |n| &n.name, |n| &n.id)
            .cloned()
            .ok_or_else(|| {
                not_found!(
                    "network {name_or_id} not found; see the networks that exist with: mvnet network ls"
                )
            })
    }

    fn remove_network(&mut self, id: &str) -> Result<Option<String>> {
        self.reclaim_abandoned();
        let names: Vec<String> = self
            .endpoints
            .iter()
            .filter(|e| e.network_id == id)
            .map(|e| e.container_name.clone())
            .collect();
        if !names.is_empty() {
            return Err(conflict!(
                "error while removing network: network id {} has active endpoints ({}); disconnect or remove them first",
                crate::ids::short(id),
                names.join(", ")
            ));
        }
        self.write("remove_network")?;
        let Some(pos) = self.networks.iter().position(|n| n.id == id) else {
            return Ok(None);
        };
        let net = self.networks.remove(pos);
        self.cursors.retain(|(n, _), _| n != id);
        let domain = net.address_domain().to_string();
        let dropped: Vec<IpAddr> = self
            .conflicts
            .iter()
            .filter(|(_, (n, _))| n == id)
            .map(|((_, ip), _)| *ip)
            .collect();
        for ip in dropped {
            self.forget_conflict(&domain, ip);
        }
        let parent = net.options.parent;
        if !self.networks.iter().any(|n| n.options.parent == parent)
            && self.owned_parents.remove(&parent)
        {
            return Ok(Some(parent));
        }
        Ok(None)
    }

    fn parent_is_owned(&mut self, name: &str) -> Result<bool> {
        Ok(self.owned_parents.contains(name))
    }

    fn reserve_endpoint(&mut self, net: &Network, req: &EndpointRequest) -> Result<Endpoint> {
        self.reclaim_abandoned();
        if !self.networks.iter().any(|n| n.id == net.id) {
            return Err(not_found!(
                "network {} was removed; nothing attached",
                net.name
            ));
        }
        let mine: Vec<&Endpoint> = self
            .endpoints
            .iter()
            .filter(|e| e.container_id == req.container_id)
            .collect();
        if mine.iter().any(|e| e.network_id == net.id) {
            return Err(conflict!(
                "container {} is already connected to network {}",
                req.container_name,
                net.name
            ));
        }
        if net.options.macvlan_mode == MacvlanMode::Passthru {
            if let Some(owner) = self.endpoints.iter().find(|e| e.network_id == net.id) {
                return Err(conflict!(
                    "network {} is in passthru mode and its parent already belongs to {}",
                    net.name,
                    owner.container_name
                ));
            }
        }
        let taken: Vec<&str> = mine.iter().map(|e| e.ifname.as_str()).collect();
        let ifname = req.choose_ifname(&taken)?;
        let (v4, v6) = req.family_pools(net)?;
        self.write("reserve_endpoint")?;
        let id = crate::ids::new_id();
        let taken = (|| -> Result<_> {
            let ipv4 = match req.leased_ipv4 {
                Some((ip, len)) => {
                    self.take_leased(net, ip, &id, &req.host_addresses)?;
                    Some((ip, len))
                }
                None => self.take_in(net, &v4, req.static_ipv4, &id, &req.host_addresses)?,
            };
            let ipv6 = self.take_in(net, &v6, req.static_ipv6, &id, &req.host_addresses)?;
            Ok((ipv4, ipv6))
        })();
        let (ipv4, ipv6) = match taken {
            Ok(t) => t,
            Err(e) => {
                self.release(&id);
                return Err(e);
            }
        };
        let ep = req.endpoint(id, net, ifname, ipv4, ipv6);
        self.endpoints.push(ep.clone());
        Ok(ep)
    }

    fn activate_endpoint(&mut self, id: &str) -> Result<()> {
        self.write("activate_endpoint")?;
        match self.endpoints.iter_mut().find(|e| e.id == id) {
            Some(e) => {
                e.state = EndpointState::Active;
                Ok(())
            }
            None => Err(Error::Internal(format!(
                "endpoint {id} vanished during attach"
            ))),
        }
    }

    fn update_endpoint(&mut self, ep: &Endpoint) -> Result<()> {
        self.write("update_endpoint")?;
        let Some(old) = self.endpoints.iter_mut().find(|e| e.id == ep.id) else {
            return Err(crate::not_found!("endpoint {} not found", ep.id));
        };
        if old.ipv4 != ep.ipv4 || old.ipv6 != ep.ipv6 || old.network_id != ep.network_id {
            return Err(Error::Internal(format!(
                "update_endpoint cannot change the addresses or network of {}",
                ep.id
            )));
        }
        let state = old.state;
        *old = ep.clone();
        old.state = state;
        Ok(())
    }

    fn remove_endpoint(&mut self, id: &str) -> Result<Option<Endpoint>> {
        self.write("remove_endpoint")?;
        let Some(pos) = self.endpoints.iter().position(|e| e.id == id) else {
            return Ok(None);
        };
        self.release(id);
        Ok(Some(self.endpoints.remove(pos)))
    }

    fn endpoints_of_network(&mut self, network_id: &str) -> Result<Vec<Endpoint>> {
        Ok(self
            .endpoints
            .iter()
            .filter(|e| e.network_id == network_id)
            .cloned()
            .collect())
    }

    fn replace_conflicting_address(
        &mut self,
        net: &Network,
        endpoint_id: &str,
        ip: IpAddr,
        holder: Option<MacAddr>,
    ) -> Result<Endpoint> {
        self.write("replace_conflicting_address")?;
        let mut ep = self
            .endpoints
            .iter()
            .find(|e| e.id == endpoint_id)
            .cloned()
            .ok_or_else(|| Error::Internal(format!("endpoint {endpoint_id} vanished")))?;
        let idx = net
            .pools
            .iter()
            .position(|p| p.subnet.contains(&ip))
            .ok_or_else(|| Error::Internal(format!("{ip} is in no pool of {}", net.name)))?;
        let domain = net.address_domain().to_string();
        self.allocations.remove(&(domain, ip));
        self.insert_conflict(net, ip, holder);
        let new = self.take_address(net, idx, None, endpoint_id, &[])?;
        if ep.ipv4.is_some_and(|(a, _)| a == ip) {
            ep.ipv4 = Some(new);
            if MacAddr::from_ipv4_addr(ip) == Some(ep.mac) {
                ep.mac = MacAddr::from_ipv4_addr(new.0).unwrap_or(ep.mac);
            }
        } else {
            ep.ipv6 = Some(new);
        }
        if let Some(e) = self.endpoints.iter_mut().find(|e| e.id == endpoint_id) {
            *e = ep.clone();
        }
        Ok(ep)
    }

    fn move_leased_address(
        &mut self,
        net: &Network,
        endpoint_id: &str,
        lease: &crate::model::Lease,
    ) -> Result<Endpoint> {
        self.write("move_leased_address")?;
        let Some(pos) = self.endpoints.iter().position(|e| e.id == endpoint_id) else {
            return Err(not_found!("endpoint {endpoint_id} not found"));
        };
        let domain = net.address_domain().to_string();
        if let Some((old, _)) = self.endpoints[pos].ipv4 {
            self.allocations.remove(&(domain, old));
        }
        let new = IpAddr::V4(lease.ip);
        self.take_leased(net, new, endpoint_id, &[])?;
        let ep = &mut self.endpoints[pos];
        ep.ipv4 = Some((new, lease.prefix));
        ep.lease = Some(lease.clone());
        Ok(ep.clone())
    }

    fn record_lan_conflict(
        &mut self,
        net: &Network,
        ip: IpAddr,
        holder: Option<MacAddr>,
    ) -> Result<()> {
        self.write("record_lan_conflict")?;
        self.insert_conflict(net, ip, holder);
        Ok(())
    }

    fn mark_held_elsewhere(&mut self, net: &Network, ip: IpAddr) -> Result<()> {
        self.write("mark_held_elsewhere")?;
        self.allocations
            .entry((net.address_domain().to_string(), ip))
            .or_insert_with(|| (net.id.clone(), FLEET_HOLDER.to_string()));
        Ok(())
    }

    fn set_cursor(&mut self, net: &Network, ip: IpAddr) -> Result<()> {
        self.write("set_cursor")?;
        self.cursors.insert((net.id.clone(), 0), ip);
        Ok(())
    }

    fn forget_held_elsewhere(&mut self, net: &Network) -> Result<usize> {
        self.write("forget_held_elsewhere")?;
        let before = self.allocations.len();
        self.allocations
            .retain(|_, (n, h)| !(n == &net.id && h == FLEET_HOLDER));
        Ok(before - self.allocations.len())
    }

    fn lan_conflicts(&mut self, net: &Network) -> Result<Vec<LanConflict>> {
        Ok(self
            .conflicts
            .iter()
            .filter(|(_, (n, _))| *n == net.id)
            .map(|((_, ip), (_, mac))| LanConflict {
                ip: *ip,
                mac: *mac,
                seen: String::new(),
            })
            .collect())
    }

    fn clear_lan_conflicts(&mut self, net: &Network) -> Result<usize> {
        self.write("clear_lan_conflicts")?;
        let domain = net.address_domain().to_string();
        let ips: Vec<IpAddr> = self
            .conflicts
            .iter()
            .filter(|(_, (n, _))| *n == net.id)
            .map(|((_, ip), _)| *ip)
            .collect();
        for ip in &ips {
            self.forget_conflict(&domain, *ip);
        }
        Ok(ips.len())
    }

    fn endpoints_of_container(&mut self, container_id: &str) -> Result<Vec<Endpoint>> {
        Ok(self
            .endpoints
            .iter()
            .filter(|e| e.container_id == container_id)
            .cloned()
            .collect())
    }

    fn create_container(&mut self, c: &Container) -> Result<()> {
        if self.containers.iter().any(|x| x.name == c.name) {
            return Err(conflict!(
                "the container name \"{}\" is already in use",
                c.name
            ));
        }
        self.write("create_container")?;
        self.containers.push(c.clone());
        Ok(())
    }

    fn update_container(&mut self, c: &Container) -> Result<()> {
        self.write("update_container")?;
        if let Some(x) = self.containers.iter_mut().find(|x| x.id == c.id) {
            *x = c.clone();
        }
        Ok(())
    }

    fn containers(&mut self) -> Result<Vec<Container>> {
        Ok(self.containers.clone())
    }

    fn container(&mut self, name_or_id: &str) -> Result<Container> {
        by_name_or_id(&self.containers, name_or_id, |c| &c.name, |c| &c.id)
            .cloned()
            .ok_or_else(|| not_found!("no such container: {name_or_id}"))
    }

    fn remove_container(&mut self, id: &str) -> Result<()> {
        self.write("remove_container")?;
        self.containers.retain(|c| c.id != id);
        Ok(())
    }

    fn take_reclaimed(&mut self) -> Vec<Endpoint> {
        std::mem::take(&mut self.reclaimed)
    }

    fn remove_unreadable_network(&mut self, _name_or_id: &str) -> Result<Option<Vec<Endpoint>>> {
        // Records in memory are always readable.
        Ok(None)
    }

    fn remove_unreadable_container(&mut self, _name_or_id: &str) -> Result<bool> {
        Ok(false)
    }
}

/// A `MemoryStore` shared with the test that inspects it.
impl Store for std::sync::Arc<std::sync::Mutex<MemoryStore>> {
    fn create_network(
        &mut self,
        net: &Network,
        check: NetworkCheck,
        created_parent: bool,
    ) -> Result<()> {
        self.lock()
            .expect("not poisoned")
            .create_network(net, check, created_parent)
    }
    fn networks(&mut self) -> Result<Vec<Network>> {
        self.lock().expect("not poisoned").networks()
    }
    fn update_network(&mut self, net: &Network) -> Result<()> {
        self.lock().expect("not poisoned").update_network(net)
    }
    fn network(&mut self, name_or_id: &str) -> Result<Network> {
        self.lock().expect("not poisoned").network(name_or_id)
    }
    fn remove_network(&mut self, id: &str) -> Result<Option<String>> {
        self.lock().expect("not poisoned").remove_network(id)
    }
    fn parent_is_owned(&mut self, name: &str) -> Result<bool> {
        self.lock().expect("not poisoned").parent_is_owned(name)
    }
    fn reserve_endpoint(&mut self, net: &Network, req: &EndpointRequest) -> Result<Endpoint> {
        self.lock()
            .expect("not poisoned")
            .reserve_endpoint(net, req)
    }
    fn activate_endpoint(&mut self, id: &str) -> Result<()> {
        self.lock().expect("not poisoned").activate_endpoint(id)
    }
    fn update_endpoint(&mut self, ep: &Endpoint) -> Result<()> {
        self.lock().expect("not poisoned").update_endpoint(ep)
    }
    fn remove_endpoint(&mut self, id: &str) -> Result<Option<Endpoint>> {
        self.lock().expect("not poisoned").remove_endpoint(id)
    }
    fn endpoints_of_network(&mut self, network_id: &str) -> Result<Vec<Endpoint>> {
        self.lock()
            .expect("not poisoned")
            .endpoints_of_network(network_id)
    }
    fn replace_conflicting_address(
        &mut self,
        net: &Network,
        endpoint_id: &str,
        ip: IpAddr,
        holder: Option<MacAddr>,
    ) -> Result<Endpoint> {
        self.lock()
            .expect("not poisoned")
            .replace_conflicting_address(net, endpoint_id, ip, holder)
    }
    fn move_leased_address(
        &mut self,
        net: &Network,
        endpoint_id: &str,
        lease: &crate::model::Lease,
    ) -> Result<Endpoint> {
        self.lock()
            .expect("not poisoned")
            .move_leased_address(net, endpoint_id, lease)
    }
    fn record_lan_conflict(
        &mut self,
        net: &Network,
        ip: IpAddr,
        holder: Option<MacAddr>,
    ) -> Result<()> {
        self.lock()
            .expect("not poisoned")
            .record_lan_conflict(net, ip, holder)
    }
    fn mark_held_elsewhere(&mut self, net: &Network, ip: IpAddr) -> Result<()> {
        self.lock()
            .expect("not poisoned")
            .mark_held_elsewhere(net, ip)
    }
    fn set_cursor(&mut self, net: &Network, ip: IpAddr) -> Result<()> {
        self.lock().expect("not poisoned").set_cursor(net, ip)
    }
    fn forget_held_elsewhere(&mut self, net: &Network) -> Result<usize> {
        self.lock()
            .expect("not poisoned")
            .forget_held_elsewhere(net)
    }
    fn lan_conflicts(&mut self, net: &Network) -> Result<Vec<LanConflict>> {
        self.lock().expect("not poisoned").lan_conflicts(net)
    }
    fn clear_lan_conflicts(&mut self, net: &Network) -> Result<usize> {
        self.lock().expect("not poisoned").clear_lan_conflicts(net)
    }
    fn endpoints_of_container(&mut self, container_id: &str) -> Result<Vec<Endpoint>> {
        self.lock()
            .expect("not poisoned")
            .endpoints_of_container(container_id)
    }
    fn create_container(&mut self, c: &Container) -> Result<()> {
        self.lock().expect("not poisoned").create_container(c)
    }
    fn update_container(&mut self, c: &Container) -> Result<()> {
        self.lock().expect("not poisoned").update_container(c)
    }
    fn containers(&mut self) -> Result<Vec<Container>> {
        self.lock().expect("not poisoned").containers()
    }
    fn container(&mut self, name_or_id: &str) -> Result<Container> {
        self.lock().expect("not poisoned").container(name_or_id)
    }
    fn remove_container(&mut self, id: &str) -> Result<()> {
        self.lock().expect("not poisoned").remove_container(id)
    }
    fn take_reclaimed(&mut self) -> Vec<Endpoint> {
        self.lock().expect("not poisoned").take_reclaimed()
    }
    fn remove_unreadable_network(&mut self, name_or_id: &str) -> Result<Option<Vec<Endpoint>>> {
        self.lock()
            .expect("not poisoned")
            .remove_unreadable_network(name_or_id)
    }
    fn remove_unreadable_container(&mut self, name_or_id: &str) -> Result<bool> {
        self.lock()
            .expect("not poisoned")
            .remove_unreadable_container(name_or_id)
    }
}
