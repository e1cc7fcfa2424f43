//! The CNI commands. ADD is atomic: IPAM first (so the MAC can follow the address), then the
//! link; if anything fails after IPAM, IPAM is released and no link is left behind.

use std::net::IpAddr;
use std::path::PathBuf;

use serde_json::{json, Value};

use mvnet_core::driver::macvlan::{self, LinkKind, LinkPlan, OnConflict, RoutePlan};
use mvnet_core::engine::{resolve_conflict, Engine, StaticAddressPolicy};
use mvnet_core::model::{Frontend, MacAddr};
use mvnet_core::netlink::{Link, Netlink};
use mvnet_core::netns::Netns;
use mvnet_core::probe::AddressTaken;

use crate::conf::{parse_args, version_at_least, Env, NetConf, SUPPORTED_VERSIONS};
use crate::error::{code, CniError, CniResult};
use crate::ipam::{self, BuiltinConf, IpamOutcome};
use crate::result::{Interface, Outcome};

/// mvnet's state root for the built-in IPAM: ipam.dataDir, else MVNET_ROOT, else the default.
fn state_root(conf: &NetConf) -> CniResult<PathBuf> {
    let b = BuiltinConf::parse(&conf.ipam)?;
    Ok(b.data_dir
        .or_else(|| std::env::var_os("MVNET_ROOT").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(mvnet_core::engine::DEFAULT_ROOT)))
}

/// The container's namespace: a real namespace file (a FIFO or plain file is refused at
/// once, never waited on), and not the plugin's own, which is the host's: links and routes
/// put there would change the host.
fn open_netns(path: &str) -> CniResult<Netns> {
    let ns = Netns::open(path).map_err(|e| {
        CniError::new(
            code::INVALID_ENV,
            format!("failed to open netns {}: {e}", mvnet_core::quote(path)),
        )
    })?;
    if ns.is_current()? {
        return Err(CniError::new(
            code::INVALID_ENV,
            format!(
                "CNI_NETNS {} is the plugin's own network namespace (the host's); give the container's namespace",
                mvnet_core::quote(path)
            ),
        ));
    }
    Ok(ns)
}

/// The parent link: named, or the default-route interface; 802.1Q names are created.
fn resolve_master(nl: &mut Netlink, conf: &NetConf) -> CniResult<Link> {
    let mut name = conf.master_name()?;
    if name.is_empty() && conf.is_ipvlan() {
        // Chained after another plugin: its single interface is the master (reference rule).
        if let Some(prev) = &conf.prev_result {
            let prev = Outcome::parse(prev)?;
            match prev.interfaces.as_slice() {
                [one] if !one.name.is_empty() => name = one.name.clone(),
                _ => {
                    return Err(CniError::new(
                        code::INVALID_CONFIG,
                        "chained master failure: prevResult lacks a single named interface",
                    ))
                }
            }
        }
    }
    if name.is_empty() {
        let routes = nl
            .routes(false)
            .map_err(|e| CniError::new(code::INTERNAL, format!("read routes: {e}")))?;
        let oif = routes
            .iter()
            .find(|r| r.destination.is_none() && r.oif.is_some())
            .and_then(|r| r.oif)
            .ok_or_else(|| {
                CniError::new(
                    code::INVALID_CONFIG,
                    "no \"master\" given and no default route to pick one from; set \"master\"",
                )
            })?;
        name = nl
            .link_by_index(oif)
            .ok()
            .flatten()
            .map(|l| l.name)
            .ok_or_else(|| {
                CniError::new(
                    code::INVALID_CONFIG,
                    "the default-route interface vanished; set \"master\"",
                )
            })?;
    }
    // One lookup on the hot path; the VLAN-creating path (rare) looks again in `ensure`.
    match nl
        .link_by_name(&name)
        .map_err(|e| CniError::new(code::INTERNAL, format!("look up {name}: {e}")))?
    {
        Some(l) if !l.loopback => Ok(l),
        Some(_) => Err(CniError::new(
            code::INVALID_CONFIG,
            format!("master {name} is the loopback interface; use a LAN interface"),
        )),
        None if mvnet_core::model::network::parse_vlan_parent(&name)
            .map_err(CniError::from)?
            .is_some() =>
        {
            let driver = if conf.is_ipvlan() {
                "ipvlan"
            } else {
                "macvlan"
            };
            Ok(mvnet_core::parent::ensure(nl, &name, driver)?.0)
        }
        None => {
            let names: Vec<String> = nl
                .links()
                .unwrap_or_default()
                .into_iter()
                .filter(|l| !l.loopback)
                .map(|l| l.name)
                .collect();
            Err(CniError::new(
                code::INVALID_CONFIG,
                format!(
                    "master interface {name} not found; interfaces here: {}",
                    names.join(", ")
                ),
            ))
        }
    }
}

