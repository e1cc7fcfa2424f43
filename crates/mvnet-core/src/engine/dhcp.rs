//! The attach path of a network whose addresses come from the LAN's DHCP server
//! (`--ipam-driver dhcp`). The order differs from mvnet's own addressing only where it
//! must: the link comes first (the DHCP exchange needs it, up, with its MAC), then the
//! lease (from the lease agent, run inside the container's namespace), then the store row
//! with the leased address (one address book per LAN still holds it), then the address,
//! routes, conflict probe and announcements as for every endpoint. Any failure undoes all
//! of it, the lease included.

use std::net::IpAddr;

use super::attach::{AttachRequest, Attached};
use super::Engine;
use crate::dhcp;
use crate::driver::{self, LinkKind, OnConflict, ParentNs, RoutePlan};
use crate::model::{Endpoint, MacAddr, Network};
use crate::netlink::Link;
use crate::netns::Netns;
use crate::probe::AddressTaken;
use crate::store::EndpointRequest;
use crate::{conflict, Error, Result};

impl Engine {
    pub(super) fn attach_dhcp(
        &mut self,
        net: &Network,
        req: &AttachRequest,
        ns: &Netns,
        parent: &Link,
        parent_ns: ParentNs,
    ) -> Result<Attached> {
        let opts = &req.options;
        if opts.ipv4.is_some() || opts.ipv6.is_some() {
            return Err(crate::invalid!(
                "network {} gets its addresses from the LAN's DHCP server: leave out --ip/--ip6 (reserve the address for this MAC on the server instead)",
                net.name
            ));
        }
        let ipvlan = matches!(
            req.link.kind.unwrap_or(LinkKind::of(net)),
            LinkKind::Ipvlan(..)
        );
        let name = &req.target.container_name;
        let mac = if ipvlan {
            parent.mac.unwrap_or_else(MacAddr::random_local)
        } else {
            opts.mac.unwrap_or_else(|| dhcp::stable_mac(&net.id, name))
        };
        let taken: Vec<String> = self
            .store
            .endpoints_of_container(&req.target.container_id)?
            .into_iter()
            .map(|e| e.ifname)
            .collect();
        let ifname = match &opts.ifname {
            Some(n) => n.clone(),
            None => (0..)
                .map(|i| format!("eth{i}"))
                .find(|n| !taken.contains(n))
                .expect("a free ethN"),
        };
        // 1. The link, up, without an address.
        let mut plan = self.plan(net, req, parent, &[], mac, &ifname);
        plan.routes.clear();
        let mut no_conflicts = |_: &AddressTaken| -> Result<OnConflict> {
            Err(Error::Internal("a probe without an address".into()))
        };
        driver::attach(
            self.os.as_mut(),
            parent_ns,
            ns,
            &mut plan,
            req.target.owned,
            &mut no_conflicts,
        )?;
        let undo_link = |engine: &mut Engine| {
            let _ = driver::delete_endpoint_link(
                engine.os.as_mut(),
                &req.target.netns,
                &ifname,
                Some(mac),
            );
        };
        // 2. The lease.
        let key = dhcp::lease_key(&req.target.container_id, &net.id);
        let client_id = dhcp::client_id(&net.name, name);
        let asked = dhcp::Request::Acquire {
            key: key.clone(),
            netns: req.target.netns.clone(),
            ifname: ifname.clone(),
            client_id: dhcp::hex(&client_id),
            hostname: name.clone(),
            timeout_secs: net.options.dhcp_wait().as_secs() as u32,
        };
        let lease = match dhcp::acquire(&self.root, &asked) {
            Ok(l) => l,
            Err(e) => {
                undo_link(self);
                return Err(e);
            }
        };
        let release = |engine: &mut Engine| {
            if let Err(e) = dhcp::release(&engine.root, &key) {
                tracing::warn!(error = %e, "cannot release the DHCP lease");
            }
        };
        // 3. The row, with the leased address in the LAN's address book.
        let ip = IpAddr::V4(lease.ip);
        let reservation = EndpointRequest {
            container_id: req.target.container_id.clone(),
            container_name: name.clone(),
            netns: req.target.netns.clone(),
            ifname: Some(ifname.clone()),
            mac: Some(mac),
            owner_pid: std::process::id(),
            frontend: opts.frontend,
            host_addresses: self.host_addresses_in_subnet(ip, lease.prefix)?,
            leased_ipv4: Some((ip, lease.prefix)),
            ..Default::default()
        };
        let ep = match self.store.reserve_endpoint(net, &reservation) {
            Ok(ep) => ep,
            Err(e) => {
                release(self);
                undo_link(self);
                return Err(e);
            }
        };
        // 4. Address, routes, probe, announcements.
        plan.addresses = vec![(ip, lease.prefix)];
        plan.routes = match lease.gateway {
            Some(gw) if !net.internal => vec![RoutePlan {
                dst: None,
                gateway: Some(IpAddr::V4(gw)),
            }],
            _ => Vec::new(),
        };
        plan.probe = if ipvlan {
            None
        } else {
            net.options.probe_window()
        };
        let server = lease.server;
        let mut on_conflict = |t: &AddressTaken| -> Result<OnConflict> {
            Err(conflict!(
                "the DHCP server {server} leased {}, but {} answers for it on the LAN; the address was released: fix the server's records, or remove the device that holds it",
                t.ip,
                t.who()
            ))
        };
        let configured =
            driver::attach::configure(self.os.as_mut(), ns, &mut plan, &mut on_conflict)
                .and_then(|()| self.store.activate_endpoint(&ep.id));
        if let Err(e) = configured {
            let _ = self.store.remove_endpoint(&ep.id);
            release(self);
            undo_link(self);
            return Err(e);
        }
        // 5. The lease on the row: inspect shows it, and a restarted agent resumes it.
        let mut done = ep.clone();
        done.lease = Some(lease.clone());
        self.store.update_endpoint(&done)?;
        Ok(Attached {
            ifname: done.ifname.clone(),
            mac: done.mac,
            addresses: vec![(ip, lease.prefix, lease.gateway.map(IpAddr::V4))],
            network: Some(net.clone()),
            endpoint: Some(done),
        })
    }

