//! CNI results: one internal shape, printed in whatever version the config asked for, and
//! parsed back from any version (IPAM plugin output, prevResult).

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{json, Map, Value};

use crate::conf::version_at_least;
use crate::error::{code, CniError, CniResult};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    pub sandbox: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// Address with its prefix length, e.g. 10.1.2.2/24.
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Value,
}

fn route_json(r: &Route) -> Value {
    let mut m = Map::new();
    m.insert("dst".into(), json!(r.dst.to_string()));
    if let Some(gw) = r.gw {
        m.insert("gw".into(), json!(gw.to_string()));
    }
    Value::Object(m)
}

impl Outcome {
    /// The result as the spec's `version` prints it.
    pub fn to_json(&self, version: &str) -> CniResult<Value> {
        let dns = if self.dns.is_null() {
            json!({})
        } else {
            self.dns.clone()
        };
        if !version_at_least(version, "0.3.0") {
            // 0.1.0 / 0.2.0: one IPv4 and one IPv6 config, no interfaces.
            let family = |v6: bool| {
                self.ips
                    .iter()
                    .find(|i| i.address.addr().is_ipv6() == v6)
                    .map(|i| {
                        let mut m = Map::new();
                        m.insert("ip".into(), json!(i.address.to_string()));
                        if let Some(g) = i.gateway {
                            m.insert("gateway".into(), json!(g.to_string()));
                        }
                        let routes: Vec<Value> = self
                            .routes
                            .iter()
                            .filter(|r| r.dst.addr().is_ipv6() == v6)
                            .map(route_json)
                            .collect();
                        if !routes.is_empty() {
                            m.insert("routes".into(), Value::Array(routes));
                        }
                        Value::Object(m)
                    })
            };
            let (ip4, ip6) = (family(false), family(true));
            if ip4.is_none() && ip6.is_none() {
                return Err(CniError::new(
                    code::INCOMPATIBLE_VERSION,
                    format!("cannot convert the result to version {version}: it has no IP address (an L2-only result needs version 0.3.0 or later)"),
                ));
            }
            let mut m = Map::new();
            m.insert("cniVersion".into(), json!(version));
            if let Some(v) = ip4 {
                m.insert("ip4".into(), v);
            }
            if let Some(v) = ip6 {
                m.insert("ip6".into(), v);
            }
            m.insert("dns".into(), dns);
            return Ok(Value::Object(m));
        }
        let with_version = !version_at_least(version, "1.0.0");
        let mut m = Map::new();
        m.insert("cniVersion".into(), json!(version));
        if !self.interfaces.is_empty() {
            let ifs: Vec<Value> = self
                .interfaces
                .iter()
                .map(|i| json!({"name": i.name, "mac": i.mac, "sandbox": i.sandbox}))
                .collect();
            m.insert("interfaces".into(), Value::Array(ifs));
        }
        if !self.ips.is_empty() {
            let ips: Vec<Value> = self
                .ips
                .iter()
                .map(|i| {
                    let mut o = Map::new();
                    if with_version {
                        o.insert(
                            "version".into(),
                            json!(if i.address.addr().is_ipv6() { "6" } else { "4" }),
                        );
                    }
                    if let Some(n) = i.interface {
                        o.insert("interface".into(), json!(n));
                    }
                    o.insert("address".into(), json!(i.address.to_string()));
                    if let Some(g) = i.gateway {
                        o.insert("gateway".into(), json!(g.to_string()));
                    }
                    Value::Object(o)
                })
                .collect();
            m.insert("ips".into(), Value::Array(ips));
        }
        if !self.routes.is_empty() {
            m.insert(
                "routes".into(),
                Value::Array(self.routes.iter().map(route_json).collect()),
            );
        }
        m.insert("dns".into(), dns);
        Ok(Value::Object(m))
    }