/// A master that is down (or has no carrier) cannot carry a probe or DAD: skip them rather
/// than wait for nothing (DAD would never finish), and say so.
fn skip_lan_checks_if_parent_down(plan: &mut LinkPlan, master: &Link) {
    if !mvnet_core::driver::macvlan::parent_is_down(master) {
        return;
    }
    plan.wait_dad = false;
    plan.probe = None;
    mvnet_core::warn_user(&mvnet_core::driver::macvlan::parent_down_notice(
        &master.name,
    ));
}

pub fn version(conf: Option<&NetConf>) -> Value {
    json!({
        "cniVersion": conf.map(|c| c.version()).unwrap_or("1.1.0"),
        "supportedVersions": SUPPORTED_VERSIONS,
    })
}

/// `MVNET_TIMING=1`: phase timings on stderr, to see where an ADD spends its time.
struct Phases(Option<(std::time::Instant, Vec<(&'static str, f64)>)>);

impl Phases {
    fn new() -> Phases {
        Phases(std::env::var_os("MVNET_TIMING").map(|_| (std::time::Instant::now(), Vec::new())))
    }
    fn mark(&mut self, what: &'static str) {
        if let Some((t, v)) = &mut self.0 {
            v.push((what, t.elapsed().as_secs_f64() * 1e3));
            *t = std::time::Instant::now();
        }
    }
}

impl Drop for Phases {
    fn drop(&mut self) {
        if let Some((_, v)) = &self.0 {
            let parts: Vec<String> = v.iter().map(|(w, ms)| format!("{w}={ms:.3}ms")).collect();
            eprintln!("mvnet-cni timing: {}", parts.join(" "));
        }
    }
}

pub fn add(env: &Env, conf: &NetConf, raw: &[u8]) -> CniResult<Value> {
    let mut phases = Phases::new();
    let args = parse_args(&env.args)?;
    let kind = conf.link_kind()?;
    let probe = conf.probe_window()?;
    let requested_mac = conf.requested_mac(&args)?;
    if conf.is_ipvlan() && requested_mac.is_some() {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "ipvlan interfaces share the master's MAC; remove \"mac\" (or use macvlan)",
        ));
    }
    let req_ip: Option<IpAddr> = args
        .ip
        .as_deref()
        .map(|s| {
            s.parse().map_err(|_| {
                CniError::new(code::INVALID_ENV, format!("invalid IP in CNI_ARGS: {s}"))
            })
        })
        .transpose()?;
    let ns = open_netns(&env.netns)?;
    let mut nl = if conf.link_in_container {
        Netlink::in_netns(&ns)?
    } else {
        Netlink::new()?
    };
    let master = resolve_master(&mut nl, conf)?;
    phases.mark("netns+master");
    if conf.mtu > master.mtu {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            format!(
                "invalid MTU {}, must be [0, master MTU({})]",
                conf.mtu, master.mtu
            ),
        ));
    }

    // IPAM first, so the default MAC can follow the IPv4 address.
    let mut engine = None;
    // A network record this ADD created goes again if the ADD fails (it would otherwise
    // block other networks on the master, e.g. an ipvlan record on a kernel without ipvlan).
    let mut created_network: Option<String> = None;
    let mut ipam_out = match conf.ipam_type() {
        "" => IpamOutcome {
            result: Outcome::default(),
            endpoint: None,
        },
        "mvnet" => {
            let b = BuiltinConf::parse(&conf.ipam)?;
            let pools = b.pools()?;
            let e = engine.insert(Engine::open(&state_root(conf)?)?);
            phases.mark("store-open");
            let (net, created) = ipam::builtin_network(e, conf, &master.name, pools)?;
            created_network = created.then(|| net.id.clone());
            phases.mark("network");
            let mac = if conf.is_ipvlan() {
                master.mac
            } else {
                requested_mac
            };
            let ep = match ipam::builtin_reserve(e, &net, env, req_ip, mac) {
                Ok(ep) => ep,
                Err(err) => {
                    if let Some(id) = &created_network {
                        let _ = e.remove_network(id);
                    }
                    return Err(err);
                }
            };
            e.delete_reclaimed_links();
            let result = Outcome {
                ips: ipam::endpoint_ips(&net, &ep),
                routes: b.routes(),
                ..Default::default()
            };
            IpamOutcome {
                result,
                endpoint: Some((net, ep)),
            }
        }
        other => {
            let v = ipam::exec(env, other, "ADD", raw)?.ok_or_else(|| {
                CniError::new(
                    code::DECODE,
                    format!("IPAM plugin {other} printed no result"),
                )
            })?;
            IpamOutcome {
                result: Outcome::parse(&v)?,
                endpoint: None,
            }
        }
    };
    phases.mark("ipam");
    let release = |engine: &mut Option<Engine>, out: &IpamOutcome| {
        if let (Some(e), Some((_, ep))) = (engine.as_mut(), &out.endpoint) {
            let _ = e.store().remove_endpoint(&ep.id);
            if let Some(id) = &created_network {
                let _ = e.remove_network(id);
            }
        } else if !conf.ipam_type().is_empty() && conf.ipam_type() != "mvnet" {
            let _ = ipam::exec(env, conf.ipam_type(), "DEL", raw);
        }
    };

    let mac = match &ipam_out.endpoint {
        Some((_, ep)) => ep.mac,
        None if conf.is_ipvlan() => master.mac.unwrap_or_else(MacAddr::random_local),
        None => requested_mac.unwrap_or_else(|| {
            match ipam_out
                .result
                .ips
                .iter()
                .find_map(|i| match i.address.addr() {
                    IpAddr::V4(v4) => Some(v4),
                    _ => None,
                }) {
                Some(v4) => MacAddr::from_ipv4(v4),
                None => MacAddr::random_local(),
            }
        }),
    };
    let r = &ipam_out.result;
    let routes = r
        .routes
        .iter()
        .map(|rt| {
            // A route without "gw" goes through the gateway of its family, as ConfigureIface
            // does; with none of that family either, it is a device route.
            let gateway = rt.gw.or_else(|| {
                r.ips
                    .iter()
                    .find(|i| i.address.addr().is_ipv6() == rt.dst.addr().is_ipv6())
                    .and_then(|i| i.gateway)
            });
            RoutePlan {
                dst: (rt.dst.prefix_len() != 0 || gateway.is_none()).then_some(rt.dst),
                gateway,
            }
        })
        .collect();
    let mut plan = LinkPlan {
        ifname: env.ifname.clone(),
        parent_index: master.index,
        parent_name: master.name.clone(),
        kind,
        mac,
        mtu: (conf.mtu > 0).then_some(conf.mtu),
        addresses: r
            .ips
            .iter()
            .map(|i| (i.address.addr(), i.address.prefix_len()))
            .collect(),
        routes,
        wait_dad: true,
        bc_queue_len: conf.bcqueuelen,
        announcements: 3,
        probe,
        // The reference plugin leaves IPv6 as the kernel has it.
        disable_ipv6: false,
    };
    skip_lan_checks_if_parent_down(&mut plan, &master);
    // An address found in use on the LAN: the built-in IPAM moves on to the next one (and
    // remembers the taken one); an address from another IPAM plugin fails the ADD.
    let mut refused = None;
    let attached = match (engine.as_mut(), ipam_out.endpoint.as_mut()) {
        (Some(e), Some((net, ep))) => {
            let mut on_conflict = |t: &AddressTaken| {
                let policy = StaticAddressPolicy {
                    requested: req_ip.filter(|ip| ip.is_ipv4() == t.ip.is_ipv4()),
                    force: false,
                    fix: "pick another IP in CNI_ARGS, or leave it out to get a free one",
                };
                resolve_conflict(e.store(), net, ep, &policy, t, &mut refused)
            };
            macvlan::attach(&mut nl, &ns, &mut plan, false, &mut on_conflict)
        }
        _ => {
            let ipam_type = conf.ipam_type();
            let mut on_conflict = |t: &AddressTaken| -> mvnet_core::Result<OnConflict> {
                Err(mvnet_core::conflict!(
                    "address {} from IPAM plugin {ipam_type} is already used on the LAN by {}; keep it out of the IPAM range, or use \"ipam\": {{\"type\": \"mvnet\"}}, which skips taken addresses",
                    t.ip,
                    t.who()
                ))
            };
            macvlan::attach(&mut nl, &ns, &mut plan, false, &mut on_conflict)
        }
    };
    if let Err(e) = attached {
        release(&mut engine, &ipam_out);
        if let (Some(t), Some(eng), Some((net, _))) = (refused, engine.as_mut(), &ipam_out.endpoint)
        {
            let _ = eng.store().record_lan_conflict(net, t.ip, t.holder);
        }
        return Err(e.into());
    }
    if let Some((net, ep)) = &ipam_out.endpoint {
        ipam_out.result.ips = ipam::endpoint_ips(net, ep);
    }
    let mac = plan.mac;
    phases.mark("link");
    if let (Some(e), Some((_, ep))) = (engine.as_mut(), &ipam_out.endpoint) {
        if let Err(err) = e.store().activate_endpoint(&ep.id) {
            let _ = macvlan::delete_endpoint_link(&env.netns, &env.ifname, Some(mac));
            release(&mut engine, &ipam_out);
            return Err(err.into());
        }
    }
    phases.mark("activate");
    let mut result = ipam_out.result;
    result.interfaces = vec![Interface {
        name: env.ifname.clone(),
        mac: mac.to_string(),
        sandbox: env.netns.clone(),
    }];
    for ip in &mut result.ips {
        ip.interface = Some(0);
    }
    result.to_json(conf.version())
}

