//! The macvlan attach sequence, in the order that makes the kernel do the right thing:
//! create the sub-interface inside the container netns (final name, final MAC); when
//! probing, bring it up and ask the LAN whether the IPv4 address is free before adding it;
//! add addresses (IPv6 through DAD when probing), bring it up, announce, then add routes.
//!
//! It works on a plain `LinkPlan`, so every front end shares it: the CLI fills the plan from
//! mvnet's own IPAM, the CNI plugin from whichever IPAM plugin the config names.

use std::io;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::announce::{Announce, Announcer};
use crate::model::network::{IpvlanFlag, IpvlanMode};
use crate::model::{Driver, Endpoint, MacAddr, MacvlanMode, Network};
use crate::netlink::{MacvlanLink, Netlink};
use crate::netns::{self, Netns};
use crate::probe::{AddressTaken, Listener};
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
    /// Probe the LAN for each address this long before using it (None: don't).
    pub probe: Option<std::time::Duration>,
    /// Turn IPv6 off on the interface (`disable_ipv6=1`), as Docker does for an endpoint
    /// without IPv6: no link-local address, and a router's advertisements cannot give it
    /// addresses nobody asked for.
    pub disable_ipv6: bool,
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
            probe: net.options.probe_window(),
            disable_ipv6: ep.ipv6.is_none(),
        }
    }
}

/// Whether a parent cannot carry traffic now: down, or up without carrier (a cable
/// unplugged, a tap nobody opened).
pub fn parent_is_down(parent: &crate::netlink::Link) -> bool {
    !parent.up || !parent.carrier
}

