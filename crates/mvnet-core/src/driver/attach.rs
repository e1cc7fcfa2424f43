//! The attach sequence, in the order that makes the kernel do the right thing: create the
//! macvlan or ipvlan sub-interface straight inside the container's namespace (final name,
//! final MAC); when probing, bring it up and ask the LAN whether the IPv4 address is free
//! before adding it; add addresses (IPv6 through DAD when probing), bring it up, announce,
//! then add routes. On any failure the link is deleted again.
//!
//! Everything goes through the `Os` traits, so unit tests run it against a fake kernel.

use std::io;
use std::net::IpAddr;

use super::conflict::{settle_ipv6_dad, ConflictHandler, Ipv4Probe};
use super::plan::{LinkKind, LinkPlan};
use crate::announce::Announce;
use crate::error::KernelContext;
use crate::model::{MacAddr, MacvlanMode};
use crate::netlink::{IpvlanLink, MacvlanLink};
use crate::netns::Netns;
use crate::os::{EnterRequest, Os, Rtnl};
use crate::{Error, Result};

/// Where the parent link lives: mvnet's own namespace (the host's), or the container's
/// (CNI `linkInContainer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParentNs {
    Host,
    Target,
}

/// Outcome of creating the link, so the caller can recover from a leftover of a crashed run.
pub enum CreateOutcome {
    Created,
    NameTaken,
}

/// Turns a kernel error from creating a link into one a user can act on.
fn explain_create_error(e: io::Error, plan: &LinkPlan) -> Error {
    use crate::kernel::feature;
    use crate::netlink::ProbeKind;
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) => match plan.kind {
            LinkKind::Macvlan(_) => {
                feature(ProbeKind::Macvlan).missing_error("a macvlan network")
            }
            LinkKind::Ipvlan(..) => feature(ProbeKind::Ipvlan).missing_error("an ipvlan network"),
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
        _ => Error::kernel(
            format!(
                "create {:?} link {} on {}",
                plan.kind, plan.ifname, plan.parent_name
            ),
            e,
        ),
    }
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

pub(crate) fn mac_busy(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EADDRINUSE)
}

/// Creates the link of `plan` inside `ns`, through the rtnetlink of the parent's namespace.
fn create(root: &mut dyn Rtnl, ns: &Netns, plan: &LinkPlan, name: &str) -> io::Result<()> {
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
        LinkKind::Ipvlan(mode, flag) => root.create_ipvlan(&IpvlanLink {
            name,
            parent_index: plan.parent_index,
            mode,
            flag,
            mtu: plan.mtu,
            netns: Some(ns),
        }),
    }
}

/// Runs `f` with the rtnetlink of the namespace that holds the parent.
fn with_parent_rtnl<T>(
    os: &mut dyn Os,
    parent_ns: ParentNs,
    ns: &Netns,
    f: impl FnOnce(&mut dyn Rtnl) -> T,
) -> Result<T> {
    match parent_ns {
        ParentNs::Host => Ok(f(os.host()?)),
        ParentNs::Target => {
            let mut inside = os.rtnl_in(ns)?;
            Ok(f(inside.as_mut()))
        }
    }
}

/// A macvlan an attach creates before it knows its address, and so its MAC
/// (`create_early`).
pub struct EarlyLink {
    pub ifname: String,
    pub parent_index: u32,
    pub mode: MacvlanMode,
    pub mtu: Option<u32>,
    pub bc_queue_len: Option<u32>,
}

/// Creates `link` inside `ns` through the host's rtnetlink, with a MAC of the kernel's
/// choosing: `configure` gives it its own before anything else (`LinkPlan::made_early`).
/// The agent does this while another thread reserves the address in the store, so the two
/// waits overlap. On any failure (the name taken, say) nothing is left and it returns
/// false: the attach then creates the link the usual way, which handles and reports it.
pub fn create_early(os: &mut dyn Os, ns: &Netns, link: &EarlyLink) -> bool {
    let Ok(host) = os.host() else {
        return false;
    };
    host.create_macvlan(&MacvlanLink {
        name: &link.ifname,
        parent_index: link.parent_index,
        mode: link.mode,
        mac: None,
        mtu: link.mtu,
        bc_queue_len: link.bc_queue_len,
        netns: Some(ns),
    })
    .is_ok()
}