/// DEL is idempotent: a missing netns, link or IPAM record is success.
/// Only a macvlan/ipvlan is deleted (with the recorded MAC, for the built-in IPAM): the
/// interface name alone could belong to anything, such as another runtime's veth.
pub fn del(env: &Env, conf: &NetConf, raw: &[u8]) -> CniResult<()> {
    let mut mac = None;
    match conf.ipam_type() {
        "" => {}
        "mvnet" => {
            let mut engine = Engine::open(&state_root(conf)?)?;
            if let Some((_, ep)) = ipam::builtin_find(&mut engine, conf, env)? {
                mac = Some(ep.mac);
                if !env.netns.is_empty() {
                    open_netns_for_del(&env.netns)?;
                    macvlan::delete_endpoint_link(&env.netns, &env.ifname, mac)?;
                }
                engine.store().remove_endpoint(&ep.id)?;
                return Ok(());
            }
        }
        other => {
            ipam::exec(env, other, "DEL", raw)?;
        }
    }
    if !env.netns.is_empty() && open_netns_for_del(&env.netns)? {
        macvlan::delete_endpoint_link(&env.netns, &env.ifname, mac)?;
    }
    Ok(())
}

/// DEL's namespace check: a missing one is fine (DEL is idempotent), the host's own or a
/// file that is no namespace is refused.
fn open_netns_for_del(path: &str) -> CniResult<bool> {
    if !std::path::Path::new(path).exists() {
        return Ok(false);
    }
    open_netns(path).map(|_| true)
}

