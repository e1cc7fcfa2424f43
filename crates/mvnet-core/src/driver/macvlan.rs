//! The macvlan attach sequence, in the order that makes the kernel do the right thing:
//! create the sub-interface inside the container netns (final name, final MAC), add
//! addresses, bring it up (arp_notify/ndisc_notify then announce it), then add routes.
//!
//! It works on a plain `LinkPlan`, so every front end shares it: the CLI fills the plan from
//! mvnet's own IPAM, the CNI plugin from whichever IPAM plugin the config names.

use std::io;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::network::{IpvlanFlag, IpvlanMode};
use crate::model::{Driver, Endpoint, MacAddr, MacvlanMode, Network};
use crate::netlink::{MacvlanLink, Netlink};
use crate::netns::{self, Netns};
use crate::{Error, Result};

/// One route to add in the container: `dst` None is the default route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePlan {
    pub dst: Option<IpNet>,
    pub gateway: Option<IpAddr>,
}

/// Which sub-interface type to create, with its mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    Macvlan(MacvlanMode),
    Ipvlan(IpvlanMode, IpvlanFlag),
}

impl LinkKind {
    pub fn of(net: &Network) -> LinkKind {
        match net.driver {
            Driver::Macvlan => LinkKind::Macvlan(net.options.macvlan_mode),
            Driver::Ipvlan => LinkKind::Ipvlan(net.options.ipvlan_mode, net.options.ipvlan_flag),
        }
    }

    /// l3/l3s ipvlan has no ARP: routes point at the device, not at a gateway.
    pub fn routes_via_device(&self) -> bool {
        matches!(self, LinkKind::Ipvlan(IpvlanMode::L3 | IpvlanMode::L3s, _))
    }
}

/// Everything the kernel needs for one attachment.
#[derive(Debug, Clone)]
pub struct LinkPlan {
    pub ifname: String,
    pub parent_index: u32,
    /// Name of the parent, for messages.
    pub parent_name: String,
    pub kind: LinkKind,
    /// The MAC to give a macvlan; ipvlan always shares the parent's.
    pub mac: MacAddr,
    pub mtu: Option<u32>,
    pub addresses: Vec<(IpAddr, u8)>,
    pub routes: Vec<RoutePlan>,
    /// Run IPv6 duplicate address detection and wait for it (CNI does; Docker skips it).
    pub wait_dad: bool,
    /// Broadcast queue length of the macvlan port (CNI `bcqueuelen`).
    pub bc_queue_len: Option<u32>,
    /// RFC 5227 announcements to send after the link is up, 1 s apart (0: none).
    pub announcements: u32,
}

impl LinkPlan {
    /// The plan for an mvnet endpoint: its addresses, and a default route through each
    /// subnet's gateway unless the network is internal.
    pub fn for_endpoint(net: &Network, ep: &Endpoint, parent_index: u32) -> LinkPlan {
        let addresses: Vec<(IpAddr, u8)> = ep.ipv4.iter().chain(ep.ipv6.iter()).copied().collect();
        let kind = LinkKind::of(net);
        let routes = if net.internal {
            Vec::new()
        } else if kind.routes_via_device() {
            // Docker's l3 routes: `default dev eth0`, one per address family.
            addresses
                .iter()
                .map(|(ip, _)| RoutePlan {
                    dst: Some(if ip.is_ipv4() {
                        "0.0.0.0/0".parse().unwrap()
                    } else {
                        "::/0".parse().unwrap()
                    }),
                    gateway: None,
                })
                .collect()
        } else {
            addresses
                .iter()
                .filter_map(|(ip, _)| gateway_for(net, *ip))
                .map(|gw| RoutePlan {
                    dst: None,
                    gateway: Some(gw),
                })
                .collect()
        };
        LinkPlan {
            ifname: ep.ifname.clone(),
            parent_index,
            parent_name: net.options.parent.clone(),
            kind,
            mac: ep.mac,
            mtu: net.options.mtu,
            addresses,
            routes,
            wait_dad: false,
            bc_queue_len: None,
            announcements: 3,
        }
    }
}

/// Outcome of creating the link, so the caller can recover from a leftover of a crashed run.
pub enum CreateOutcome {
    Created,
    NameTaken,
}

