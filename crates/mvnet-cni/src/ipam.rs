//! IPAM for the plugin: none (L2 only), mvnet's built-in IPAM (no second exec; kept in
//! mvnet's store, so `mvnet network ls/inspect` shows CNI attachments), or any other IPAM
//! plugin, delegated through CNI_PATH exactly as the spec says.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;

use mvnet_core::engine::Engine;
use mvnet_core::ipam::Pool;
use mvnet_core::model::{Endpoint, Network, NetworkOptions, PoolSpec};
use mvnet_core::store::EndpointRequest;

use crate::conf::{Env, NetConf};
use crate::error::{code, CniError, CniResult};
use crate::result::{IpConfig, Outcome, Route};

// ----- delegation ---------------------------------------------------------------------

fn find_plugin(env: &Env, name: &str) -> CniResult<PathBuf> {
    if name.contains('/') {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            format!("invalid IPAM type {name:?}"),
        ));
    }
    env.path
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::new(
                code::INVALID_CONFIG,
                format!("IPAM plugin {name:?} not found in CNI_PATH ({})", env.path),
            )
        })
}

/// Runs the IPAM plugin with `command` and the same config on stdin. Returns its parsed
/// stdout (when any); its spec error, if it fails, is passed on with the plugin's name.
pub fn exec(env: &Env, name: &str, command: &str, stdin: &[u8]) -> CniResult<Option<Value>> {
    let path = find_plugin(env, name)?;
    let mut child = Command::new(&path)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            CniError::new(
                code::IO,
                format!("cannot run IPAM plugin {}: {e}", path.display()),
            )
        })?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(stdin)
        .map_err(|e| CniError::new(code::IO, format!("cannot write to IPAM plugin {name}: {e}")))?;
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::new(code::IO, format!("IPAM plugin {name} failed: {e}")))?;
    let parsed: Option<Value> = serde_json::from_slice(&out.stdout).ok();
    if !out.status.success() {
        let (c, msg) = parsed
            .as_ref()
            .map(|v| {
                (
                    v.get("code")
                        .and_then(Value::as_u64)
                        .unwrap_or(code::INTERNAL as u64) as u32,
                    v.get("msg")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                )
            })
            .unwrap_or((
                code::INTERNAL,
                String::from_utf8_lossy(&out.stdout).trim().to_string(),
            ));
        return Err(CniError::new(c, format!("IPAM plugin {name}: {msg}")));
    }
    Ok(parsed)
}

// ----- built-in IPAM ---------------------------------------------------------------------

/// One host-local range: `subnet` with optional bounds and gateway. The top-level form
/// (`"subnet": ...` beside `"type"`) and each entry of `ranges` share this shape.
#[derive(Debug, Deserialize, Default)]
struct RangeConf {
    #[serde(default)]
    subnet: Option<String>,
    #[serde(rename = "rangeStart", default)]
    range_start: Option<IpAddr>,
    #[serde(rename = "rangeEnd", default)]
    range_end: Option<IpAddr>,
    #[serde(default)]
    gateway: Option<IpAddr>,
}

#[derive(Debug, Deserialize)]
struct RouteConf {
    dst: IpNet,
    #[serde(default)]
    gw: Option<IpAddr>,
}

/// `"ipam": {"type": "mvnet", ...}`: host-local's fields (subnet/rangeStart/rangeEnd/gateway
/// or ranges, routes), plus `dataDir` for mvnet's state root.
#[derive(Debug, Deserialize)]
pub struct BuiltinConf {
    #[serde(flatten)]
    single: RangeConf,
    #[serde(default)]
    ranges: Vec<Vec<RangeConf>>,
    #[serde(default)]
    routes: Vec<RouteConf>,
    #[serde(rename = "dataDir", default)]
    pub data_dir: Option<PathBuf>,
}