pub fn check(env: &Env, conf: &NetConf, raw: &[u8]) -> CniResult<()> {
    if !version_at_least(conf.version(), "0.4.0") {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            "config version does not allow CHECK",
        ));
    }
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::new(code::INVALID_CONFIG, "required prevResult missing"))?;
    let prev = Outcome::parse(prev)?;
    match conf.ipam_type() {
        "" => {}
        "mvnet" => {
            let mut engine = Engine::open(&state_root(conf)?)?;
            let (net, ep) = ipam::builtin_find(&mut engine, conf, env)?.ok_or_else(|| {
                CniError::new(
                    code::UNKNOWN_CONTAINER,
                    format!(
                        "mvnet IPAM has no record of {} {}",
                        env.container_id, env.ifname
                    ),
                )
            })?;
            let have = ipam::endpoint_ips(&net, &ep);
            for ip in prev.ips.iter() {
                if !have.iter().any(|h| h.address == ip.address) {
                    return Err(CniError::new(
                        code::INVALID_CONFIG,
                        format!("mvnet IPAM does not hold {}", ip.address),
                    ));
                }
            }
        }
        other => {
            ipam::exec(env, other, "CHECK", raw)?;
        }
    }
    let ns = open_netns(&env.netns)?;
    let mut nl = Netlink::in_netns(&ns)?;
    let fail = |m: String| Err(CniError::new(code::INVALID_CONFIG, m));
    let Some(link) = nl
        .link_by_name(&env.ifname)
        .map_err(|e| CniError::new(code::INTERNAL, e.to_string()))?
    else {
        return fail(format!(
            "interface {} not found in {}",
            env.ifname, env.netns
        ));
    };
    match conf.link_kind()? {
        LinkKind::Macvlan(mode) => {
            if link.kind != "macvlan" {
                return fail(format!(
                    "interface {} is a {:?}, not a macvlan",
                    env.ifname, link.kind
                ));
            }
            if link.macvlan_mode != Some(mode) {
                return fail(format!(
                    "interface {} has macvlan mode {:?}, config says {mode}",
                    env.ifname, link.macvlan_mode
                ));
            }
        }
        LinkKind::Ipvlan(mode, _) => {
            if link.kind != "ipvlan" {
                return fail(format!(
                    "interface {} is a {:?}, not an ipvlan",
                    env.ifname, link.kind
                ));
            }
            if link.ipvlan_mode != Some(mode) {
                return fail(format!(
                    "interface {} has ipvlan mode {:?}, config says {mode}",
                    env.ifname, link.ipvlan_mode
                ));
            }
        }
    }
    let idx = prev
        .interfaces
        .iter()
        .position(|i| i.name == env.ifname && (i.sandbox.is_empty() || i.sandbox == env.netns));
    if let Some(i) = idx {
        let want = &prev.interfaces[i].mac;
        if !want.is_empty() && link.mac.map(|m| m.to_string()) != Some(want.to_ascii_lowercase()) {
            return fail(format!(
                "interface {} has MAC {:?}, prevResult says {want}",
                env.ifname, link.mac
            ));
        }
    } else {
        return fail(format!(
            "prevResult has no interface {} in {}",
            env.ifname, env.netns
        ));
    }
    let addrs = nl
        .addresses(Some(link.index))
        .map_err(|e| CniError::new(code::INTERNAL, e.to_string()))?;
    for ip in prev
        .ips
        .iter()
        .filter(|ip| ip.interface.is_none() || ip.interface == idx)
    {
        if !addrs
            .iter()
            .any(|(_, a, p)| *a == ip.address.addr() && *p == ip.address.prefix_len())
        {
            return fail(format!(
                "address {} is missing on {}",
                ip.address, env.ifname
            ));
        }
    }
    let mut routes = nl
        .routes(false)
        .map_err(|e| CniError::new(code::INTERNAL, e.to_string()))?;
    routes.extend(
        nl.routes(true)
            .map_err(|e| CniError::new(code::INTERNAL, e.to_string()))?,
    );
    for r in &prev.routes {
        let dst = (r.dst.prefix_len() != 0).then_some(r.dst);
        let found = routes
            .iter()
            .any(|have| have.destination == dst && (r.gw.is_none() || have.gateway == r.gw));
        if !found {
            return fail(format!("route to {} is missing in {}", r.dst, env.netns));
        }
    }
    Ok(())
}