/// Turns a kernel error from creating a macvlan into one a user can act on.
fn explain_create_error(e: io::Error, plan: &LinkPlan) -> Error {
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) => match plan.kind {
            LinkKind::Macvlan(_) => crate::kernel::feature(crate::netlink::ProbeKind::Macvlan).missing_error("a macvlan network"),
            LinkKind::Ipvlan(..) => crate::kernel::feature(crate::netlink::ProbeKind::Ipvlan).missing_error("an ipvlan network"),
        },
        Some(libc::EBUSY) => crate::conflict!(
            "the kernel refused a macvlan on {} (device busy): another macvlan/ipvlan or passthru user owns the parent; see mvnet network ls",
            plan.parent_name
        ),
        Some(libc::EADDRINUSE) => crate::conflict!(
            "MAC address {} is already used by another macvlan on {}; pass a different MAC address",
            plan.mac,
            plan.parent_name
        ),
        Some(libc::EINVAL) if plan.mtu.is_some() => crate::invalid!(
            "the kernel refused MTU {} on parent {}; use an MTU no larger than the parent's",
            plan.mtu.unwrap_or_default(),
            plan.parent_name
        ),
        _ => Error::kernel(format!("create {:?} link {} on {}", plan.kind, plan.ifname, plan.parent_name), e),
    }
}

/// Creates the link inside `ns`. `root` is a socket in the namespace that holds the parent
/// (the host's, or the container's own when the parent lives there).
pub fn create_link(root: &mut Netlink, ns: &Netns, plan: &LinkPlan) -> Result<CreateOutcome> {
    let create = |root: &mut Netlink, name: &str| -> io::Result<()> {
        match plan.kind {
            LinkKind::Macvlan(mode) => root.create_macvlan(&MacvlanLink {
                name,
                parent_index: plan.parent_index,
                mode,
                // Passthru too: the parent goes promiscuous, so the endpoint keeps its own MAC
                // and what inspect reports is what the LAN sees.
                mac: Some(plan.mac),
                mtu: plan.mtu,
                bc_queue_len: plan.bc_queue_len,
                netns: Some(ns),
            }),
            LinkKind::Ipvlan(mode, flag) => {
                root.create_ipvlan(name, plan.parent_index, mode, flag, plan.mtu, Some(ns))
            }
        }
    };
    // A container removed a moment ago may still hold the parent (passthru) or its MAC: the
    // kernel tears a deleted namespace down in the background. Wait that out (briefly)
    // rather than fail; a real conflict still fails, about 2 s later.
    let transient = |e: &io::Error| match e.raw_os_error() {
        Some(libc::EBUSY) | Some(libc::EADDRINUSE) => true,
        Some(libc::EINVAL) => plan.kind == LinkKind::Macvlan(MacvlanMode::Passthru),
        _ => false,
    };
    let mut attempt = 0;
    loop {
        match create(root, &plan.ifname) {
            Ok(()) => return Ok(CreateOutcome::Created),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => break,
            Err(e) if transient(&e) && attempt < 100 => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(explain_create_error(e, plan)),
        }
    }
    // EEXIST: either the container already has the name (a leftover), or the kernel checked
    // the name in *our* namespace, where the host's own eth0 lives (kernels before 6.x do;
    // that is why the CNI reference plugin always uses a temporary name).
    let mut inside = Netlink::in_netns(ns)?;
    let taken = inside
        .link_by_name(&plan.ifname)
        .map_err(|e| Error::kernel("look up interface in container", e))?;
    if taken.is_some() {
        return Ok(CreateOutcome::NameTaken);
    }
    let temp = format!("mvtmp{}", &crate::ids::new_id()[..10]);
    create(root, &temp).map_err(|e| explain_create_error(e, plan))?;
    let renamed = inside
        .link_by_name(&temp)
        .map_err(|e| Error::kernel("look up new interface", e))?
        .ok_or_else(|| Error::Store(format!("{temp} vanished right after creation")))
        .and_then(|l| {
            inside
                .set_name(l.index, &plan.ifname)
                .map_err(|e| Error::kernel(format!("rename {temp} to {}", plan.ifname), e))
        });
    if let Err(e) = renamed {
        let _ = inside.delete_link_by_name(&temp);
        return Err(e);
    }
    Ok(CreateOutcome::Created)
}