/// Creates the link inside `ns`.
pub fn create_link(
    os: &mut dyn Os,
    parent_ns: ParentNs,
    ns: &Netns,
    plan: &LinkPlan,
) -> Result<CreateOutcome> {
    // A container removed a moment ago may still hold the parent (passthru) or its MAC: the
    // kernel tears a deleted namespace down in the background. Wait that out (briefly)
    // rather than fail; a real conflict still fails, about 2 s later.
    let transient = |e: &io::Error| match e.raw_os_error() {
        Some(libc::EBUSY) | Some(libc::EADDRINUSE) => true,
        Some(libc::EINVAL) => plan.kind == LinkKind::Macvlan(MacvlanMode::Passthru),
        _ => false,
    };
    let made = with_parent_rtnl(os, parent_ns, ns, |root| {
        retry_while_transient(|| create(root, ns, plan, &plan.ifname), transient)
    })?;
    match made {
        Ok(()) => return Ok(CreateOutcome::Created),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => return Err(explain_create_error(e, plan)),
    }
    // EEXIST: either the container already has the name (a leftover), or the kernel checked
    // the name in *our* namespace, where the host's own eth0 lives (kernels before 6.x do;
    // that is why the CNI reference plugin always uses a temporary name).
    let mut inside = os.rtnl_in(ns)?;
    let taken = inside
        .link_by_name(&plan.ifname)
        .kernel("look up interface in container")?;
    if taken.is_some() {
        return Ok(CreateOutcome::NameTaken);
    }
    let temp = format!("mvtmp{}", &crate::ids::new_id()[..10]);
    with_parent_rtnl(os, parent_ns, ns, |root| create(root, ns, plan, &temp))?
        .map_err(|e| explain_create_error(e, plan))?;
    // No `?` until the temporary link is renamed or deleted again (found by the fault
    // injection tests: a failed look-up used to leave it behind).
    let renamed = inside
        .link_by_name(&temp)
        .kernel("look up new interface")
        .and_then(|found| {
            found.ok_or_else(|| Error::Internal(format!("{temp} vanished right after creation")))
        })
        .and_then(|l| {
            inside
                .set_name(l.index, &plan.ifname)
                .kernel(format!("rename {temp} to {}", plan.ifname))
        });
    if let Err(e) = renamed {
        let _ = inside.delete_link_by_name(&temp);
        return Err(e);
    }
    Ok(CreateOutcome::Created)
}