impl BuiltinConf {
    pub fn parse(ipam: &Value) -> CniResult<BuiltinConf> {
        serde_json::from_value(ipam.clone()).map_err(|e| {
            CniError::new(
                code::INVALID_CONFIG,
                format!("invalid mvnet IPAM config: {e}"),
            )
        })
    }

    /// The pools, host-local style: the gateway defaults to the subnet's first address.
    pub fn pools(&self) -> CniResult<Vec<PoolSpec>> {
        let mut sets: Vec<&RangeConf> = Vec::new();
        if self.single.subnet.is_some() {
            sets.push(&self.single);
        }
        for set in &self.ranges {
            if set.len() != 1 {
                return Err(CniError::new(
                    code::UNSUPPORTED_FIELD,
                    "mvnet IPAM takes one range per range set; put each subnet in its own set",
                ));
            }
            sets.push(&set[0]);
        }
        if sets.is_empty() {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "mvnet IPAM needs \"subnet\" or \"ranges\"",
            ));
        }
        let mut out = Vec::new();
        for r in sets {
            let subnet: IpNet = r
                .subnet
                .as_deref()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    CniError::new(
                        code::INVALID_CONFIG,
                        format!(
                            "invalid or missing subnet {:?} in the mvnet IPAM config",
                            r.subnet
                        ),
                    )
                })?;
            let subnet = subnet.trunc();
            let gateway = r.gateway.or_else(|| subnet.hosts().next());
            let pool = Pool::new(subnet, gateway, None, vec![])
                .and_then(|p| p.with_bounds(r.range_start, r.range_end))
                .map_err(CniError::from)?;
            out.push(PoolSpec {
                subnet: pool.subnet,
                gateway: pool.gateway,
                ip_range: None,
                aux: BTreeMap::new(),
                range_start: pool.start,
                range_end: pool.end,
            });
        }
        Ok(out)
    }

    /// Routes for the result: as configured (host-local passes them through).
    pub fn routes(&self) -> Vec<Route> {
        self.routes
            .iter()
            .map(|r| Route {
                dst: r.dst,
                gw: r.gw,
            })
            .collect()
    }
}

