//! Endpoints whose link a container runtime moves and configures itself. Docker's
//! network-driver protocol wants the driver to leave the link in the host namespace
//! (`Join` returns its name); Docker then moves it into the container, renames it and
//! configures it. mvnet still builds the link through the one attach path (handover mode:
//! reservation, MAC rule, conflict probe, rollback); these calls keep the endpoint's row
//! true afterwards (whose it is, which MAC the user gave).

use super::Engine;
use crate::model::{Endpoint, MacAddr, Network};
use crate::{conflict, Error, Result};

impl Engine {
    /// Records a new owner or location for an endpoint (its addresses stay).
    pub fn update_endpoint(&mut self, ep: &Endpoint) -> Result<()> {
        self.store.update_endpoint(ep)
    }

    /// Records the name a runtime gave network `id` (Docker names a network only in its
    /// own API, never in a plugin call): in the network's `mvnet.docker` label, and as its
    /// mvnet name too unless another mvnet network has that name.
    pub fn record_runtime_name(&mut self, id: &str, name: &str) -> Result<Network> {
        let mut net = self.store.network(id)?;
        if net.id != id {
            return Err(crate::not_found!("network {id} not found"));
        }
        net.labels
            .insert(crate::model::DOCKER_LABEL.to_string(), name.to_string());
        let taken = self
            .store
            .networks()?
            .iter()
            .any(|n| n.name == name && n.id != net.id);
        if !taken && crate::model::network::check_name(name, "network").is_ok() {
            net.name = name.to_string();
        }
        self.store.update_network(&net)?;
        Ok(net)
    }

    /// Announces an endpoint's addresses from inside the namespace at `netns`, where its
    /// runtime has configured the link (found by its MAC): RFC 5227 gratuitous ARPs and
    /// unsolicited neighbour advertisements, three of each, 1 s apart, from a detached
    /// child, as after an attach of mvnet's own. Returns whether the link was there, up and
    /// configured (so a caller can wait for the runtime to finish).
    pub fn announce_in(&mut self, netns: &str, ep: &Endpoint) -> Result<bool> {
        let Some((ns, link)) = self.configured_link_in(netns, ep)? else {
            return Ok(false);
        };
        let v4 = ep.ipv4.and_then(|(ip, _)| match ip {
            std::net::IpAddr::V4(a) => Some(a),
            _ => None,
        });
        let v6 = ep.ipv6.and_then(|(ip, _)| match ip {
            std::net::IpAddr::V6(a) => Some(a),
            _ => None,
        });
        let mut inside = self.os.enter(
            &ns,
            &crate::os::EnterRequest {
                ifname: link.name.clone(),
                announce_v4: v4.is_some(),
                announce_v6: v6.is_some(),
                listen: false,
                disable_ipv6: false,
                ndisc_notify: false,
                fast_dad: None,
            },
        )?;
        if let Some(announcer) = inside.announcer.take() {
            announcer.announce(
                &crate::announce::Announce {
                    ifindex: link.index,
                    mac: ep.mac,
                    ipv4: v4,
                    ipv6: v6,
                    count: 3,
                    interval: std::time::Duration::from_secs(1),
                },
                None,
            )?;
        }
        Ok(true)
    }

    /// Whether the runtime has put the endpoint's link into the namespace at `netns` and
    /// configured it there (up, with the endpoint's first address).
    pub fn link_configured_in(&mut self, netns: &str, ep: &Endpoint) -> Result<bool> {
        Ok(self.configured_link_in(netns, ep)?.is_some())
    }

    /// The endpoint's link in the namespace at `netns` (found by its MAC), once its runtime
    /// has configured it there: up, with the endpoint's first address.
    pub(super) fn configured_link_in(
        &mut self,
        netns: &str,
        ep: &Endpoint,
    ) -> Result<Option<(crate::netns::Netns, crate::netlink::Link)>> {
        let ns = self.os.open_netns(netns)?;
        let mut nl = self.os.rtnl_in(&ns)?;
        let link = nl
            .links()
            .map_err(|e| Error::kernel(format!("list the links in {netns}"), e))?
            .into_iter()
            .find(|l| l.mac == Some(ep.mac) && matches!(l.kind.as_str(), "macvlan" | "ipvlan"));
        let Some(link) = link else {
            return Ok(None);
        };
        let addresses = nl
            .addresses(Some(link.index))
            .map_err(|e| Error::kernel(format!("list the addresses in {netns}"), e))?;
        let first = ep.ipv4.or(ep.ipv6).map(|(ip, _)| ip);
        if !link.up || first.is_some_and(|ip| !addresses.iter().any(|(_, a, _)| *a == ip)) {
            return Ok(None);
        }
        Ok(Some((ns, link)))
    }

    /// Changes the MAC of an endpoint's link (still in its own namespace) and its row.
    pub fn set_endpoint_mac(&mut self, ep: &Endpoint, mac: MacAddr) -> Result<Endpoint> {
        let ns = self.os.open_netns(&ep.netns)?;
        let mut nl = self.os.rtnl_in(&ns)?;
        let link = nl
            .link_by_name(&ep.ifname)
            .map_err(|e| Error::kernel(format!("look up {} in {}", ep.ifname, ep.netns), e))?
            .ok_or_else(|| {
                conflict!(
                    "the link {} of endpoint {} is gone from {}",
                    ep.ifname,
                    crate::ids::short(&ep.id),
                    ep.netns
                )
            })?;
        nl.set_mac(link.index, mac)
            .map_err(|e| Error::kernel(format!("set MAC {mac} on {}", ep.ifname), e))?;
        let mut changed = ep.clone();
        changed.mac = mac;
        self.store.update_endpoint(&changed)?;
        Ok(changed)
    }
}
