//! The one attach and detach path of every front end (CLI, CNI plugin, Docker plugin):
//! network lookup or creation, parent, reservation, link plan, attach, probe and conflict
//! handling, activation, rollback and notices. A front end translates its input into an
//! [`AttachRequest`] and the [`Attached`] outcome into its output; it never touches the
//! store.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use super::Engine;
use crate::driver::{self, LinkKind, LinkPlan, OnConflict, ParentNs, RoutePlan};
use crate::error::KernelContext;
use crate::model::{Driver, Endpoint, Frontend, MacAddr, Network};
use crate::netlink::Link;
use crate::netns::Netns;
use crate::probe::AddressTaken;
use crate::store::{EndpointRequest, Store};
use crate::{conflict, invalid, not_found, Error, Result};

/// Who is being attached: an mvnet container, or any namespace given by path.
#[derive(Debug, Clone)]
pub struct AttachTarget {
    pub container_id: String,
    pub container_name: String,
    pub netns: String,
    /// mvnet created this namespace, so a leftover interface in it (from a process killed
    /// mid-attach) is ours to delete.
    pub owned: bool,
}

impl AttachTarget {
    /// A bare namespace given by path (`--netns /proc/PID/ns/net`): its identity is the
    /// namespace inode, so two paths to one namespace are one target.
    pub fn bare_netns(path: &str) -> Result<AttachTarget> {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(path).map_err(|e| {
            Error::io(
                format!("cannot use network namespace {}", crate::quote(path)),
                e,
            )
        })?;
        Ok(AttachTarget {
            container_id: format!("netns-{:x}-{:x}", md.dev(), md.ino()),
            container_name: path.to_string(),
            netns: path.to_string(),
            owned: false,
        })
    }
}

/// The user's choices for one attachment.
#[derive(Debug, Clone, Default)]
pub struct AttachOptions {
    pub ipv4: Option<IpAddr>,
    pub ipv6: Option<IpAddr>,
    pub mac: Option<MacAddr>,
    pub ifname: Option<String>,
    /// Use a requested static address even when a device on the LAN answers for it.
    pub force: bool,
    /// Which front end asks (recorded on the endpoint).
    pub frontend: Frontend,
}

/// Which network to attach to.
#[derive(Debug, Clone)]
pub enum NetworkSpec {
    /// A network that exists.
    Existing(Network),
    /// The network of exactly this name, created from this record on first use (a CNI
    /// network: its config is its definition). An existing one must have the same parent
    /// and subnets. A network created here goes again if the attach fails.
    Ensure(Network),
    /// A description only, never stored: what to attach when the addresses come from
    /// elsewhere (`Addressing::Given`).
    Unrecorded(Network),
}

/// Where the addresses come from.
#[derive(Debug, Clone)]
pub enum Addressing {
    /// mvnet's store: the network's pools, one address book per LAN.
    Managed,
    /// Someone else's IPAM (a CNI IPAM plugin): used as given and not recorded. An address
    /// the LAN answers for fails the attach, as there is no second choice to offer.
    Given {
        addresses: Vec<(IpAddr, u8)>,
        gateways: Vec<IpAddr>,
        /// Named in messages ("IPAM plugin host-local").
        source: String,
    },
}

/// Settings of the link that a front end may choose itself; `None` keeps the network's.
#[derive(Debug, Clone, Default)]
pub struct LinkSettings {
    /// Where the parent lives (CNI `linkInContainer`: the container's namespace).
    pub parent_in_target: bool,
    /// The parent by name; `None`: the network's (or, with `Given` addressing and no
    /// network, the default-route interface).
    pub parent: Option<String>,
    pub kind: Option<LinkKind>,
    pub mtu: Option<u32>,
    pub bc_queue_len: Option<u32>,
    pub wait_dad: Option<bool>,
    /// The conflict-probe window (`Some(None)` turns probing off).
    pub probe: Option<Option<Duration>>,
    pub disable_ipv6: Option<bool>,
    /// Routes as an IPAM config gives them (`None`: a default route through each subnet's
    /// gateway, Docker's rule). A route without a gateway goes through the gateway of its
    /// family, and is a device route when there is none.
    pub routes: Option<Vec<(IpNet, Option<IpAddr>)>>,
    /// How the user picks another static address, for the message when one is taken.
    pub static_fix: Option<String>,
    /// The runtime moves and configures the link itself (Docker's `Join`): create it down,
    /// probed but unconfigured, in the target namespace, which may then be the host's.
    pub handover: bool,
}

