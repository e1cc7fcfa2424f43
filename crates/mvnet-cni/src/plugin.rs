//! The CNI commands. ADD is atomic: IPAM first (so the MAC can follow the address), then the
//! link; if anything fails after IPAM, IPAM is released and no link is left behind.

use std::net::IpAddr;
use std::path::PathBuf;

use serde_json::{json, Value};

use ipnet::IpNet;

use mvnet_core::driver::LinkKind;
use mvnet_core::engine::{
    Addressing, AttachOptions, AttachRequest, AttachTarget, Engine, LinkSettings, NetworkSpec,
};
use mvnet_core::model::Frontend;
use mvnet_core::netlink::Netlink;
use mvnet_core::netns::Netns;

use crate::conf::{parse_args, version_at_least, Env, NetConf, SUPPORTED_VERSIONS};
use crate::error::{code, CniError, CniResult};
use crate::ipam::{self, BuiltinConf};
use crate::result::{Interface, IpConfig, Outcome};

/// mvnet's state root for the built-in IPAM: ipam.dataDir, else MVNET_ROOT, else the default.
pub(crate) fn state_root(conf: &NetConf) -> CniResult<PathBuf> {
    let data_dir = match conf.ipam_type() {
        "mvnet" => BuiltinConf::parse(&conf.ipam)?.data_dir,
        _ => None,
    };
    Ok(data_dir
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

/// The master's name: the config's (802.1Q names are created by the engine), a chained
/// ipvlan's previous interface, or the engine's default-route interface.
fn master_name(engine: &mut Engine, conf: &NetConf) -> CniResult<String> {
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
        name = engine.default_parent().map_err(|e| {
            CniError::new(
                code::INVALID_CONFIG,
                e.to_string().replace("-o parent=IF", "set \"master\""),
            )
        })?;
    }
    Ok(name)
}

/// The engine speaks of `-o parent`; a CNI config calls it "master".
fn in_cni_words(e: mvnet_core::Error) -> CniError {
    match &e {
        mvnet_core::Error::ParentMissing { name, present } => CniError::new(
            code::INVALID_CONFIG,
            format!(
                "master interface {name} not found; interfaces here: {}",
                mvnet_core::error::list_or_none(present)
            ),
        ),
        _ => e.into(),
    }
}

pub fn version(conf: Option<&NetConf>) -> Value {
    json!({
        "cniVersion": conf.map(|c| c.version()).unwrap_or("1.1.0"),
        "supportedVersions": SUPPORTED_VERSIONS,
    })
}

/// `MVNET_TIMING=1`: phase timings on stderr, to see where an ADD spends its time (the
/// engine's own phases come in between, through `mvnet_core::timing`).
struct Phases;

impl Phases {
    fn new() -> Phases {
        mvnet_core::timing::begin();
        Phases
    }
    fn mark(&mut self, what: &'static str) {
        mvnet_core::timing::mark(what);
    }
}

impl Drop for Phases {
    fn drop(&mut self) {
        let v = mvnet_core::timing::take();
        if !v.is_empty() {
            let parts: Vec<String> = v.iter().map(|(w, ms)| format!("{w}={ms:.3}ms")).collect();
            mvnet_core::to_stderr(&format!("mvnet-cni timing: {}", parts.join(" ")));
        }
    }
}

/// ADD: translates the config into one engine request (network, addresses, link
/// settings) and the engine's outcome into the result. Atomic: with the built-in IPAM the
/// engine rolls everything back; a delegated IPAM is released here when the attach fails.
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
                CniError::new(
                    code::INVALID_ENV,
                    format!("invalid IP in CNI_ARGS: {}", mvnet_core::quote(s)),
                )
            })
        })
        .transpose()?;
    // Checked here too, for the spec's error code (4) on a bad namespace.
    open_netns(&env.netns)?;
    let builtin = match conf.ipam_type() {
        "mvnet" => Some(BuiltinConf::parse(&conf.ipam)?),
        _ => None,
    };
    let mut engine = mvnet_core::resident::engine(&state_root(conf)?)?;
    phases.mark("store-open");
    let master = if conf.link_in_container {
        conf.master_name()?
    } else {
        master_name(&mut engine, conf)?
    };
    phases.mark("master");

    let mut request = AttachRequest {
        network: NetworkSpec::Unrecorded(ipam::network_record(conf, &master, Vec::new())?),
        target: AttachTarget {
            container_id: env.container_id.clone(),
            container_name: env.container_id.chars().take(12).collect(),
            netns: env.netns.clone(),
            owned: false,
        },
        options: AttachOptions {
            ipv4: req_ip.filter(IpAddr::is_ipv4),
            ipv6: req_ip.filter(IpAddr::is_ipv6),
            mac: requested_mac,
            ifname: Some(env.ifname.clone()),
            force: false,
            frontend: Frontend::Cni,
        },
        addressing: Addressing::Managed,
        link: LinkSettings {
            parent_in_target: conf.link_in_container,
            parent: Some(master.clone()),
            kind: Some(kind),
            mtu: (conf.mtu > 0).then_some(conf.mtu),
            bc_queue_len: conf.bcqueuelen,
            wait_dad: Some(true),
            probe: Some(probe),
            // The reference plugin leaves IPv6 as the kernel has it.
            disable_ipv6: Some(false),
            routes: Some(Vec::new()),
            static_fix: Some(
                "pick another IP in CNI_ARGS, or leave it out to get a free one".into(),
            ),
            handover: false,
        },
    };
    // What the result says besides what the engine made.
    let mut result = Outcome::default();
    let delegated = match (conf.ipam_type(), &builtin) {
        ("", _) => {
            request.addressing = Addressing::Given {
                addresses: Vec::new(),
                gateways: Vec::new(),
                source: "no IPAM".into(),
            };
            None
        }
        (_, Some(b)) => {
            let mut record = ipam::network_record(conf, &master, b.pools()?)?;
            record.dhcp = b.dhcp;
            record.fleet = b.fleet()?;
            if b.dhcp {
                // The client id comes from the container's name where the runtime gives
                // one (Kubernetes and Podman do), so a re-created pod keeps its address.
                if let Some(name) = &args.pod_name {
                    request.target.container_name = name.clone();
                }
            }
            request.network = NetworkSpec::Ensure(record);
            let routes = b.routes();
            request.link.routes = Some(routes.iter().map(|r| (r.dst, r.gw)).collect());
            result.routes = routes;
            None
        }
        (other, None) => {
            let v = ipam::exec(env, other, "ADD", raw)?.ok_or_else(|| {
                CniError::new(
                    code::DECODE,
                    format!("IPAM plugin {other} printed no result"),
                )
            })?;
            let given = Outcome::parse(&v)?;
            request.addressing = Addressing::Given {
                addresses: given
                    .ips
                    .iter()
                    .map(|i| (i.address.addr(), i.address.prefix_len()))
                    .collect(),
                gateways: given.ips.iter().filter_map(|i| i.gateway).collect(),
                source: format!("IPAM plugin {other}"),
            };
            request.link.routes = Some(given.routes.iter().map(|r| (r.dst, r.gw)).collect());
            result = given;
            Some(other)
        }
    };
    phases.mark("ipam");
    let attached = match engine.attach(&request) {
        Ok(a) => a,
        Err(e) => {
            if let Some(other) = delegated {
                let _ = ipam::exec(env, other, "DEL", raw);
            }
            return Err(in_cni_words(e));
        }
    };
    phases.mark("attach");
    if let Some(lease) = attached.endpoint.as_ref().and_then(|e| e.lease.as_ref()) {
        // The lease's gateway and name servers, as the CNI dhcp plugin reports them.
        if let Some(gw) = lease.gateway {
            result.routes.push(crate::result::Route {
                dst: "0.0.0.0/0".parse().expect("a valid net"),
                gw: Some(IpAddr::V4(gw)),
            });
        }
        if !lease.dns.is_empty() {
            result.dns = serde_json::json!({
                "nameservers": lease.dns.iter().map(|d| d.to_string()).collect::<Vec<_>>()
            });
        }
    }
    result.ips = attached
        .addresses
        .iter()
        .map(|(ip, prefix, gateway)| IpConfig {
            address: IpNet::new(*ip, *prefix).expect("a valid prefix"),
            gateway: *gateway,
            interface: Some(0),
        })
        .collect();
    result.interfaces = vec![Interface {
        name: attached.ifname,
        mac: attached.mac.to_string(),
        sandbox: env.netns.clone(),
    }];
    result.to_json(conf.version())
}

