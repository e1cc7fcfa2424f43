//! The macvlan attach sequence, in the order that makes the kernel do the right thing:
//! create the sub-interface directly inside the container netns (final name, final MAC), add
//! addresses, bring it up (arp_notify/ndisc_notify then announce it), then add routes.

use std::io;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::{Endpoint, MacvlanMode, Network};
use crate::netlink::{MacvlanLink, Netlink};
use crate::netns::{self, Netns};
use crate::{Error, Result};

/// What the kernel needs to know for one attachment.
pub struct AttachPlan<'a> {
    pub network: &'a Network,
    pub endpoint: &'a Endpoint,
    pub parent_index: u32,
}

/// Outcome of creating the link, so the caller can recover from a leftover of a crashed run.
pub enum CreateOutcome {
    Created,
    NameTaken,
}

/// Turns a kernel error from creating a macvlan into one a user can act on.
fn explain_create_error(e: io::Error, net: &Network, ep: &Endpoint) -> Error {
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) => Error::KernelFeature(
            "this kernel has no macvlan support: load it with 'modprobe macvlan' or build with CONFIG_MACVLAN".into(),
        ),
        Some(libc::EBUSY) => crate::conflict!(
            "the kernel refused a macvlan on {} (device busy): another macvlan/ipvlan or passthru user owns the parent; see mvnet network ls",
            net.options.parent
        ),
        Some(libc::EADDRINUSE) => crate::conflict!(
            "MAC address {} is already used by another macvlan on {}; pass a different --mac-address",
            ep.mac,
            net.options.parent
        ),
        Some(libc::EINVAL) if net.options.mtu.is_some() => crate::invalid!(
            "the kernel refused MTU {} on parent {}; use an MTU no larger than the parent's",
            net.options.mtu.unwrap_or_default(),
            net.options.parent
        ),
        _ => Error::kernel(format!("create macvlan {} on {}", ep.ifname, net.options.parent), e),
    }
}

pub fn create_link(root: &mut Netlink, ns: &Netns, plan: &AttachPlan) -> Result<CreateOutcome> {
    let ep = plan.endpoint;
    let net = plan.network;
    let mut spec = MacvlanLink {
        name: &ep.ifname,
        parent_index: plan.parent_index,
        mode: net.options.macvlan_mode,
        // Passthru too: the parent goes promiscuous, so the endpoint keeps its own MAC and
        // what inspect reports is what the LAN sees.
        mac: Some(ep.mac),
        mtu: net.options.mtu,
        netns: Some(ns),
    };
    match root.create_macvlan(&spec) {
        Ok(()) => return Ok(CreateOutcome::Created),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => return Err(explain_create_error(e, net, ep)),
    }
    // EEXIST: either the container already has the name (a leftover), or the kernel checked
    // the name in *our* namespace, where the host's own eth0 lives (kernels before 6.x do;
    // that is why the CNI reference plugin always uses a temporary name).
    let mut inside = Netlink::in_netns(ns)?;
    let taken = inside
        .link_by_name(&ep.ifname)
        .map_err(|e| Error::kernel("look up interface in container", e))?;
    if taken.is_some() {
        return Ok(CreateOutcome::NameTaken);
    }
    let temp = format!("mvtmp{}", &crate::ids::new_id()[..10]);
    spec.name = &temp;
    root.create_macvlan(&spec)
        .map_err(|e| explain_create_error(e, net, ep))?;
    let renamed = inside
        .link_by_name(&temp)
        .map_err(|e| Error::kernel("look up new interface", e))?
        .ok_or_else(|| Error::Store(format!("{temp} vanished right after creation")))
        .and_then(|l| {
            inside
                .set_name(l.index, &ep.ifname)
                .map_err(|e| Error::kernel(format!("rename {temp} to {}", ep.ifname), e))
        });
    if let Err(e) = renamed {
        let _ = inside.delete_link_by_name(&temp);
        return Err(e);
    }
    Ok(CreateOutcome::Created)
}

/// Everything after the link exists: sysctls, addresses, up, routes. On error the caller
/// deletes the link.
pub fn configure(ns: &Netns, plan: &AttachPlan) -> Result<()> {
    let ep = plan.endpoint;
    let net = plan.network;
    // One trip into the namespace: the rtnetlink socket stays bound there, and the sysctl
    // files are resolved against the namespace of the thread that opens them.
    let mut nl = netns::run_in(ns, || -> Result<Netlink> {
        // Kernel announcements on link-up: gratuitous ARP (IPv4) and unsolicited NA (IPv6),
        // so LAN caches learn the new MAC for a reused address.
        write_sysctl(
            &format!("/proc/sys/net/ipv4/conf/{}/arp_notify", ep.ifname),
            "1",
        )?;
        if ep.ipv6.is_some() {
            write_sysctl(
                &format!("/proc/sys/net/ipv6/conf/{}/ndisc_notify", ep.ifname),
                "1",
            )?;
        }
        Netlink::new()
    })??;
    let k = |op: &str| {
        let op = format!("{op} on {} in {}", ep.ifname, ns.path().display());
        move |e: io::Error| Error::kernel(op, e)
    };
    let link = nl
        .link_by_name(&ep.ifname)
        .map_err(k("look up"))?
        .ok_or_else(|| Error::Store(format!("{} vanished right after creation", ep.ifname)))?;
    if net.options.macvlan_mode == MacvlanMode::Passthru && link.mac != Some(ep.mac) {
        // A new passthru link inherits the parent's MAC whatever we asked for; setting it now
        // (as Docker does) honours the MAC rule. The kernel gives the parent its own MAC back
        // when the passthru link goes away.
        nl.set_mac(link.index, ep.mac).map_err(k("set MAC"))?;
    }
    for (ip, prefix) in ep.ipv4.iter().chain(ep.ipv6.iter()) {
        nl.add_address(link.index, *ip, *prefix)
            .map_err(k("add address"))?;
    }
    nl.set_up(link.index, true).map_err(k("set up"))?;
    if !net.internal {
        for (ip, _) in ep.ipv4.iter().chain(ep.ipv6.iter()) {
            if let Some(gw) = gateway_for(net, *ip) {
                nl.add_route(None, Some(gw), link.index)
                    .map_err(k("add default route"))?;
            }
        }
    }
    Ok(())
}

/// The gateway of the pool an address came from.
pub fn gateway_for(net: &Network, ip: IpAddr) -> Option<IpAddr> {
    net.pools
        .iter()
        .find(|p| p.subnet.contains(&ip))
        .and_then(|p| p.gateway)
}

pub fn subnet_for(net: &Network, ip: IpAddr) -> Option<IpNet> {
    net.pools
        .iter()
        .find(|p| p.subnet.contains(&ip))
        .map(|p| p.subnet)
}

fn write_sysctl(path: &str, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|e| Error::io(format!("write {path}"), e))
}

/// Deletes the endpoint's interface inside `ns`. Missing netns or link is success.
pub fn delete_link(netns_path: &str, ifname: &str) -> Result<()> {
    let ns = match Netns::open(netns_path) {
        Ok(ns) => ns,
        Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut nl = Netlink::in_netns(&ns)?;
    nl.delete_link_by_name(ifname)
        .map(|_| ())
        .map_err(|e| Error::kernel(format!("delete {ifname} in {netns_path}"), e))
}