/// Everything one attachment needs.
#[derive(Debug, Clone)]
pub struct AttachRequest {
    pub network: NetworkSpec,
    pub target: AttachTarget,
    pub options: AttachOptions,
    pub addressing: Addressing,
    pub link: LinkSettings,
}

/// What an attachment ended up as.
#[derive(Debug, Clone)]
pub struct Attached {
    /// The endpoint recorded in the store (`Managed` addressing).
    pub endpoint: Option<Endpoint>,
    pub network: Option<Network>,
    pub ifname: String,
    pub mac: MacAddr,
    /// Each address with the gateway of its subnet.
    pub addresses: Vec<(IpAddr, u8, Option<IpAddr>)>,
}

/// How to treat a conflict on an address the user asked for by name.
pub struct StaticAddressPolicy<'a> {
    /// The address asked for, in the conflict's family.
    pub requested: Option<IpAddr>,
    /// Use it even when it is taken.
    pub force: bool,
    /// How the user fixes a refusal, for the error message.
    pub fix: &'a str,
}

const CLI_STATIC_FIX: &str = "pick another --ip/--ip6, or pass --force to use it anyway";

impl Engine {
    /// Attaches `target` to `net` with mvnet's own addressing (the CLI's `run` and
    /// `network connect`).
    pub fn connect(
        &mut self,
        net: &Network,
        target: &AttachTarget,
        opts: &AttachOptions,
    ) -> Result<Endpoint> {
        let outcome = self.attach(&AttachRequest {
            network: NetworkSpec::Existing(net.clone()),
            target: target.clone(),
            options: opts.clone(),
            addressing: Addressing::Managed,
            link: LinkSettings::default(),
        })?;
        outcome
            .endpoint
            .ok_or_else(|| Error::Internal("a managed attach returned no endpoint".into()))
    }

    /// The attach path of every front end. On any failure nothing is left: no link, no
    /// address, no row, and no network record this call created.
    pub fn attach(&mut self, req: &AttachRequest) -> Result<Attached> {
        let (net, created) = match &req.network {
            NetworkSpec::Existing(n) | NetworkSpec::Unrecorded(n) => (n.clone(), false),
            NetworkSpec::Ensure(template) => self.ensure_network(template)?,
        };
        let done = self.attach_to(&net, req);
        if done.is_err() && created {
            // Only if nothing else joined meanwhile (remove_network refuses then).
            let _ = self.remove_network(&net.id);
        }
        done
    }

    /// The network of exactly `template.name`: checked against the template if it exists,
    /// created from it if not. Returns whether this call created it.
    fn ensure_network(&mut self, template: &Network) -> Result<(Network, bool)> {
        let subnets = |n: &Network| {
            let mut v: Vec<String> = n.pools.iter().map(|p| p.subnet.to_string()).collect();
            v.sort();
            v
        };
        let check_same = |n: &Network| -> Result<()> {
            if n.options.parent != template.options.parent || subnets(n) != subnets(template) {
                return Err(invalid!(
                    "mvnet network {} already exists with subnets {:?} on parent {}, but this config says {:?} on {}; rename the network or remove the existing one",
                    n.name,
                    subnets(n),
                    n.options.parent,
                    subnets(template),
                    template.options.parent
                ));
            }
            Ok(())
        };
        if let Some(n) = self.network_by_exact_name(&template.name)? {
            check_same(&n)?;
            return Ok((n, false));
        }
        for p in &template.pools {
            crate::model::network::special_subnet(&p.subnet)?;
        }
        let check = |existing: &[Network]| super::check_against_existing(template, existing);
        match self.store.create_network(template, &check, false) {
            Ok(()) => Ok((template.clone(), true)),
            // Another attach created it a moment ago.
            Err(Error::Conflict(m)) => match self.network_by_exact_name(&template.name)? {
                Some(n) => {
                    check_same(&n)?;
                    Ok((n, false))
                }
                None => Err(Error::Conflict(m)),
            },
            Err(e) => Err(e),
        }
    }

