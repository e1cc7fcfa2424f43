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