/// What the user is told when an endpoint is attached to a parent that is down.
pub fn parent_down_notice(parent: &str) -> String {
    format!(
        "parent {parent} is down (no carrier): the container starts, but reaches nothing until {parent} is up (ip link set {parent} up); the LAN conflict probe and IPv6 duplicate address detection were skipped"
    )
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
        Some(libc::EADDRINUSE) => Error::MacInUse {
            mac: plan.mac,
            parent: plan.parent_name.clone(),
        },
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
    match retry_while_transient(|| create(root, &plan.ifname), transient) {
        Ok(()) => return Ok(CreateOutcome::Created),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => return Err(explain_create_error(e, plan)),
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

/// Sockets and handles opened in the one trip into the container's namespace.
struct Inside {
    nl: Netlink,
    announcer: Option<Announcer>,
    listener: Option<Listener>,
    /// The interface's IPv6 neighbour retransmit timer and its value before we shortened
    /// it for a fast DAD: put back once DAD is done.
    retrans: Option<(std::fs::File, String)>,
}

/// Everything after the link exists: sysctls, MAC (passthru), conflict probe, addresses,
/// up, DAD, announcements, routes. Conflicts found by probing go to `on_conflict`, and
/// `plan` ends up holding the addresses and MAC actually used. On error the caller deletes
/// the link.
pub fn configure(ns: &Netns, plan: &mut LinkPlan, on_conflict: ConflictHandler) -> Result<()> {
    let has_v4 = plan.addresses.iter().any(|(ip, _)| ip.is_ipv4());
    let has_v6 = plan.addresses.iter().any(|(ip, _)| ip.is_ipv6());
    // ipvlan ports share the parent's MAC and get frames by destination IP, so the answer to
    // a probe (sent to the MAC, for 0.0.0.0) would never reach the new port.
    let window = plan
        .probe
        .filter(|_| matches!(plan.kind, LinkKind::Macvlan(_)) && (has_v4 || has_v6));
    let dad = has_v6 && (plan.wait_dad || window.is_some());
    let announce = plan.announcements > 0 && !plan.kind.routes_via_device();
    // One trip into the namespace: the rtnetlink and packet sockets stay bound there, and
    // sysctl files are resolved against the namespace of the thread that opens them.
    let mut inside = netns::run_in(ns, || -> Result<Inside> {
        let ifname = &plan.ifname;
        // Kernel notifications when the link's MAC changes or peers must be told: IPv4's
        // arp_notify is set with the link-up message (see `bring_up`), IPv6's has no
        // netlink knob, so IPv6 endpoints pay for the /proc writes.
        let mut retrans = None;
        if plan.disable_ipv6 && std::path::Path::new("/proc/sys/net/ipv6").exists() {
            // Before the link is up, so it never gets even a link-local address.
            write_sysctl(
                &format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"),
                "1",
            )?;
        }
        if has_v6 {
            write_sysctl(
                &format!("/proc/sys/net/ipv6/conf/{ifname}/ndisc_notify"),
                "1",
            )?;
            if let Some(w) = window {
                // DAD in one probe window: start at once (no random delay of up to 1 s) and
                // wait `window` for a defence instead of the default 1 s.
                write_sysctl(&format!("/proc/sys/net/ipv6/conf/{ifname}/accept_dad"), "1")?;
                write_sysctl(
                    &format!("/proc/sys/net/ipv6/conf/{ifname}/router_solicitation_delay"),
                    "0",
                )?;
                retrans = Some(shorten_retrans_timer(ifname, w)?);
            }
        }
        Ok(Inside {
            nl: Netlink::new()?,
            announcer: if announce {
                Some(Announcer::open_here(has_v4, has_v6)?)
            } else {
                None
            },
            listener: window.map(|_| Listener::open_here()).transpose()?,
            retrans,
        })
    })??;
    let nl = &mut inside.nl;
    let where_ = format!("{} in {}", plan.ifname, ns.path().display());
    let k = |op: &str| {
        let op = format!("{op} on {where_}");
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
    let mut probed = 0;
    if let (Some(w), Some(listener)) = (window, inside.listener.as_mut()) {
        // Probing needs the link up and listening before any address is on it.
        bring_up(nl, link.index, plan)?;
        listener.bind(link.index)?;
        if has_v4 {
            let mut probe = Ipv4Probe {
                nl,
                listener,
                index: link.index,
                ifname: &plan.ifname,
                window: w,
            };
            probe.run(&mut plan.addresses, &mut plan.mac, on_conflict, &mut probed)?;
        }
    }
    for (ip, prefix) in &plan.addresses {
        nl.add_address_dad(link.index, *ip, *prefix, dad)
            .map_err(k("add address"))?;
    }
    if window.is_none() {
        bring_up(nl, link.index, plan)?;
    }
    if dad {
        settle_ipv6_dad(
            nl,
            inside.listener.as_mut(),
            link.index,
            plan,
            on_conflict,
            &mut probed,
        )?;
        if let Some((file, value)) = &inside.retrans {
            use std::os::unix::fs::FileExt;
            file.write_at(value.as_bytes(), 0)
                .map_err(|e| Error::io("restore the IPv6 retransmit timer", e))?;
        }
    }
    // Tell the LAN where the addresses live now (l3 ipvlan has no ARP or NDP).
    let listener = inside.listener.take().map(Listener::into_fd);
    if let Some(announcer) = inside.announcer.take() {
        let what = Announce {
            ifindex: link.index,
            mac: plan.mac,
            ipv4: plan.addresses.iter().find_map(|(ip, _)| match ip {
                IpAddr::V4(v4) => Some(*v4),
                _ => None,
            }),
            ipv6: plan.addresses.iter().find_map(|(ip, _)| match ip {
                IpAddr::V6(v6) => Some(*v6),
                _ => None,
            }),
            count: plan.announcements,
            interval: std::time::Duration::from_secs(1),
        };
        announcer.announce(&what, listener)?;
    }
    let nl = &mut inside.nl;
    for r in &plan.routes {
        match nl.add_route(r.dst, r.gateway, link.index) {
            // The same default route from two sources (e.g. IPAM routes) is not an error.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            other => other.map_err(k("add route"))?,
        }
    }
    Ok(())
}

/// Sets the interface's IPv6 retransmit timer (what DAD waits per probe) to `window`;
/// returns the open file and the old value, to restore it after DAD.
fn shorten_retrans_timer(
    ifname: &str,
    window: std::time::Duration,
) -> Result<(std::fs::File, String)> {
    use std::io::Read;
    use std::os::unix::fs::FileExt;
    let path = format!("/proc/sys/net/ipv6/neigh/{ifname}/retrans_time_ms");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("open {path}"), e))?;
    let mut old = String::new();
    f.read_to_string(&mut old)
        .map_err(|e| Error::io(format!("read {path}"), e))?;
    // Sysctl writes must start at offset 0.
    f.write_at(window.as_millis().max(10).to_string().as_bytes(), 0)
        .map_err(|e| Error::io(format!("write {path}"), e))?;
    Ok((f, old.trim().to_string()))
}

/// Retries `op` while it fails in a way `transient` accepts, for up to about 2 s (100 tries,
/// 20 ms apart). For what a container removed a moment ago still holds (its MAC, a
/// passthru parent) while the kernel tears its namespace down in the background.
pub(crate) fn retry_while_transient<T>(
    mut op: impl FnMut() -> io::Result<T>,
    transient: impl Fn(&io::Error) -> bool,
) -> io::Result<T> {
    let mut attempt = 0;
    loop {
        match op() {
            Err(e) if transient(&e) && attempt < 100 => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn mac_busy(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EADDRINUSE)
}

/// Brings the link up, with arp_notify on, waiting out a MAC still held by a macvlan being
/// torn down (EADDRINUSE).
fn bring_up(nl: &mut Netlink, index: u32, plan: &LinkPlan) -> Result<()> {
    retry_while_transient(|| nl.set_up_announcing(index), mac_busy).map_err(|e| {
        if mac_busy(&e) {
            Error::MacInUse {
                mac: plan.mac,
                parent: plan.parent_name.clone(),
            }
        } else {
            Error::kernel(format!("set up {} on {}", plan.ifname, plan.parent_name), e)
        }
    })
}

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
    pub nl: &'a mut Netlink,
    pub listener: &'a mut Listener,
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
fn settle_ipv6_dad(
    nl: &mut Netlink,
    mut listener: Option<&mut Listener>,
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
fn wait_for_dad(nl: &mut Netlink, index: u32, plan: &LinkPlan) -> Result<Option<IpAddr>> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let ours = |ip: &IpAddr| plan.addresses.iter().any(|(a, _)| a == ip);
    loop {
        let (tentative, failed) = nl
            .dad_state(index)
            .map_err(|e| Error::kernel(format!("read addresses of {}", plan.ifname), e))?;
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

/// Deletes an endpoint's interface inside the namespace at `netns_path`, but only when it
/// is a macvlan or ipvlan (and has `mac`, when given): a name alone could be anybody's link
/// (a veth of another runtime, say). Missing namespace or link is success. Returns whether
/// a link was deleted.
pub fn delete_endpoint_link(netns_path: &str, ifname: &str, mac: Option<MacAddr>) -> Result<bool> {
    let ns = match Netns::open(netns_path) {
        Ok(ns) => ns,
        Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(false),
        Err(e) => return Err(e),
    };
    let mut nl = Netlink::in_netns(&ns)?;
    let Some(link) = nl
        .link_by_name(ifname)
        .map_err(|e| Error::kernel(format!("look up {ifname} in {netns_path}"), e))?
    else {
        return Ok(false);
    };
    let ours = match link.kind.as_str() {
        "macvlan" => mac.is_none_or(|m| link.mac == Some(m)),
        "ipvlan" => true,
        _ => false,
    };
    if !ours {
        tracing::warn!(%ifname, kind = %link.kind, "not deleting a link mvnet did not make");
        return Ok(false);
    }
    match nl.delete_link(link.index) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(Error::kernel(format!("delete {ifname} in {netns_path}"), e)),
    }
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

/// Creates and configures in one go; on failure nothing is left in `ns`. See `configure`
/// for `on_conflict` and what `plan` holds afterwards.
pub fn attach(
    root: &mut Netlink,
    ns: &Netns,
    plan: &mut LinkPlan,
    replace_leftover: bool,
    on_conflict: ConflictHandler,
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
    if let Err(e) = configure(ns, plan, on_conflict) {
        let _ = delete_link(&ns.path().display().to_string(), &plan.ifname);
        return Err(e);
    }
    Ok(())
}