/// Everything after the link exists: sysctls, MAC (passthru), conflict probe, addresses,
/// up, DAD, announcements, routes. Conflicts found by probing go to `on_conflict`, and
/// `plan` ends up holding the addresses and MAC actually used. On error the caller deletes
/// the link.
pub fn configure(
    os: &mut dyn Os,
    ns: &Netns,
    plan: &mut LinkPlan,
    on_conflict: ConflictHandler,
) -> Result<()> {
    let has_v4 = plan.addresses.iter().any(|(ip, _)| ip.is_ipv4());
    let has_v6 = plan.addresses.iter().any(|(ip, _)| ip.is_ipv6());
    // ipvlan ports share the parent's MAC and get frames by destination IP, so the answer to
    // a probe (sent to the MAC, for 0.0.0.0) would never reach the new port.
    let window = plan
        .probe
        .filter(|_| matches!(plan.kind, LinkKind::Macvlan(_)) && (has_v4 || has_v6));
    if plan.handover {
        return configure_for_handover(os, ns, plan, window.filter(|_| has_v4), on_conflict);
    }
    let dad = has_v6 && (plan.wait_dad || window.is_some());
    let announce = plan.announcements > 0 && !plan.kind.routes_via_device();
    let mut inside = os.enter(
        ns,
        &EnterRequest {
            ifname: plan.ifname.clone(),
            announce_v4: announce && has_v4,
            announce_v6: announce && has_v6,
            listen: window.is_some(),
            disable_ipv6: plan.disable_ipv6,
            ndisc_notify: has_v6,
            fast_dad: window.filter(|_| has_v6),
        },
    )?;
    crate::timing::mark("enter-ns");
    let nl = inside.rtnl.as_mut();
    // The error's context is written only when there is an error (this runs per attach).
    let ifname = plan.ifname.clone();
    let k = |op: &'static str| {
        let ifname = &ifname;
        move |e: io::Error| Error::kernel(format!("{op} on {ifname} in {}", ns.path().display()), e)
    };
    let vanished = || Error::Internal(format!("{} vanished right after creation", plan.ifname));
    let index = if plan.kind == LinkKind::Macvlan(MacvlanMode::Passthru) {
        let link = nl
            .link_by_name(&plan.ifname)
            .map_err(k("look up"))?
            .ok_or_else(vanished)?;
        if link.mac != Some(plan.mac) {
            // A new passthru link inherits the parent's MAC whatever we asked for; setting
            // it now (as Docker does) honours the MAC rule. The kernel gives the parent its
            // own MAC back when the passthru link goes away.
            nl.set_mac(link.index, plan.mac).map_err(k("set MAC"))?;
        }
        link.index
    } else {
        nl.index_of(&plan.ifname)
            .map_err(k("look up"))?
            .ok_or_else(vanished)?
    };
    let mut probed = 0;
    if let (Some(w), Some(listener)) = (window, inside.listener.as_mut()) {
        // Probing needs the link up and listening before any address is on it.
        bring_up(nl, index, plan)?;
        listener.bind(index)?;
        if has_v4 {
            let mut probe = Ipv4Probe {
                nl,
                listener: listener.as_mut(),
                index,
                ifname: &plan.ifname,
                window: w,
            };
            probe.run(&mut plan.addresses, &mut plan.mac, on_conflict, &mut probed)?;
        }
    }
    for (ip, prefix) in &plan.addresses {
        nl.add_address_dad(index, *ip, *prefix, dad)
            .map_err(k("add address"))?;
    }
    if window.is_none() {
        bring_up(nl, index, plan)?;
    }
    crate::timing::mark("address+up");
    if dad {
        settle_ipv6_dad(
            nl,
            inside
                .listener
                .as_mut()
                .map(|l| -> &mut dyn crate::os::ProbeListener { l.as_mut() }),
            index,
            plan,
            on_conflict,
            &mut probed,
        )?;
        if let Some(restore) = inside.restore_after_dad.take() {
            restore()?;
        }
    }
    // Tell the LAN where the addresses live now (l3 ipvlan has no ARP or NDP).
    let listener = inside.listener.take().and_then(|l| l.into_fd());
    if let Some(announcer) = inside.announcer.take() {
        let what = Announce {
            ifindex: index,
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
    crate::timing::mark("announce");
    let nl = inside.rtnl.as_mut();
    for r in &plan.routes {
        match nl.add_route(r.dst, r.gateway, index) {
            // The same default route from two sources (e.g. IPAM routes) is not an error.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            other => other.map_err(k("add route"))?,
        }
    }
    crate::timing::mark("routes");
    Ok(())
}

/// A link the runtime will move and configure: only the IPv4 probe (up, probe, down again),
/// so the address the runtime is given is free on the LAN. Nothing is configured here: the
/// namespace may be the host's own.
fn configure_for_handover(
    os: &mut dyn Os,
    ns: &Netns,
    plan: &mut LinkPlan,
    window: Option<std::time::Duration>,
    on_conflict: ConflictHandler,
) -> Result<()> {
    let needs_mac_fix = plan.kind == LinkKind::Macvlan(MacvlanMode::Passthru);
    if window.is_none() && !needs_mac_fix {
        return Ok(());
    }
    let mut inside = os.enter(
        ns,
        &EnterRequest {
            ifname: plan.ifname.clone(),
            announce_v4: false,
            announce_v6: false,
            listen: window.is_some(),
            disable_ipv6: false,
            ndisc_notify: false,
            fast_dad: None,
        },
    )?;
    let nl = inside.rtnl.as_mut();
    let link = nl
        .link_by_name(&plan.ifname)
        .kernel(format!("look up {}", plan.ifname))?
        .ok_or_else(|| Error::Internal(format!("{} vanished right after creation", plan.ifname)))?;
    if needs_mac_fix && link.mac != Some(plan.mac) {
        nl.set_mac(link.index, plan.mac)
            .kernel(format!("set MAC on {}", plan.ifname))?;
    }
    if let (Some(w), Some(listener)) = (window, inside.listener.as_mut()) {
        bring_up(nl, link.index, plan)?;
        listener.bind(link.index)?;
        let mut probed = 0;
        let mut probe = Ipv4Probe {
            nl,
            listener: listener.as_mut(),
            index: link.index,
            ifname: &plan.ifname,
            window: w,
        };
        probe.run(&mut plan.addresses, &mut plan.mac, on_conflict, &mut probed)?;
        nl.set_up(link.index, false)
            .kernel(format!("set {} down", plan.ifname))?;
    }
    Ok(())
}

/// Brings the link up, with arp_notify on, waiting out a MAC still held by a macvlan being
/// torn down (EADDRINUSE). A link made early (`LinkPlan::made_early`) gets its own MAC in
/// the same message: the kernel sets it first, refusing one another macvlan on the parent
/// has, as it would have at creation, and the IPv6 link-local address made at up comes
/// from it.
pub(crate) fn bring_up(nl: &mut dyn Rtnl, index: u32, plan: &LinkPlan) -> Result<()> {
    let mac = plan.made_early.then_some(plan.mac);
    retry_while_transient(|| nl.set_up_announcing(index, mac), mac_busy).map_err(|e| {
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

/// Deletes an endpoint's interface inside the namespace at `netns_path`, but only when it
/// is a macvlan or ipvlan (and has `mac`, when given): a name alone could be anybody's link
/// (a veth of another runtime, say). Missing namespace or link is success. Returns whether
/// a link was deleted.
pub fn delete_endpoint_link(
    os: &mut dyn Os,
    netns_path: &str,
    ifname: &str,
    mac: Option<MacAddr>,
) -> Result<bool> {
    let ns = match os.open_netns(netns_path) {
        Ok(ns) => ns,
        Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(false),
        Err(e) => return Err(e),
    };
    let mut nl = os.rtnl_in(&ns)?;
    let Some(link) = nl
        .link_by_name(ifname)
        .kernel(format!("look up {ifname} in {netns_path}"))?
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

/// Deletes the interface named `ifname` inside `ns`, whatever it is (for links this attach
/// made a moment ago, and leftovers in namespaces mvnet owns). Missing is success.
fn delete_link_in(os: &mut dyn Os, ns: &Netns, ifname: &str) -> Result<()> {
    let mut nl = os.rtnl_in(ns)?;
    nl.delete_link_by_name(ifname)
        .map(|_| ())
        .map_err(|e| Error::kernel(format!("delete {ifname} in {}", ns.path().display()), e))
}

/// Creates and configures in one go; on failure nothing is left in `ns`. See `configure`
/// for `on_conflict` and what `plan` holds afterwards. `replace_leftover`: `ns` belongs to
/// mvnet, so an interface of the same name there is a leftover of a killed attach.
pub fn attach(
    os: &mut dyn Os,
    parent_ns: ParentNs,
    ns: &Netns,
    plan: &mut LinkPlan,
    replace_leftover: bool,
    on_conflict: ConflictHandler,
) -> Result<()> {
    let created = if plan.made_early {
        CreateOutcome::Created
    } else {
        create_link(os, parent_ns, ns, plan)?
    };
    crate::timing::mark("create-link");
    if let CreateOutcome::NameTaken = created {
        if !replace_leftover {
            return Err(crate::conflict!(
                "namespace {} already has an interface named {}; remove it or choose another interface name (--ifname)",
                ns.path().display(),
                plan.ifname
            ));
        }
        delete_link_in(os, ns, &plan.ifname)?;
        if let CreateOutcome::NameTaken = create_link(os, parent_ns, ns, plan)? {
            return Err(crate::conflict!(
                "{} keeps existing in {}",
                plan.ifname,
                ns.path().display()
            ));
        }
    }
    if let Err(e) = configure(os, ns, plan, on_conflict) {
        let _ = delete_link_in(os, ns, &plan.ifname);
        return Err(e);
    }
    Ok(())
}