/// DEL is idempotent: a missing netns, link or IPAM record is success.
/// Only a macvlan/ipvlan is deleted (with the recorded MAC, for the built-in IPAM): the
/// interface name alone could belong to anything, such as another runtime's veth.
pub fn del(env: &Env, conf: &NetConf, raw: &[u8]) -> CniResult<()> {
    let mut engine = mvnet_core::resident::engine(&state_root(conf)?)?;
    if conf.ipam_type() == "mvnet" {
        if let Some((_, ep)) = ipam::builtin_find(&mut engine, conf, env)? {
            if !env.netns.is_empty() {
                open_netns_for_del(&env.netns)?;
            }
            engine.disconnect(&ep)?;
            return Ok(());
        }
    } else if !conf.ipam_type().is_empty() {
        ipam::exec(env, conf.ipam_type(), "DEL", raw)?;
    }
    if !env.netns.is_empty() && open_netns_for_del(&env.netns)? {
        engine.delete_endpoint_link(&env.netns, &env.ifname, None)?;
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
            let mut engine = mvnet_core::resident::engine(&state_root(conf)?)?;
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
        "mvnet" => mvnet_core::resident::engine(&state_root(conf)?)
            .map(|_| ())
            .map_err(|e| {
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
            let root = state_root(conf)?;
            // A plugin the runtime killed mid-ADD may still be served by an agent: wait until
            // such requests have committed or rolled back, so none outlives this GC.
            let _quiet = mvnet_core::resident::quiet_agents(&root)?;
            let mut engine = mvnet_core::resident::engine(&root)?;
            let Some(net) = engine.network_by_exact_name(&conf.name)? else {
                return Ok(());
            };
            // Only what this plugin made: the CLI's (and Docker's) endpoints on a network of
            // the same name are not the runtime's to collect.
            for ep in engine.endpoints_of_network(&net.id)? {
                if !ep.frontend.is_cni(&net) {
                    continue;
                }
                let keep = valid
                    .iter()
                    .any(|(c, i)| *c == ep.container_id && (i.is_empty() || *i == ep.ifname));
                if !keep {
                    if let Err(e) = engine.disconnect(&ep) {
                        // The link could not be deleted (its namespace is broken): give the
                        // address back all the same, as GC must.
                        mvnet_core::warn_user(&format!("GC: {e}"));
                        engine.release_endpoint(&ep)?;
                    }
                }
            }
            Ok(())
        }
        other => ipam::exec(env, other, "GC", raw).map(|_| ()),
    }
}