    /// The network named exactly `name` (never an id or an id prefix: a CNI network named
    /// "2" must not select another network whose id starts with 2).
    pub fn network_by_exact_name(&mut self, name: &str) -> Result<Option<Network>> {
        self.store.network_named(name)
    }

    fn attach_to(&mut self, net: &Network, req: &AttachRequest) -> Result<Attached> {
        let opts = &req.options;
        let ipvlan = req.link.kind.map_or(net.driver == Driver::Ipvlan, |k| {
            matches!(k, LinkKind::Ipvlan(..))
        });
        if ipvlan && opts.mac.is_some() {
            return Err(invalid!(
                "ipvlan endpoints share the parent's MAC, so a MAC address cannot be chosen on ipvlan network {}; use a macvlan network to choose a MAC",
                net.name
            ));
        }
        let ns = self.os.open_netns(&req.target.netns)?;
        if !req.link.handover && self.os.is_own_netns(&ns)? {
            return Err(invalid!(
                "{} is mvnet's own network namespace (the host's): an endpoint there would put the container's address and routes on the host; give the container's namespace",
                crate::quote(&req.target.netns)
            ));
        }
        let parent_ns = if req.link.parent_in_target {
            ParentNs::Target
        } else {
            ParentNs::Host
        };
        let parent = match (&req.link.parent, parent_ns) {
            (_, ParentNs::Target) => {
                let name = req.link.parent.clone().unwrap_or_default();
                self.parent_in(&ns, &name)?
            }
            // Named by the front end: found, or created when it is a `BASE.VID` name.
            (Some(name), ParentNs::Host) => {
                crate::parent::ensure(self.netlink()?, name, &net.driver.to_string())?.0
            }
            (None, ParentNs::Host) => self.parent_link_for(net)?,
        };
        if let Some(mtu) = req.link.mtu.or(net.options.mtu) {
            if mtu > parent.mtu {
                return Err(invalid!(
                    "invalid MTU {mtu}, must be [0, master MTU({})]: use an MTU no larger than that of parent {}",
                    parent.mtu,
                    parent.name
                ));
            }
        }
        match &req.addressing {
            // The LAN's DHCP server is the network's address book.
            Addressing::Managed if net.dhcp => self.attach_dhcp(net, req, &ns, &parent, parent_ns),
            Addressing::Managed => self.attach_managed(net, req, &ns, &parent, parent_ns),
            Addressing::Given {
                addresses,
                gateways,
                source,
            } => {
                let mac = if ipvlan {
                    parent.mac.unwrap_or_else(MacAddr::random_local)
                } else {
                    opts.mac.unwrap_or_else(|| {
                        addresses
                            .iter()
                            .find_map(|(ip, _)| MacAddr::from_ipv4_addr(*ip))
                            .unwrap_or_else(MacAddr::random_local)
                    })
                };
                let gateway_of = |ip: &IpAddr| {
                    gateways
                        .iter()
                        .copied()
                        .find(|g| g.is_ipv6() == ip.is_ipv6())
                };
                let with_gw: Vec<(IpAddr, u8, Option<IpAddr>)> = addresses
                    .iter()
                    .map(|(ip, p)| (*ip, *p, gateway_of(ip)))
                    .collect();
                let mut plan =
                    self.plan(net, req, &parent, &with_gw, mac, &opts.ifname_or_default());
                let mut on_conflict = |t: &AddressTaken| -> Result<OnConflict> {
                    Err(conflict!(
                        "address {} from {source} is already used on the LAN by {}; keep it out of the IPAM range, or use \"ipam\": {{\"type\": \"mvnet\"}}, which skips taken addresses",
                        t.ip,
                        t.who()
                    ))
                };
                driver::attach(
                    self.os.as_mut(),
                    parent_ns,
                    &ns,
                    &mut plan,
                    req.target.owned,
                    &mut on_conflict,
                )?;
                Ok(Attached {
                    endpoint: None,
                    network: None,
                    ifname: plan.ifname,
                    mac: plan.mac,
                    addresses: with_gw,
                })
            }
        }
    }

