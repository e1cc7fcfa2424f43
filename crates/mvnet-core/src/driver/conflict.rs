//! What the attach does when the LAN answers for an address: the IPv4 conflict probe
//! (RFC 5227) and IPv6 duplicate address detection, with the caller deciding, per taken
//! address, whether to use it anyway or move on to another.

use std::io;
use std::net::IpAddr;

use super::attach::{mac_busy, retry_while_transient};
use super::plan::LinkPlan;
use crate::error::KernelContext;
use crate::model::MacAddr;
use crate::os::{ProbeListener, Rtnl};
use crate::probe::AddressTaken;
use crate::{Error, Result};

/// What the caller decides when probing finds one of the plan's addresses in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    /// Use it anyway (the user insisted: `--force`).
    UseAnyway,
    /// Use this address of the same family instead, with this MAC (IPv4 only: IPv6
    /// conflicts keep the MAC).
    Replace { address: (IpAddr, u8), mac: MacAddr },
}

/// Called when probing finds an address taken; returning an error aborts the attach.
pub type ConflictHandler<'a> = &'a mut dyn FnMut(&AddressTaken) -> Result<OnConflict>;

/// Addresses tried per attach before giving up: a LAN that answers for every address (a
/// proxy-ARP router, say) must not make an attach walk the whole subnet.
pub const MAX_PROBED_ADDRESSES: usize = 8;

/// Counts one more probed address, failing once too many were taken.
fn count_probe(probed: &mut usize, taken: &AddressTaken) -> Result<()> {
    *probed += 1;
    if *probed >= MAX_PROBED_ADDRESSES {
        return Err(crate::conflict!(
            "gave up after {} addresses in a row were in use on the LAN (the last, {}, by {}); if a device answers for every address (proxy ARP), turn probing off with -o probe_ms=0",
            *probed,
            taken.ip,
            taken.who()
        ));
    }
    Ok(())
}

/// An IPv4 conflict probe on a link that is up, bound to a listener, and has no IPv4
/// address yet. Shared by container attach and the host-access shim.
pub(crate) struct Ipv4Probe<'a> {
    pub nl: &'a mut dyn Rtnl,
    pub listener: &'a mut dyn ProbeListener,
    pub index: u32,
    pub ifname: &'a str,
    pub window: std::time::Duration,
}

impl Ipv4Probe<'_> {
    /// Probes the IPv4 address among `addresses` until one is free, or the handler says to
    /// use a taken one; a replacement takes its slot, and its MAC goes onto the link.
    pub fn run(
        &mut self,
        addresses: &mut [(IpAddr, u8)],
        mac: &mut MacAddr,
        on_conflict: ConflictHandler,
        probed: &mut usize,
    ) -> Result<()> {
        loop {
            let Some(slot) = addresses.iter().position(|(ip, _)| ip.is_ipv4()) else {
                return Ok(());
            };
            let IpAddr::V4(ip) = addresses[slot].0 else {
                unreachable!("position found an IPv4 address")
            };
            let Some(holder) = self.listener.probe_v4(self.index, *mac, ip, self.window)? else {
                return Ok(());
            };
            let taken = AddressTaken {
                ip: ip.into(),
                holder: Some(holder),
            };
            count_probe(probed, &taken)?;
            match on_conflict(&taken)? {
                OnConflict::UseAnyway => return Ok(()),
                OnConflict::Replace { address, mac: new } => {
                    addresses[slot] = address;
                    if new != *mac {
                        // The new MAC may still belong to a container removed a moment ago.
                        let nl = &mut *self.nl;
                        retry_while_transient(|| nl.set_mac(self.index, new), mac_busy).map_err(
                            |e| Error::kernel(format!("set MAC {new} on {}", self.ifname), e),
                        )?;
                        *mac = new;
                    }
                }
            }
        }
    }
}

/// Waits for the kernel's DAD on the plan's IPv6 addresses. A failed address goes to the
/// handler when probing (with the defender's MAC, if the listener saw it), else fails.
pub(crate) fn settle_ipv6_dad(
    nl: &mut dyn Rtnl,
    mut listener: Option<&mut dyn ProbeListener>,
    index: u32,
    plan: &mut LinkPlan,
    on_conflict: ConflictHandler,
    probed: &mut usize,
) -> Result<()> {
    let kerr = |op: &'static str| move |e: io::Error| Error::kernel(op, e);
    loop {
        let Some(failed) = wait_for_dad(nl, index, plan)? else {
            return Ok(());
        };
        let slot = plan
            .addresses
            .iter()
            .position(|(ip, _)| *ip == failed)
            .expect("wait_for_dad reports plan addresses only");
        let Some(listener) = listener.as_deref_mut() else {
            return Err(crate::conflict!(
                "IPv6 address {failed} is already used on the LAN (duplicate address detection failed); pick another address"
            ));
        };
        let IpAddr::V6(v6) = failed else {
            unreachable!("DAD is IPv6")
        };
        let taken = AddressTaken {
            ip: failed,
            holder: listener.ndp_holder(v6, plan.mac),
        };
        count_probe(probed, &taken)?;
        let prefix = plan.addresses[slot].1;
        nl.del_address(index, failed, prefix)
            .map_err(kerr("remove a duplicate IPv6 address"))?;
        match on_conflict(&taken)? {
            OnConflict::UseAnyway => {
                nl.add_address_dad(index, failed, prefix, false)
                    .map_err(kerr("add IPv6 address"))?;
                return Ok(());
            }
            OnConflict::Replace { address, .. } => {
                plan.addresses[slot] = address;
                nl.add_address_dad(index, address.0, address.1, true)
                    .map_err(kerr("add IPv6 address"))?;
            }
        }
    }
}

/// Waits until none of the plan's IPv6 addresses is tentative. Returns one that failed DAD.
fn wait_for_dad(nl: &mut dyn Rtnl, index: u32, plan: &LinkPlan) -> Result<Option<IpAddr>> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let ours = |ip: &IpAddr| plan.addresses.iter().any(|(a, _)| a == ip);
    loop {
        let (tentative, failed) = nl
            .dad_state(index)
            .kernel(format!("read addresses of {}", plan.ifname))?;
        if let Some(ip) = failed.into_iter().find(ours) {
            return Ok(Some(ip));
        }
        if !tentative.iter().any(ours) {
            return Ok(None);
        }
        if std::time::Instant::now() >= deadline {
            return Err(crate::conflict!(
                "IPv6 duplicate address detection on {} did not finish within 10 s",
                plan.ifname
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
