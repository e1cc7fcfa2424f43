//! Host access, the piece macvlan lacks: the kernel never delivers frames between a parent
//! and its own macvlan sub-interfaces, so a host cannot reach its containers. Users build a
//! "shim" by hand (a host-side macvlan with an address and routes) and lose it at reboot.
//! mvnet keeps that shim as state: created with the network (or `network update`), routes
//! kept in step as containers come and go, and re-applied by `mvnet restore`.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{resolve_conflict, Engine, StaticAddressPolicy};
use crate::driver::conflict::Ipv4Probe;
use crate::error::KernelContext;
use crate::model::{Driver, Endpoint, MacvlanMode, Network};
use crate::netlink::MacvlanLink;
use crate::probe::AddressTaken;
use crate::store::EndpointRequest;
use crate::{invalid, Error, Result};

/// The shim's interface name on the host: `mvh-` + 10 hex digits of the network id.
pub fn shim_name(net: &Network) -> String {
    format!("mvh-{}", &net.id[..10])
}

/// The store's container id for the host side of a network.
pub fn host_target_id(net: &Network) -> String {
    format!("host-access-{}", &net.id[..12])
}

pub fn is_host_endpoint(ep: &Endpoint) -> bool {
    ep.container_id.starts_with("host-access-")
}

/// Host access is a bridge-mode macvlan conversation; other modes cannot carry it.
pub fn check_supported(net: &Network) -> Result<()> {
    if net.driver != Driver::Macvlan || net.options.macvlan_mode != MacvlanMode::Bridge {
        return Err(invalid!(
            "--host-access needs a macvlan network in bridge mode ({} is {} {}); host and containers talk through a bridge-mode shim",
            net.name,
            net.driver,
            if net.driver == Driver::Macvlan { net.options.macvlan_mode.to_string() } else { net.options.ipvlan_mode.to_string() }
        ));
    }
    Ok(())
}

/// What the host routes through the shim: the --ip-range when there is one (one route),
/// otherwise one /32 (or /128) per container.
fn routed_range(net: &Network) -> Option<IpNet> {
    net.pools
        .iter()
        .find(|p| p.subnet.addr().is_ipv4())
        .and_then(|p| p.ip_range)
}

fn host_route(ip: IpAddr) -> IpNet {
    IpNet::new(ip, if ip.is_ipv4() { 32 } else { 128 }).expect("host prefix")
}

impl Engine {
    fn host_endpoint(&mut self, net: &Network) -> Result<Option<Endpoint>> {
        let id = host_target_id(net);
        Ok(self
            .store()
            .endpoints_of_container(&id)?
            .into_iter()
            .find(|e| e.network_id == net.id))
    }

    /// Makes the kernel match the store: the shim exists with its address, is up, and
    /// routes reach every container. Reserves the shim's address on first use.
    pub fn sync_host_access(&mut self, net: &Network) -> Result<()> {
        check_supported(net)?;
        let ep = match self.host_endpoint(net)? {
            Some(ep) => ep,
            None => {
                let req = EndpointRequest {
                    container_id: host_target_id(net),
                    container_name: "host-access".into(),
                    netns: String::new(),
                    ifname: Some(shim_name(net)),
                    static_ipv4: net.options.host_access_ip,
                    static_ipv6: None,
                    mac: None,
                    owner_pid: std::process::id(),
                    ..Default::default()
                };
                let ep = self.store().reserve_endpoint(net, &req)?;
                self.store().activate_endpoint(&ep.id)?;
                ep
            }
        };
        let parent = self.parent_link_for(net)?;
        let name = shim_name(net);
        let built = self.build_shim(net, &ep, parent.index, &name);
        if built.is_err() {
            let _ = self.netlink()?.delete_link_by_name(&name);
        }
        built
    }