    /// The parent named `name` inside the target's namespace (CNI `linkInContainer`).
    fn parent_in(&mut self, ns: &Netns, name: &str) -> Result<Link> {
        let mut nl = self.os.rtnl_in(ns)?;
        nl.link_by_name(name)
            .map_err(|e| Error::kernel(format!("look up {name} in {}", ns.path().display()), e))?
            .ok_or_else(|| {
                not_found!(
                    "parent interface {name} not found in {}; it must exist there with linkInContainer",
                    ns.path().display()
                )
            })
    }

    /// The link plan of one attachment: the network's settings, then the front end's.
    pub(super) fn plan(
        &self,
        net: &Network,
        req: &AttachRequest,
        parent: &Link,
        addresses: &[(IpAddr, u8, Option<IpAddr>)],
        mac: MacAddr,
        ifname: &str,
    ) -> LinkPlan {
        let ep = Endpoint {
            id: String::new(),
            network_id: net.id.clone(),
            container_id: String::new(),
            container_name: String::new(),
            netns: String::new(),
            ifname: ifname.to_string(),
            mac,
            ipv4: addresses
                .iter()
                .find(|(ip, ..)| ip.is_ipv4())
                .map(|(ip, p, _)| (*ip, *p)),
            ipv6: addresses
                .iter()
                .find(|(ip, ..)| ip.is_ipv6())
                .map(|(ip, p, _)| (*ip, *p)),
            state: crate::model::EndpointState::Creating,
            owner_pid: 0,
            frontend: req.options.frontend,
            lease: None,
        };
        let mut plan = LinkPlan::for_endpoint(net, &ep, parent.index);
        // Every address, not only the first of each family (a Given IPAM result may
        // carry several).
        plan.addresses = addresses.iter().map(|(ip, p, _)| (*ip, *p)).collect();
        plan.parent_name = parent.name.clone();
        let l = &req.link;
        if let Some(k) = l.kind {
            plan.kind = k;
        }
        if l.mtu.is_some() {
            plan.mtu = l.mtu;
        }
        if l.bc_queue_len.is_some() {
            plan.bc_queue_len = l.bc_queue_len;
        }
        if let Some(w) = l.wait_dad {
            plan.wait_dad = w;
        }
        if let Some(p) = l.probe {
            plan.probe = p;
        }
        if let Some(d) = l.disable_ipv6 {
            plan.disable_ipv6 = d;
        }
        plan.handover = l.handover;
        if let Some(routes) = &l.routes {
            plan.routes = routes_from_ipam(routes, addresses);
        }
        if driver::parent_is_down(parent) {
            // Neither a probe nor DAD can get an answer: skip them instead of waiting
            // (DAD would never finish) and start the container, as Docker does.
            plan.probe = None;
            plan.wait_dad = false;
            crate::warn_user(&driver::parent_down_notice(&parent.name));
        }
        plan
    }