    /// Parses a result of any version (an IPAM plugin's answer or a prevResult).
    pub fn parse(v: &Value) -> CniResult<Outcome> {
        let bad = |what: &str| CniError::new(code::DECODE, format!("invalid result: {what}"));
        let net = |s: Option<&str>, what: &str| -> CniResult<IpNet> {
            s.and_then(|s| s.parse().ok()).ok_or_else(|| bad(what))
        };
        let ip = |s: Option<&Value>| {
            s.and_then(Value::as_str)
                .and_then(|s| s.parse::<IpAddr>().ok())
        };
        let mut out = Outcome {
            dns: v.get("dns").cloned().unwrap_or(json!({})),
            ..Default::default()
        };
        let parse_routes = |arr: Option<&Value>| -> CniResult<Vec<Route>> {
            arr.and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|r| {
                            Ok(Route {
                                dst: net(r.get("dst").and_then(Value::as_str), "route dst")?,
                                gw: ip(r.get("gw")),
                            })
                        })
                        .collect()
                })
                .unwrap_or(Ok(Vec::new()))
        };
        if let Some(ifs) = v.get("interfaces").and_then(Value::as_array) {
            for i in ifs {
                out.interfaces.push(Interface {
                    name: i
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .into(),
                    mac: i
                        .get("mac")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .into(),
                    sandbox: i
                        .get("sandbox")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .into(),
                });
            }
        }
        if let Some(ips) = v.get("ips").and_then(Value::as_array) {
            for i in ips {
                out.ips.push(IpConfig {
                    address: net(i.get("address").and_then(Value::as_str), "ips[].address")?,
                    gateway: ip(i.get("gateway")),
                    interface: i
                        .get("interface")
                        .and_then(Value::as_u64)
                        .map(|n| n as usize),
                });
            }
            out.routes = parse_routes(v.get("routes"))?;
        } else {
            for fam in ["ip4", "ip6"] {
                if let Some(f) = v.get(fam) {
                    out.ips.push(IpConfig {
                        address: net(f.get("ip").and_then(Value::as_str), "ip4.ip")?,
                        gateway: ip(f.get("gateway")),
                        interface: None,
                    });
                    out.routes.extend(parse_routes(f.get("routes"))?);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Outcome {
        Outcome {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: "02:42:0a:01:02:02".into(),
                sandbox: "/run/netns/x".into(),
            }],
            ips: vec![IpConfig {
                address: "10.1.2.2/24".parse().unwrap(),
                gateway: Some("10.1.2.1".parse().unwrap()),
                interface: Some(0),
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: None,
            }],
            dns: json!({}),
        }
    }

    #[test]
    fn printed_like_the_reference_plugin_per_version() {
        let v = sample().to_json("1.0.0").unwrap();
        assert_eq!(
            v,
            json!({"cniVersion":"1.0.0","interfaces":[{"name":"eth0","mac":"02:42:0a:01:02:02","sandbox":"/run/netns/x"}],
            "ips":[{"interface":0,"address":"10.1.2.2/24","gateway":"10.1.2.1"}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{}})
        );
        let v = sample().to_json("0.3.1").unwrap();
        assert_eq!(v["ips"][0]["version"], "4");
        let v = sample().to_json("0.2.0").unwrap();
        assert_eq!(
            v,
            json!({"cniVersion":"0.2.0","ip4":{"ip":"10.1.2.2/24","gateway":"10.1.2.1","routes":[{"dst":"0.0.0.0/0"}]},"dns":{}})
        );
        let l2 = Outcome {
            ips: vec![],
            routes: vec![],
            ..sample()
        };
        assert!(
            l2.to_json("0.2.0").is_err(),
            "L2-only cannot be a 0.2.0 result"
        );
        assert!(l2.to_json("0.3.0").unwrap().get("ips").is_none());
    }

    #[test]
    fn parses_every_version_back() {
        for ver in ["0.2.0", "0.3.0", "0.4.0", "1.0.0", "1.1.0"] {
            let printed = sample().to_json(ver).unwrap();
            let back = Outcome::parse(&printed).unwrap();
            assert_eq!(back.ips[0].address, sample().ips[0].address, "{ver}");
            assert_eq!(back.routes, sample().routes, "{ver}");
        }
    }
}