    /// The host's own addresses inside the leased subnet (a server that hands out the
    /// host's address is refused rather than obeyed).
    fn host_addresses_in_subnet(
        &mut self,
        ip: IpAddr,
        prefix: u8,
    ) -> Result<Vec<(IpAddr, String)>> {
        let subnet = ipnet::IpNet::new(ip, prefix)
            .map(|n| n.trunc())
            .map_err(|_| Error::Internal(format!("a lease with prefix /{prefix}")))?;
        self.host_addresses_where(&[subnet], &[Some(ip)])
    }

    /// Records a renewed lease on the endpoint of `container_id` on `network_id`; when the
    /// server gave another address, the address book follows (the old address goes back).
    pub fn record_lease(
        &mut self,
        container_id: &str,
        network_id: &str,
        lease: &crate::model::Lease,
    ) -> Result<()> {
        let Some(mut ep) = self
            .store
            .endpoints_of_container(container_id)?
            .into_iter()
            .find(|e| e.network_id == network_id)
        else {
            return Ok(()); // detached meanwhile
        };
        if ep.ipv4.map(|(ip, _)| ip) == Some(IpAddr::V4(lease.ip)) {
            ep.lease = Some(lease.clone());
            return self.store.update_endpoint(&ep);
        }
        let net = self.store.network(network_id)?;
        self.store.move_leased_address(&net, &ep.id, lease)?;
        Ok(())
    }

    /// Releases the DHCP lease of an endpoint that has one (DHCPRELEASE from inside its
    /// namespace, so before the link goes). Failing to reach the agent is only logged:
    /// the server's record then runs out by itself.
    pub(crate) fn release_lease(&mut self, ep: &Endpoint) {
        if ep.lease.is_none() {
            return;
        }
        let key = dhcp::lease_key(&ep.container_id, &ep.network_id);
        if let Err(e) = dhcp::release(&self.root, &key) {
            crate::warn_user(&format!(
                "could not release the DHCP lease of {} ({e}); the server's record runs out by itself",
                ep.container_name
            ));
        }
    }
}