    /// Reserve in the store, build in the kernel, confirm; roll back on failure.
    fn attach_managed(
        &mut self,
        net: &Network,
        req: &AttachRequest,
        ns: &Netns,
        parent: &Link,
        parent_ns: ParentNs,
    ) -> Result<Attached> {
        let opts = &req.options;
        crate::timing::mark("netns+parent");
        let host_addresses = self.host_addresses_in(net, &[opts.ipv4, opts.ipv6])?;
        crate::timing::mark("host-addresses");
        let ipvlan = matches!(
            req.link.kind.unwrap_or(LinkKind::of(net)),
            LinkKind::Ipvlan(..)
        );
        let reservation = EndpointRequest {
            container_id: req.target.container_id.clone(),
            container_name: req.target.container_name.clone(),
            netns: req.target.netns.clone(),
            ifname: opts.ifname.clone(),
            static_ipv4: opts.ipv4,
            static_ipv6: opts.ipv6,
            // What inspect shows is the MAC the LAN sees: for ipvlan, the parent's.
            mac: if ipvlan { parent.mac } else { opts.mac },
            owner_pid: std::process::id(),
            frontend: opts.frontend,
            host_addresses,
            leased_ipv4: None,
            probes: !ipvlan
                && !driver::parent_is_down(parent)
                && req
                    .link
                    .probe
                    .unwrap_or(net.options.probe_window())
                    .is_some(),
        };
        // In an agent, the link is created while the store reserves its address (the MAC
        // follows once the address is known): the two waits overlap.
        let early = self.early_link(net, req, parent, parent_ns);
        let (reserved, mut made_early) = match &early {
            Some(link) => {
                let (store, os) = (&mut self.store, &mut self.os);
                crate::helper::join(
                    || store.reserve_endpoint(net, &reservation),
                    || driver::create_early(os.as_mut(), ns, link),
                )
            }
            None => (self.store.reserve_endpoint(net, &reservation), false),
        };
        crate::timing::mark("reserve");
        let early_name = early.map(|l| l.ifname).unwrap_or_default();
        let mut ep = match reserved {
            Ok(ep) if made_early && ep.ifname != early_name => {
                // The store chose another name (cannot happen with a name given): the
                // early link goes, and the link is made the usual way.
                let _ = driver::delete_endpoint_link(
                    self.os.as_mut(),
                    &req.target.netns,
                    &early_name,
                    None,
                );
                made_early = false;
                ep
            }
            Ok(ep) => ep,
            Err(e) => {
                if made_early {
                    let _ = driver::delete_endpoint_link(
                        self.os.as_mut(),
                        &req.target.netns,
                        &early_name,
                        None,
                    );
                }
                return Err(e);
            }
        };
        self.delete_reclaimed_links();
        let mut refused = None;
        let mut mac_skips = 0;
        loop {
            let built = self.build_endpoint(
                net,
                req,
                &ep,
                parent,
                ns,
                parent_ns,
                &mut refused,
                made_early,
            );
            // A retry (another address) makes its link the usual way: a failed build
            // deleted the early one.
            made_early = false;
            match built {
                Ok(built) => {
                    let activated = self.commit_endpoint(&built.id);
                    crate::timing::mark("activate");
                    if let Err(e) = activated {
                        let _ = driver::delete_endpoint_link(
                            self.os.as_mut(),
                            &built.netns,
                            &built.ifname,
                            Some(built.mac),
                        );
                        let _ = self.store.remove_endpoint(&built.id);
                        return Err(e);
                    }
                    self.host_access_follow(net, &built, true)?;
                    let addresses = built
                        .ipv4
                        .iter()
                        .chain(built.ipv6.iter())
                        .map(|(ip, p)| (*ip, *p, driver::gateway_for(net, *ip)))
                        .collect();
                    return Ok(Attached {
                        ifname: built.ifname.clone(),
                        mac: built.mac,
                        addresses,
                        network: Some(net.clone()),
                        endpoint: Some(built),
                    });
                }
                // The MAC derived from this address belongs to a macvlan mvnet does not know
                // (left by a process killed mid-attach, or made by hand): that address is
                // not usable here, so skip it like a LAN conflict and take the next one.
                Err(Error::MacInUse { mac, .. })
                    if opts.mac.is_none()
                        && mac_skips < driver::MAX_PROBED_ADDRESSES
                        && ep.ipv4.is_some_and(|(ip, _)| {
                            opts.ipv4.is_none() && MacAddr::from_ipv4_addr(ip) == Some(mac)
                        }) =>
                {
                    mac_skips += 1;
                    let (ip, _) = ep.ipv4.expect("checked above");
                    crate::warn_user(&format!(
                        "the MAC {mac} that {ip} maps to is already used by another macvlan on {}; marked {ip} as taken (mvnet network inspect {} lists it) and trying the next address",
                        net.options.parent, net.name
                    ));
                    match self
                        .store
                        .replace_conflicting_address(net, &ep.id, ip, Some(mac))
                    {
                        Ok(next) => ep = next,
                        Err(e) => {
                            self.store.remove_endpoint(&ep.id)?;
                            return Err(e);
                        }
                    }
                }
                Err(e) => {
                    self.store.remove_endpoint(&ep.id)?;
                    // A requested address found in use: remember it once it is free again.
                    if let Some(t) = refused {
                        self.store.record_lan_conflict(net, t.ip, t.holder)?;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// The link an attach may create while the store reserves its address: only in a
    /// process with a helper thread (the agent), and only where that changes nothing else
    /// (a macvlan that is not passthru, whose name is given, on a parent in our own
    /// namespace, and a network whose reservation needs no etcd: the helper lives in
    /// another namespace, where new connections would lead nowhere).
    fn early_link(
        &self,
        net: &Network,
        req: &AttachRequest,
        parent: &Link,
        parent_ns: ParentNs,
    ) -> Option<driver::EarlyLink> {
        // The network as stored (the request may carry only a template of it).
        if parent_ns != ParentNs::Host || !may_create_early(req) || net.fleet.is_some() {
            return None;
        }
        let mode = match req.link.kind.unwrap_or(LinkKind::of(net)) {
            LinkKind::Macvlan(crate::model::MacvlanMode::Passthru) | LinkKind::Ipvlan(..) => {
                return None
            }
            LinkKind::Macvlan(mode) => mode,
        };
        Some(driver::EarlyLink {
            ifname: req.options.ifname.clone()?,
            parent_index: parent.index,
            mode,
            mtu: req.link.mtu.or(net.options.mtu),
            bc_queue_len: req.link.bc_queue_len,
        })
    }

    /// Builds the link; returns the endpoint as finally configured (probing may have moved
    /// it to other addresses). `made_early`: the link exists (`early_link`).
    #[allow(clippy::too_many_arguments)]
    fn build_endpoint(
        &mut self,
        net: &Network,
        req: &AttachRequest,
        ep: &Endpoint,
        parent: &Link,
        ns: &Netns,
        parent_ns: ParentNs,
        refused: &mut Option<AddressTaken>,
        made_early: bool,
    ) -> Result<Endpoint> {
        let with_gw: Vec<(IpAddr, u8, Option<IpAddr>)> = ep
            .ipv4
            .iter()
            .chain(ep.ipv6.iter())
            .map(|(ip, p)| (*ip, *p, driver::gateway_for(net, *ip)))
            .collect();
        let mut plan = self.plan(net, req, parent, &with_gw, ep.mac, &ep.ifname);
        plan.made_early = made_early;
        let mut current = ep.clone();
        let opts = &req.options;
        let fix = req.link.static_fix.as_deref().unwrap_or(CLI_STATIC_FIX);
        let store = self.store.as_mut();
        let mut on_conflict = |t: &AddressTaken| {
            let requested = if t.ip.is_ipv4() { opts.ipv4 } else { opts.ipv6 };
            let policy = StaticAddressPolicy {
                requested,
                force: opts.force,
                fix,
            };
            resolve_conflict(store, net, &mut current, &policy, t, refused)
        };
        driver::attach(
            self.os.as_mut(),
            parent_ns,
            ns,
            &mut plan,
            req.target.owned,
            &mut on_conflict,
        )?;
        Ok(current)
    }

    /// The addresses this host holds inside `net`'s subnets. A container given one would
    /// take the host's own address off the LAN, and no probe can see it (the host never
    /// answers its own ARP through a macvlan). One address dump per attach; only an
    /// address in `named` (asked for by name, so refused naming its interface) costs a
    /// link look-up too.
    pub fn host_addresses_in(
        &mut self,
        net: &Network,
        named: &[Option<IpAddr>],
    ) -> Result<Vec<(IpAddr, String)>> {
        let subnets: Vec<IpNet> = net.pools.iter().map(|p| p.subnet).collect();
        self.host_addresses_where(&subnets, named)
    }

    /// The host's addresses inside `subnets`, named by interface when in `named`.
    pub(super) fn host_addresses_where(
        &mut self,
        subnets: &[IpNet],
        named: &[Option<IpAddr>],
    ) -> Result<Vec<(IpAddr, String)>> {
        let nl = self.netlink()?;
        let addrs = nl.addresses(None).kernel("list the host's addresses")?;
        let mut out = Vec::new();
        for (index, ip, _) in addrs {
            if subnets.iter().any(|s| s.contains(&ip)) {
                let name = if named.contains(&Some(ip)) {
                    nl.link_by_index(index).ok().flatten().map(|l| l.name)
                } else {
                    None
                };
                out.push((ip, name.unwrap_or_else(|| format!("interface {index}"))));
            }
        }
        Ok(out)
    }

    /// Deletes the half-made links of endpoints whose creator was killed mid-attach (the
    /// store released their addresses): otherwise their MACs, derived from those addresses,
    /// would block whoever gets the addresses next. Only a macvlan/ipvlan with the recorded
    /// name and MAC is deleted.
    pub(crate) fn delete_reclaimed_links(&mut self) {
        for ep in self.store.take_reclaimed() {
            if ep.netns.is_empty() {
                continue;
            }
            if let Err(e) =
                driver::delete_endpoint_link(self.os.as_mut(), &ep.netns, &ep.ifname, Some(ep.mac))
            {
                tracing::warn!(endpoint = %ep.id, error = %e, "cannot delete the link of an abandoned endpoint");
            }
        }
    }

    /// Detaches an endpoint: link first, then the store (so a crash in between leaves a row
    /// that the next disconnect or rm still finds). Only the macvlan/ipvlan with the
    /// recorded MAC is deleted: the row is data, and a name alone could be another link's.
    pub fn disconnect(&mut self, ep: &Endpoint) -> Result<()> {
        // DHCPRELEASE goes out of the link, so before it goes.
        self.release_lease(ep);
        driver::delete_endpoint_link(self.os.as_mut(), &ep.netns, &ep.ifname, Some(ep.mac))?;
        self.release_endpoint(ep)
    }

    /// Deletes the macvlan or ipvlan `ifname` in the namespace at `netns` (only with `mac`,
    /// when given): never another kind of link that happens to have the name. Missing
    /// namespace or link is success; returns whether a link was deleted.
    pub fn delete_endpoint_link(
        &mut self,
        netns: &str,
        ifname: &str,
        mac: Option<MacAddr>,
    ) -> Result<bool> {
        driver::delete_endpoint_link(self.os.as_mut(), netns, ifname, mac)
    }

    /// Takes every address off the interface `ifname` in the namespace at `netns` (the
    /// link itself goes with its namespace). Missing namespace or link is success.
    pub fn take_addresses_down(&mut self, netns: &str, ifname: &str) -> Result<()> {
        let ns = match self.os.open_netns(netns) {
            Ok(ns) => ns,
            Err(_) => return Ok(()), // gone, or not visible from here: nothing to take down
        };
        let mut nl = self.os.rtnl_in(&ns)?;
        let Some(link) = nl
            .link_by_name(ifname)
            .map_err(|e| Error::kernel(format!("look up {ifname} in {netns}"), e))?
        else {
            return Ok(());
        };
        let addresses = nl
            .addresses(Some(link.index))
            .map_err(|e| Error::kernel(format!("list the addresses of {ifname}"), e))?;
        for (_, ip, prefix) in addresses {
            match nl.del_address(link.index, ip, prefix) {
                Err(e) if e.raw_os_error() != Some(libc::EADDRNOTAVAIL) => {
                    return Err(Error::kernel(format!("remove {ip} from {ifname}"), e))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Gives an endpoint's addresses back (its link is gone or going with its namespace)
    /// and drops the host's route to it.
    pub fn release_endpoint(&mut self, ep: &Endpoint) -> Result<()> {
        // The network first: the store learns its pool (a shared pool with spares keeps
        // the address as a spare instead of releasing it).
        let net = self.store.network(&ep.network_id).ok();
        self.store.remove_endpoint(&ep.id)?;
        if let Some(net) = net {
            self.host_access_follow(&net, ep, false)?;
        }
        Ok(())
    }

    /// The endpoint of `container_id` on `net`, or a clear error.
    pub fn endpoint_on(
        &mut self,
        net: &Network,
        container_id: &str,
        who: &str,
    ) -> Result<Endpoint> {
        self.store
            .endpoints_of_container(container_id)?
            .into_iter()
            .find(|e| e.network_id == net.id)
            .ok_or_else(|| not_found!("{who} is not connected to network {}", net.name))
    }
}

/// What `Engine::early_link` can tell from the request alone: whether the attach may
/// create its link while the store reserves the address.
fn may_create_early(req: &AttachRequest) -> bool {
    let net = match &req.network {
        NetworkSpec::Existing(n) | NetworkSpec::Unrecorded(n) | NetworkSpec::Ensure(n) => n,
    };
    crate::helper::enabled()
        && matches!(req.addressing, Addressing::Managed)
        && !req.link.parent_in_target
        && !req.link.handover
        && req.options.ifname.is_some()
        && !net.dhcp
        && net.fleet.is_none()
        && !matches!(
            req.link.kind.unwrap_or(LinkKind::of(net)),
            LinkKind::Macvlan(crate::model::MacvlanMode::Passthru) | LinkKind::Ipvlan(..)
        )
}

impl AttachOptions {
    fn ifname_or_default(&self) -> String {
        self.ifname.clone().unwrap_or_else(|| "eth0".to_string())
    }
}

/// IPAM routes as link routes: a route without a gateway goes through the gateway of its
/// family (as the CNI reference's ConfigureIface does), and is a device route when the
/// family has none. A default route is `dst: None` when it has a gateway.
pub fn routes_from_ipam(
    routes: &[(IpNet, Option<IpAddr>)],
    addresses: &[(IpAddr, u8, Option<IpAddr>)],
) -> Vec<RoutePlan> {
    routes
        .iter()
        .map(|(dst, gw)| {
            let gateway = gw.or_else(|| {
                addresses
                    .iter()
                    .find(|(ip, ..)| ip.is_ipv6() == dst.addr().is_ipv6())
                    .and_then(|(_, _, g)| *g)
            });
            RoutePlan {
                dst: (dst.prefix_len() != 0 || gateway.is_none()).then_some(*dst),
                gateway,
            }
        })
        .collect()
}

/// Decides what to do about an address a probe found in use on the LAN. A requested address
/// fails the attach (it is noted in `refused`, to be recorded once the endpoint is gone),
/// unless forced. Otherwise the store records the conflict and moves `ep` to the next free
/// address, and the user is warned.
pub fn resolve_conflict(
    store: &mut dyn Store,
    net: &Network,
    ep: &mut Endpoint,
    policy: &StaticAddressPolicy,
    taken: &AddressTaken,
    refused: &mut Option<AddressTaken>,
) -> Result<OnConflict> {
    if policy.requested == Some(taken.ip) {
        if policy.force {
            crate::warn_user(&format!(
                "{} is already used on the LAN by {}; using it anyway (--force)",
                taken.ip,
                taken.who()
            ));
            return Ok(OnConflict::UseAnyway);
        }
        *refused = Some(*taken);
        return Err(conflict!(
            "address {} is already used on the LAN by {} (it answered mvnet's probe); {}",
            taken.ip,
            taken.who(),
            policy.fix
        ));
    }
    let updated = store.replace_conflicting_address(net, &ep.id, taken.ip, taken.holder)?;
    let address = if taken.ip.is_ipv4() {
        updated.ipv4
    } else {
        updated.ipv6
    }
    .ok_or_else(|| Error::Internal(format!("endpoint {} lost its address", ep.id)))?;
    crate::warn_user(&format!(
        "{} is already used on the LAN by {}; marked it as taken (mvnet network inspect {} lists it) and using {} instead",
        taken.ip,
        taken.who(),
        net.name,
        address.0
    ));
    *ep = updated;
    Ok(OnConflict::Replace {
        address,
        mac: ep.mac,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipam_routes_fall_back_to_the_family_gateway_or_the_device() {
        let v4: IpAddr = "10.0.0.5".parse().unwrap();
        let gw: IpAddr = "10.0.0.1".parse().unwrap();
        let addrs = [(v4, 24, Some(gw))];
        let r = routes_from_ipam(
            &[
                ("0.0.0.0/0".parse().unwrap(), None),
                ("::/0".parse().unwrap(), None),
                ("192.0.2.0/24".parse().unwrap(), Some(gw)),
            ],
            &addrs,
        );
        assert_eq!(
            r[0],
            RoutePlan {
                dst: None,
                gateway: Some(gw)
            }
        );
        assert_eq!(
            r[1],
            RoutePlan {
                dst: Some("::/0".parse().unwrap()),
                gateway: None
            },
            "no IPv6 gateway: a device route, never a panic"
        );
        assert_eq!(r[2].dst, Some("192.0.2.0/24".parse().unwrap()));
    }
}
