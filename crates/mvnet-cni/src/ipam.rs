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

use crate::conf::{Env, NetConf};
use crate::error::{code, CniError, CniResult};
use crate::result::{IpConfig, Route};

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
    /// mvnet addition: lease the address from the LAN's DHCP server (no subnet needed).
    #[serde(default)]
    pub dhcp: bool,
    /// mvnet addition: share the subnet with the other hosts on the LAN that use the same
    /// pool name, through etcd (`"etcd": "http://10.0.0.5:2379,..."`, else `MVNET_ETCD`),
    /// as `mvnet network create --ipam-opt pool=NAME` does.
    #[serde(default)]
    pub pool: Option<String>,
    #[serde(default)]
    pub etcd: Option<String>,
    /// Seconds a silent host keeps its addresses (`--ipam-opt grace=`).
    #[serde(default)]
    pub grace: Option<u32>,
    /// Addresses this host claims ahead (`--ipam-opt spares=`).
    #[serde(default)]
    pub spares: Option<u32>,
}

impl BuiltinConf {
    /// The shared pool the config names, if any (the same rules as `--ipam-opt`).
    pub fn fleet(&self) -> CniResult<Option<mvnet_core::model::FleetPool>> {
        let mut opts = Vec::new();
        if let Some(p) = &self.pool {
            opts.push(format!("pool={p}"));
        }
        if let Some(e) = &self.etcd {
            opts.push(format!("etcd={e}"));
        }
        if let Some(g) = self.grace {
            opts.push(format!("grace={g}"));
        }
        if let Some(n) = self.spares {
            opts.push(format!("spares={n}"));
        }
        mvnet_core::model::FleetPool::from_ipam_options(&opts).map_err(CniError::from)
    }

    pub fn parse(ipam: &Value) -> CniResult<BuiltinConf> {
        serde_json::from_value(ipam.clone()).map_err(|e| {
            CniError::new(
                code::INVALID_CONFIG,
                format!("invalid mvnet IPAM config: {e}"),
            )
        })
    }

    /// The pools, host-local style: the gateway defaults to the subnet's first address.
    /// None with `"dhcp": true` (the server has the pool).
    pub fn pools(&self) -> CniResult<Vec<PoolSpec>> {
        if self.dhcp {
            if self.single.subnet.is_some() || !self.ranges.is_empty() {
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    "\"dhcp\": true takes the subnet from the LAN's DHCP server: remove \"subnet\"/\"ranges\"",
                ));
            }
            return Ok(Vec::new());
        }
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

/// The network record a CNI config stands for: its name, driver and mode, the master, and
/// (with the built-in IPAM) its pools. The engine creates it on first ADD and checks it on
/// later ones; with another IPAM it only describes the attachment and is never stored.
pub fn network_record(conf: &NetConf, master: &str, pools: Vec<PoolSpec>) -> CniResult<Network> {
    let ipv6 = pools.iter().any(|p| p.subnet.addr().is_ipv6());
    Ok(Network {
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
        dhcp: false,
        fleet: None,
        labels: [("mvnet.cni".to_string(), "true".to_string())].into(),
        options: NetworkOptions {
            parent: master.to_string(),
            macvlan_mode: if conf.is_ipvlan() {
                Default::default()
            } else {
                conf.macvlan_mode()?
            },
            ipvlan_mode: match conf.link_kind()? {
                mvnet_core::driver::LinkKind::Ipvlan(m, _) => m,
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
            dhcp_timeout: None,
        },
    })
}

/// The endpoint this plugin made for this container and interface on the CNI network (by
/// its exact name), if any.
pub fn builtin_find(
    engine: &mut Engine,
    conf: &NetConf,
    env: &Env,
) -> CniResult<Option<(Network, Endpoint)>> {
    let Some(net) = engine.network_by_exact_name(&conf.name)? else {
        return Ok(None);
    };
    let ep = engine
        .endpoints_of_container(&env.container_id)?
        .into_iter()
        .find(|e| e.network_id == net.id && e.ifname == env.ifname && e.frontend.is_cni(&net));
    Ok(ep.map(|e| (net, e)))
}

/// The result's IP configs for an mvnet endpoint.
pub fn endpoint_ips(net: &Network, ep: &Endpoint) -> Vec<IpConfig> {
    ep.ipv4
        .iter()
        .chain(ep.ipv6.iter())
        .map(|(ip, p)| IpConfig {
            address: IpNet::new(*ip, *p).expect("valid prefix"),
            gateway: ep
                .lease
                .as_ref()
                .and_then(|l| l.gateway.map(IpAddr::V4))
                .filter(|_| ip.is_ipv4())
                .or_else(|| mvnet_core::driver::gateway_for(net, *ip)),
            interface: Some(0),
        })
        .collect()
}