/// The network of exactly this name (never an id or an id prefix: a CNI name like "2"
/// must not select some other network whose id starts with 2).
pub fn cni_network(engine: &mut Engine, name: &str) -> CniResult<Option<Network>> {
    match engine.network(name) {
        Ok(net) if net.name == name => Ok(Some(net)),
        Ok(_) | Err(mvnet_core::Error::NotFound(_)) => Ok(None),
        // An ambiguous prefix is no exact name either.
        Err(mvnet_core::Error::Invalid(m)) if m.contains("ambiguous") => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The store network behind a CNI network name: created on first ADD (then the flag is
/// true, so a failed ADD can take it away again), checked after that.
pub fn builtin_network(
    engine: &mut Engine,
    conf: &NetConf,
    master: &str,
    pools: Vec<PoolSpec>,
) -> CniResult<(Network, bool)> {
    let subnets = |ps: &[PoolSpec]| {
        let mut v: Vec<String> = ps.iter().map(|p| p.subnet.to_string()).collect();
        v.sort();
        v
    };
    let wanted = subnets(&pools);
    let check_same = |net: &Network| -> CniResult<()> {
        if net.options.parent != master || subnets(&net.pools) != wanted {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!(
                    "mvnet network {} already exists with subnets {:?} on parent {}, but this config says {:?} on {}; rename the CNI network or remove the mvnet one",
                    net.name, subnets(&net.pools), net.options.parent, wanted, master
                ),
            ));
        }
        Ok(())
    };
    if let Some(net) = cni_network(engine, &conf.name)? {
        check_same(&net)?;
        return Ok((net, false));
    }
    for p in &pools {
        if let Err(e) = mvnet_core::model::network::special_subnet(&p.subnet) {
            return Err(CniError::new(code::INVALID_CONFIG, e.to_string()));
        }
    }
    let ipv6 = pools.iter().any(|p| p.subnet.addr().is_ipv6());
    let net = Network {
        id: mvnet_core::ids::new_id(),
        name: conf.name.clone(),
        driver: if conf.is_ipvlan() {
            mvnet_core::model::Driver::Ipvlan
        } else {
            mvnet_core::model::Driver::Macvlan
        },
        created: mvnet_core::model::time::now_rfc3339(),
        pools,
        internal: false,
        ipv6,
        ipv4_disabled: false,
        labels: [("mvnet.cni".to_string(), "true".to_string())].into(),
        options: NetworkOptions {
            parent: master.to_string(),
            macvlan_mode: if conf.is_ipvlan() {
                Default::default()
            } else {
                conf.macvlan_mode()?
            },
            ipvlan_mode: match conf.link_kind()? {
                mvnet_core::driver::macvlan::LinkKind::Ipvlan(m, _) => m,
                _ => Default::default(),
            },
            ipvlan_flag: Default::default(),
            mtu: (conf.mtu > 0).then_some(conf.mtu),
            vlan: None,
            host_access: false,
            host_access_ip: None,
            // Probing is per ADD (the config's "probe"), not a property of the record.
            probe_ms: None,
            lan: None,
        },
    };
    let check = |existing: &[Network]| mvnet_core::engine::check_against_existing(&net, existing);
    match engine.store().create_network(&net, &check, false) {
        Ok(()) => Ok((net, true)),
        Err(mvnet_core::Error::Conflict(m)) => match cni_network(engine, &conf.name)? {
            // Another ADD created it a moment ago.
            Some(net) => {
                check_same(&net)?;
                Ok((net, false))
            }
            None => Err(mvnet_core::Error::Conflict(m).into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// Reserves addresses for the attachment; the caller activates or removes the endpoint.
pub fn builtin_reserve(
    engine: &mut Engine,
    net: &Network,
    env: &Env,
    req_ip: Option<IpAddr>,
    mac: Option<mvnet_core::model::MacAddr>,
) -> CniResult<Endpoint> {
    let req = EndpointRequest {
        container_id: env.container_id.clone(),
        container_name: env.container_id.chars().take(12).collect(),
        netns: env.netns.clone(),
        ifname: Some(env.ifname.clone()),
        static_ipv4: req_ip.filter(IpAddr::is_ipv4),
        static_ipv6: req_ip.filter(IpAddr::is_ipv6),
        mac,
        owner_pid: std::process::id(),
        frontend: mvnet_core::model::Frontend::Cni,
        host_addresses: engine.host_addresses_in(net)?,
    };
    Ok(engine.store().reserve_endpoint(net, &req)?)
}

/// The endpoint of this container/interface on the CNI network, if any.
pub fn builtin_find(
    engine: &mut Engine,
    conf: &NetConf,
    env: &Env,
) -> CniResult<Option<(Network, Endpoint)>> {
    let Some(net) = cni_network(engine, &conf.name)? else {
        return Ok(None);
    };
    let ep = engine
        .store()
        .endpoints_of_container(&env.container_id)?
        .into_iter()
        .find(|e| {
            e.network_id == net.id
                && e.ifname == env.ifname
                && e.frontend == mvnet_core::model::Frontend::Cni
        });
    Ok(ep.map(|e| (net, e)))
}

/// The result's IP configs for an mvnet endpoint.
pub fn endpoint_ips(net: &Network, ep: &Endpoint) -> Vec<IpConfig> {
    ep.ipv4
        .iter()
        .chain(ep.ipv6.iter())
        .map(|(ip, p)| IpConfig {
            address: IpNet::new(*ip, *p).expect("valid prefix"),
            gateway: mvnet_core::driver::macvlan::gateway_for(net, *ip),
            interface: Some(0),
        })
        .collect()
}

/// What IPAM produced for an ADD.
pub struct IpamOutcome {
    pub result: Outcome,
    /// Set for the built-in IPAM: the reserved endpoint to activate or roll back.
    pub endpoint: Option<(Network, Endpoint)>,
}
