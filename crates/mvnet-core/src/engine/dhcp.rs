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
use crate::error::KernelContext;
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
        // Docker names no container before the address is fixed: such an endpoint is
        // known to the server by its MAC (the user's --mac-address keeps it stable).
        let by_mac = name.is_empty();
        let mac = if ipvlan {
            parent.mac.unwrap_or_else(MacAddr::random_local)
        } else if by_mac {
            opts.mac
                .unwrap_or_else(|| dhcp::stable_mac(&net.id, &req.target.container_id))
        } else {
            opts.mac.unwrap_or_else(|| dhcp::stable_mac(&net.id, name))
        };
        let client_id = if by_mac {
            dhcp::client_id_of_mac(mac)
        } else {
            dhcp::client_id(&net.name, name)
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
        if plan.handover {
            // A link Docker will move is made down; the DHCP exchange needs it up.
            if let Err(e) = self.set_link_up(ns, &plan) {
                undo_link(self);
                return Err(e);
            }
        }
        let key = dhcp::lease_key(&req.target.container_id, &net.id);
        // ipvlan: the first exchange runs on the parent (see `dhcp::Proxy`).
        let proxy = ipvlan.then(|| dhcp::Proxy {
            netns: match parent_ns {
                ParentNs::Target => req.target.netns.clone(),
                // This thread's namespace: the parent's (the path lives while we wait).
                ParentNs::Host => format!(
                    "/proc/{}/task/{}/ns/net",
                    std::process::id(),
                    nix::unistd::gettid()
                ),
            },
            parent: parent.name.clone(),
            mac: mac.to_string(),
        });
        let release = |engine: &mut Engine| {
            if let Err(e) = dhcp::release(&engine.root, &key) {
                tracing::warn!(error = %e, "cannot release the DHCP lease");
            }
        };
        // 2-4, up to three times: an address the conflict probe finds in use is declined
        // (DHCPDECLINE, so the server stops offering it) and the next offer taken.
        const OFFERS: usize = 3;
        let mut declined: Vec<String> = Vec::new();
        let mut attempts = 0;
        loop {
            // 2. The lease.
            let asked = dhcp::Request::Acquire {
                key: key.clone(),
                netns: req.target.netns.clone(),
                ifname: ifname.clone(),
                client_id: dhcp::hex(&client_id),
                hostname: name.clone(),
                timeout_secs: net.options.dhcp_wait().as_secs() as u32,
                proxy: proxy.clone(),
            };
            let lease = match dhcp::acquire(&self.root, &asked) {
                Ok(l) => l,
                Err(e) => {
                    undo_link(self);
                    return Err(e);
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
            // 4. Address, routes, probe, announcements (for a link Docker will move: the
            // probe only; Docker configures the rest).
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
            let in_use = std::cell::RefCell::new(None::<String>);
            let mut on_conflict = |t: &AddressTaken| -> Result<OnConflict> {
                *in_use.borrow_mut() = Some(t.who());
                Err(conflict!("{} is in use on the LAN", t.ip))
            };
            let configured =
                driver::attach::configure(self.os.as_mut(), ns, &mut plan, &mut on_conflict)
                    .and_then(|()| match proxy {
                        // The address is on the port now: renewals go on from inside.
                        Some(_) => dhcp::move_lease(
                            &self.root,
                            &dhcp::Request::Move {
                                key: key.clone(),
                                new_key: key.clone(),
                                netns: req.target.netns.clone(),
                                ifname: ifname.clone(),
                                hostname: name.clone(),
                                lease: lease.clone(),
                                timeout_secs: net.options.dhcp_wait().as_secs() as u32,
                            },
                        ),
                        None => Ok(()),
                    })
                    .and_then(|()| self.commit_endpoint(&ep.id));
            if let Err(e) = configured {
                let _ = self.store.remove_endpoint(&ep.id);
                let Some(who) = in_use.into_inner() else {
                    release(self);
                    undo_link(self);
                    return Err(e);
                };
                if let Err(e) = dhcp::decline(&self.root, &key) {
                    tracing::warn!(error = %e, "cannot decline the DHCP lease");
                }
                let entry = format!("{} ({who})", lease.ip);
                tracing::info!(offered = %lease.ip, %who, "declined an address in use on the LAN");
                attempts += 1;
                if !declined.contains(&entry) {
                    declined.push(entry);
                }
                if attempts < OFFERS {
                    continue;
                }
                undo_link(self);
                return Err(conflict!(
                    "the DHCP server {} offered only addresses in use on the LAN: {}; each was declined (DHCPDECLINE): fix the server's records, or remove the devices that hold them",
                    lease.server,
                    declined.join(", ")
                ));
            }
            if !declined.is_empty() {
                crate::warn_user(&format!(
                    "the DHCP server {} first offered addresses in use on the LAN: {}; declined them (DHCPDECLINE) and took {}",
                    lease.server,
                    declined.join(", "),
                    lease.ip
                ));
            }
            // 5. The lease on the row: inspect shows it, and a restarted agent resumes it.
            let mut done = ep.clone();
            done.lease = Some(lease.clone());
            self.store.update_endpoint(&done)?;
            return Ok(Attached {
                ifname: done.ifname.clone(),
                mac: done.mac,
                addresses: vec![(ip, lease.prefix, lease.gateway.map(IpAddr::V4))],
                network: Some(net.clone()),
                endpoint: Some(done),
            });
        }
    }

    /// Brings `ifname` in `ns` up (waiting out a MAC still held by a macvlan being torn
    /// down, as every attach does).
    fn set_link_up(&mut self, ns: &Netns, plan: &driver::LinkPlan) -> Result<()> {
        let mut nl = self.os.rtnl_in(ns)?;
        let link = nl
            .link_by_name(&plan.ifname)
            .kernel(format!("look up {}", plan.ifname))?
            .ok_or_else(|| {
                Error::Internal(format!("{} vanished right after creation", plan.ifname))
            })?;
        driver::attach::bring_up(nl.as_mut(), link.index, plan)
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

    /// Hands the lease of `ep` over to its link's new place: the namespace at `netns`, where
    /// the runtime moved and configured it (Docker's `Join`). The agent stops the client
    /// that leased on the host's side and goes on renewing from inside the container (an
    /// INIT-REBOOT, no new DORA), under the key of `ep` as it is now. `staged_key` is the key
    /// the lease was acquired under. Returns false while the link is not there yet.
    pub fn move_lease_into(
        &mut self,
        netns: &str,
        ep: &Endpoint,
        staged_key: &str,
        hostname: &str,
    ) -> Result<bool> {
        let Some(mut lease) = ep.lease.clone() else {
            return Ok(true);
        };
        let Some((_, link)) = self.configured_link_in(netns, ep)? else {
            return Ok(false);
        };
        let net = self.store.network(&ep.network_id)?;
        lease.netns = Some(netns.to_string());
        lease.ifname = Some(link.name.clone());
        if !hostname.is_empty() {
            lease.hostname = hostname.to_string();
        }
        dhcp::move_lease(
            &self.root,
            &dhcp::Request::Move {
                key: staged_key.to_string(),
                new_key: dhcp::lease_key(&ep.container_id, &ep.network_id),
                netns: netns.to_string(),
                ifname: link.name,
                hostname: lease.hostname.clone(),
                lease: lease.clone(),
                timeout_secs: net.options.dhcp_wait().as_secs() as u32,
            },
        )?;
        let mut moved = ep.clone();
        moved.lease = Some(lease);
        self.store.update_endpoint(&moved)?;
        Ok(true)
    }

    /// Releases the DHCP lease of an endpoint that has one (DHCPRELEASE from inside its
    /// namespace, so before the link goes). Failing to reach the agent is only logged:
    /// the server's record then runs out by itself.
    pub(crate) fn release_lease(&mut self, ep: &Endpoint) {
        self.release_lease_of(ep, None)
    }

    /// [`Engine::release_lease`], for a lease the agent knows under `key` (by default the
    /// endpoint's own: its container and network).
    pub fn release_lease_of(&mut self, ep: &Endpoint, key: Option<&str>) {
        if ep.lease.is_none() {
            return;
        }
        let key = key
            .map(str::to_string)
            .unwrap_or_else(|| dhcp::lease_key(&ep.container_id, &ep.network_id));
        if let Err(e) = dhcp::release(&self.root, &key) {
            crate::warn_user(&format!(
                "could not release the DHCP lease of {} ({e}); the server's record runs out by itself",
                ep.container_name
            ));
        }
    }
}
