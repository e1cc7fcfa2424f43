//! Endpoints whose link a container runtime moves itself. Docker's network-driver protocol
//! wants the driver to leave the link in the host namespace (`Join` returns its name) and
//! then moves it into the container, renames it and configures it on its own. mvnet still
//! builds every link through the one attach path, in a staging namespace of the front end
//! (probe, conflicts, MAC rule, rollback); these calls then hand the finished link over and
//! keep the endpoint's row true about where the link is, so that detach finds it.

use super::Engine;
use crate::model::{Endpoint, MacAddr};
use crate::{conflict, Error, Result};

impl Engine {
    /// Records a new owner or location for an endpoint (its addresses stay).
    pub fn update_endpoint(&mut self, ep: &Endpoint) -> Result<()> {
        self.store.update_endpoint(ep)
    }

    /// Moves an endpoint's link from its namespace into the namespace at `to`, named
    /// `new_name` there (down, without addresses: the kernel drops them on the move), and
    /// records the new place. Only the macvlan/ipvlan with the endpoint's MAC is moved.
    pub fn hand_over_link(&mut self, ep: &Endpoint, to: &str, new_name: &str) -> Result<Endpoint> {
        let from = self.os.open_netns(&ep.netns)?;
        let dest = self.os.open_netns(to)?;
        let mut nl = self.os.rtnl_in(&from)?;
        let link = nl
            .link_by_name(&ep.ifname)
            .map_err(|e| Error::kernel(format!("look up {} in {}", ep.ifname, ep.netns), e))?
            .filter(|l| matches!(l.kind.as_str(), "macvlan" | "ipvlan"))
            .ok_or_else(|| {
                conflict!(
                    "the link {} of endpoint {} is gone from {}; disconnect and connect the container again",
                    ep.ifname,
                    crate::ids::short(&ep.id),
                    ep.netns
                )
            })?;
        // The MAC is the endpoint's identity on the LAN (an ipvlan has the parent's).
        if let (Some(have), false) = (link.mac, link.kind == "ipvlan") {
            if have != ep.mac {
                return Err(conflict!(
                    "{} in {} has MAC {have}, not endpoint {}'s {}; it is not mvnet's link",
                    ep.ifname,
                    ep.netns,
                    crate::ids::short(&ep.id),
                    ep.mac
                ));
            }
        }
        nl.move_link(link.index, &dest, new_name).map_err(|e| {
            Error::kernel(
                format!("move {} from {} to {to} as {new_name}", ep.ifname, ep.netns),
                e,
            )
        })?;
        let mut moved = ep.clone();
        moved.netns = to.to_string();
        moved.ifname = new_name.to_string();
        self.store.update_endpoint(&moved)?;
        Ok(moved)
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