/// STATUS: can this plugin serve ADDs now?
pub fn status(env: &Env, conf: &NetConf, raw: &[u8]) -> CniResult<()> {
    if let Err(e) = mvnet_core::kernel::require_privileges() {
        return Err(CniError::new(code::NOT_AVAILABLE, e.to_string()));
    }
    if !conf.link_in_container {
        let name = conf.master_name()?;
        if !name.is_empty() {
            let mut nl = Netlink::new()?;
            let exists = |nl: &mut Netlink, n: &str| nl.link_by_name(n).ok().flatten().is_some();
            let base_ok = mvnet_core::model::network::parse_vlan_parent(&name)
                .ok()
                .flatten()
                .is_some_and(|(base, _)| exists(&mut nl, &base));
            if !exists(&mut nl, &name) && !base_ok {
                return Err(CniError::new(
                    code::NOT_AVAILABLE,
                    format!("master interface {name} does not exist"),
                ));
            }
        }
    }
    match conf.ipam_type() {
        "" => Ok(()),
        "mvnet" => Engine::open(&state_root(conf)?).map(|_| ()).map_err(|e| {
            CniError::new(
                code::NOT_AVAILABLE,
                format!("mvnet's store is not usable: {e}"),
            )
        }),
        other => ipam::exec(env, other, "STATUS", raw).map(|_| ()),
    }
}

/// GC: release what no valid attachment uses any more.
pub fn gc(env: &Env, conf: &NetConf, raw: &[u8]) -> CniResult<()> {
    match conf.ipam_type() {
        "" => Ok(()),
        "mvnet" => {
            let valid: Vec<(String, String)> = conf
                .valid_attachments
                .iter()
                .flatten()
                .map(|a| (a.container_id.clone(), a.ifname.clone()))
                .collect();
            let mut engine = Engine::open(&state_root(conf)?)?;
            let Some(net) = ipam::cni_network(&mut engine, &conf.name)? else {
                return Ok(());
            };
            // Only what this plugin made: the CLI's (and Docker's) endpoints on a network of
            // the same name are not the runtime's to collect.
            for ep in engine.store().endpoints_of_network(&net.id)? {
                if ep.frontend != Frontend::Cni {
                    continue;
                }
                let keep = valid
                    .iter()
                    .any(|(c, i)| *c == ep.container_id && (i.is_empty() || *i == ep.ifname));
                if !keep {
                    let _ = macvlan::delete_endpoint_link(&ep.netns, &ep.ifname, Some(ep.mac));
                    engine.store().remove_endpoint(&ep.id)?;
                }
            }
            Ok(())
        }
        other => ipam::exec(env, other, "GC", raw).map(|_| ()),
    }
}