/// Everything after the link exists: sysctls, MAC (passthru), addresses, up, routes.
/// On error the caller deletes the link.
pub fn configure(ns: &Netns, plan: &LinkPlan) -> Result<()> {
    // One trip into the namespace: the rtnetlink socket stays bound there, and the sysctl
    // files are resolved against the namespace of the thread that opens them.
    let has_v6 = plan.addresses.iter().any(|(ip, _)| ip.is_ipv6());
    let announce = plan.announcements > 0 && !plan.kind.routes_via_device();
    let (mut nl, arp) = netns::run_in(
        ns,
        || -> Result<(Netlink, Option<crate::arp::ArpSocket>)> {
            // Kernel announcements on link-up: gratuitous ARP (IPv4) and unsolicited NA (IPv6),
            // so LAN caches learn the new MAC for a reused address.
            write_sysctl(
                &format!("/proc/sys/net/ipv4/conf/{}/arp_notify", plan.ifname),
                "1",
            )?;
            if has_v6 {
                write_sysctl(
                    &format!("/proc/sys/net/ipv6/conf/{}/ndisc_notify", plan.ifname),
                    "1",
                )?;
            }
            // The announcement socket too, in this same trip (its interface is named later).
            let arp = if announce {
                Some(crate::arp::ArpSocket::open_here(0)?)
            } else {
                None
            };
            Ok((Netlink::new()?, arp))
        },
    )??;
    let k = |op: &str| {
        let op = format!("{op} on {} in {}", plan.ifname, ns.path().display());
        move |e: io::Error| Error::kernel(op, e)
    };
    let link = nl
        .link_by_name(&plan.ifname)
        .map_err(k("look up"))?
        .ok_or_else(|| Error::Store(format!("{} vanished right after creation", plan.ifname)))?;
    if plan.kind == LinkKind::Macvlan(MacvlanMode::Passthru) && link.mac != Some(plan.mac) {
        // A new passthru link inherits the parent's MAC whatever we asked for; setting it now
        // (as Docker does) honours the MAC rule. The kernel gives the parent its own MAC back
        // when the passthru link goes away.
        nl.set_mac(link.index, plan.mac).map_err(k("set MAC"))?;
    }
    for (ip, prefix) in &plan.addresses {
        nl.add_address_dad(link.index, *ip, *prefix, plan.wait_dad)
            .map_err(k("add address"))?;
    }
    // EADDRINUSE here: the MAC still belongs to a macvlan of a container removed a moment
    // ago, whose namespace the kernel is still tearing down. Wait that out, briefly.
    let mut attempt = 0;
    loop {
        match nl.set_up(link.index, true) {
            Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) && attempt < 100 => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {
                return Err(crate::conflict!(
                    "MAC address {} is already used by another macvlan on {}; pass a different MAC address",
                    plan.mac,
                    plan.parent_name
                ))
            }
            other => {
                other.map_err(k("set up"))?;
                break;
            }
        }
    }
    if plan.wait_dad && has_v6 {
        wait_for_dad(&mut nl, link.index, &plan.ifname)?;
    }
    // Tell the LAN where the address lives now (l3 ipvlan has no ARP).
    if let Some(arp) = arp {
        if let Some(IpAddr::V4(v4)) = plan
            .addresses
            .iter()
            .map(|(ip, _)| *ip)
            .find(IpAddr::is_ipv4)
        {
            arp.on(link.index).announce(
                plan.mac,
                v4,
                plan.announcements - 1,
                std::time::Duration::from_secs(1),
            )?;
        }
    }
    for r in &plan.routes {
        match nl.add_route(r.dst, r.gateway, link.index) {
            // The same default route from two sources (e.g. IPAM routes) is not an error.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            other => other.map_err(k("add route"))?,
        }
    }
    Ok(())
}

/// Waits until no IPv6 address of the link is tentative; fails on a duplicate.
fn wait_for_dad(nl: &mut Netlink, index: u32, ifname: &str) -> Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (tentative, failed) = nl
            .dad_state(index)
            .map_err(|e| Error::kernel(format!("read addresses of {ifname}"), e))?;
        if let Some(ip) = failed.first() {
            return Err(crate::conflict!(
                "IPv6 address {ip} is already used on the LAN (duplicate address detection failed); pick another address"
            ));
        }
        if tentative.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(crate::conflict!(
                "IPv6 duplicate address detection on {ifname} did not finish within 10 s"
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The gateway of the pool an address came from.
pub fn gateway_for(net: &Network, ip: IpAddr) -> Option<IpAddr> {
    net.pools
        .iter()
        .find(|p| p.subnet.contains(&ip))
        .and_then(|p| p.gateway)
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

/// Creates and configures in one go; on failure nothing is left in `ns`.
pub fn attach(
    root: &mut Netlink,
    ns: &Netns,
    plan: &LinkPlan,
    replace_leftover: bool,
) -> Result<()> {
    if let CreateOutcome::NameTaken = create_link(root, ns, plan)? {
        if !replace_leftover {
            return Err(crate::conflict!(
                "namespace {} already has an interface named {}; remove it or choose another interface name",
                ns.path().display(),
                plan.ifname
            ));
        }
        // Our own namespace holds a leftover of an attach that was killed: replace it.
        let path = ns.path().display().to_string();
        delete_link(&path, &plan.ifname)?;
        if let CreateOutcome::NameTaken = create_link(root, ns, plan)? {
            return Err(crate::conflict!("{} keeps existing in {path}", plan.ifname));
        }
    }
    if let Err(e) = configure(ns, plan) {
        let _ = delete_link(&ns.path().display().to_string(), &plan.ifname);
        return Err(e);
    }
    Ok(())
}