    fn build_shim(
        &mut self,
        net: &Network,
        ep: &Endpoint,
        parent_index: u32,
        name: &str,
    ) -> Result<()> {
        let k = |op: &'static str| move |e: std::io::Error| Error::kernel(op, e);
        let members: Vec<IpAddr> = self
            .store()
            .endpoints_of_network(&net.id)?
            .into_iter()
            .filter(|e| !is_host_endpoint(e))
            .filter_map(|e| e.ipv4.map(|(ip, _)| ip))
            .collect();
        let nl = self.netlink()?;
        let existing = nl
            .link_by_name(name)
            .map_err(k("look up host-access shim"))?;
        let mut ep = ep.clone();
        let link = match existing {
            Some(l) => l,
            None => {
                nl.create_macvlan(&MacvlanLink {
                    name,
                    parent_index,
                    mode: MacvlanMode::Bridge,
                    mac: Some(ep.mac),
                    mtu: net.options.mtu,
                    bc_queue_len: None,
                    netns: None,
                })
                .map_err(k("create host-access shim"))?;
                let link = nl
                    .link_by_name(name)
                    .map_err(k("look up host-access shim"))?
                    .ok_or_else(|| Error::Internal(format!("{name} vanished")))?;
                // The shim is a LAN member like any container: probe its address first.
                if let Some(window) = net.options.probe_window() {
                    ep = self.probe_shim_address(net, ep, link.index, window)?;
                }
                link
            }
        };
        let nl = self.netlink()?;
        // A host route (/32) only: the subnet route stays on the parent, so the host's
        // traffic to the rest of the LAN is unchanged.
        if let Some((ip, _)) = ep.ipv4 {
            match nl.add_address(link.index, ip, 32) {
                Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
                    return Err(Error::kernel("address host-access shim", e))
                }
                _ => {}
            }
        }
        nl.set_up(link.index, true)
            .map_err(k("set host-access shim up"))?;
        let routes: Vec<IpNet> = match routed_range(net) {
            Some(r) => vec![r],
            None => members.into_iter().map(host_route).collect(),
        };
        for r in routes {
            match nl.add_route(Some(r), None, link.index) {
                Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
                    return Err(Error::kernel("route to containers via host-access shim", e))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Probes the shim's IPv4 address before it is added, as for a container. A taken
    /// address is recorded and the next one used (with a warning); a taken
    /// `--host-access-ip` fails.
    fn probe_shim_address(
        &mut self,
        net: &Network,
        ep: Endpoint,
        index: u32,
        window: std::time::Duration,
    ) -> Result<Endpoint> {
        let Some(v4) = ep.ipv4 else {
            return Ok(ep);
        };
        let mut listener = self.os.host_listener()?;
        let (mut addresses, mut mac) = ([v4], ep.mac);
        let mut current = ep;
        let mut refused = None;
        let probed = self.with_netlink_and_store(|nl, store| {
            nl.set_up(index, true).kernel("set host-access shim up")?;
            listener.bind(index)?;
            let policy = StaticAddressPolicy {
                requested: net.options.host_access_ip,
                force: false,
                fix: "pick another --host-access-ip, or leave it out to get a free one",
            };
            let mut on_conflict = |t: &AddressTaken| {
                resolve_conflict(store, net, &mut current, &policy, t, &mut refused)
            };
            Ipv4Probe {
                nl,
                listener: listener.as_mut(),
                index,
                ifname: &shim_name(net),
                window,
            }
            .run(&mut addresses, &mut mac, &mut on_conflict, &mut 0)
        });
        if let Some(t) = refused {
            // Give the address back and remember who holds it, as attach does.
            self.store().remove_endpoint(&current.id)?;
            self.store().record_lan_conflict(net, t.ip, t.holder)?;
        }
        probed.map(|()| current)
    }

    /// Removes the shim and gives its address back.
    pub fn remove_host_access(&mut self, net: &Network) -> Result<()> {
        self.netlink()?
            .delete_link_by_name(&shim_name(net))
            .kernel("delete host-access shim")?;
        if let Some(ep) = self.host_endpoint(net)? {
            self.store().remove_endpoint(&ep.id)?;
        }
        Ok(())
    }

    /// Keeps the host's per-container routes in step when a container joins or leaves.
    pub(crate) fn host_access_follow(
        &mut self,
        net: &Network,
        ep: &Endpoint,
        joined: bool,
    ) -> Result<()> {
        if !net.options.host_access || is_host_endpoint(ep) || routed_range(net).is_some() {
            return Ok(());
        }
        let Some((ip, _)) = ep.ipv4 else {
            return Ok(());
        };
        let nl = self.netlink()?;
        let Some(shim) = nl
            .link_by_name(&shim_name(net))
            .kernel("look up host-access shim")?
        else {
            return Ok(()); // gone (e.g. after a reboot): `mvnet restore` brings it back
        };
        let r = if joined {
            nl.add_route(Some(host_route(ip)), None, shim.index)
        } else {
            nl.del_route(host_route(ip), shim.index)
        };
        match r {
            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
                Err(Error::kernel("update host-access route", e))
            }
            _ => Ok(()),
        }
    }

    /// `mvnet network update NET --host-access=on|off`.
    pub fn set_host_access(&mut self, name: &str, on: bool, ip: Option<IpAddr>) -> Result<Network> {
        let mut net = self.network(name)?;
        if on {
            check_supported(&net)?;
        }
        net.options.host_access = on;
        if ip.is_some() {
            net.options.host_access_ip = ip;
        }
        if on {
            self.store().update_network(&net)?;
            if let Err(e) = self.sync_host_access(&net) {
                let _ = self.remove_host_access(&net);
                net.options.host_access = false;
                self.store().update_network(&net)?;
                return Err(e);
            }
        } else {
            self.remove_host_access(&net)?;
            self.store().update_network(&net)?;
        }
        Ok(net)
    }

    /// `mvnet restore`: re-applies what the store says should exist after a reboot: VLAN
    /// parents mvnet created, host-access shims and their routes. Returns what it did.
    pub fn restore(&mut self) -> Result<Vec<String>> {
        let mut done = Vec::new();
        for net in self.networks()? {
            let had_parent = self
                .netlink()?
                .link_by_name(&net.options.parent)
                .ok()
                .flatten()
                .is_some();
            match self.parent_link_for(&net) {
                Ok(_) if !had_parent => done.push(format!(
                    "re-created parent {} of network {}",
                    net.options.parent, net.name
                )),
                Ok(_) => {}
                Err(e) => {
                    done.push(format!("network {}: {e}", net.name));
                    continue;
                }
            }
            if net.options.host_access {
                self.sync_host_access(&net)?;
                done.push(format!(
                    "host access for network {} via {}",
                    net.name,
                    shim_name(&net)
                ));
            }
        }
        Ok(done)
    }
}
