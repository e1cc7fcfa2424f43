//! Docker-shaped JSON for `inspect`, `ls --format json` and `ps --format json`, built from
//! the model alone (pure, so its shape is unit-tested without root).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::ids::short;
use crate::model::{Container, ContainerStatus, Endpoint, LanConflict, Network};

fn cidr(a: &Option<(std::net::IpAddr, u8)>) -> String {
    a.map(|(ip, p)| format!("{ip}/{p}")).unwrap_or_default()
}

/// `mvnet network inspect` element, shaped like `docker network inspect`, plus mvnet's
/// `HostAccess` and `LanConflicts` (addresses other devices on the LAN answered for).
pub fn network_inspect(net: &Network, endpoints: &[Endpoint], conflicts: &[LanConflict]) -> Value {
    let config: Vec<Value> = net
        .pools
        .iter()
        .map(|p| {
            let mut m = Map::new();
            m.insert("Subnet".into(), json!(p.subnet.to_string()));
            if let Some(g) = p.gateway {
                m.insert("Gateway".into(), json!(g.to_string()));
            }
            if let Some(r) = p.ip_range {
                m.insert("IPRange".into(), json!(r.to_string()));
            }
            if !p.aux.is_empty() {
                let aux: Map<String, Value> = p
                    .aux
                    .iter()
                    .map(|(k, v)| (k.clone(), json!(v.to_string())))
                    .collect();
                m.insert("AuxiliaryAddresses".into(), Value::Object(aux));
            }
            Value::Object(m)
        })
        .collect();
    let host = endpoints
        .iter()
        .find(|e| crate::engine::hostaccess::is_host_endpoint(e));
    let containers: Map<String, Value> = endpoints
        .iter()
        .filter(|e| !crate::engine::hostaccess::is_host_endpoint(e))
        .map(|e| {
            (
                e.container_id.clone(),
                json!({
                    "Name": e.container_name,
                    "EndpointID": e.id,
                    "MacAddress": e.mac.to_string(),
                    "IPv4Address": cidr(&e.ipv4),
                    "IPv6Address": cidr(&e.ipv6),
                }),
            )
        })
        .collect();
    json!({
        "Name": net.name,
        "Id": net.id,
        "Created": net.created,
        "Scope": "local",
        "Driver": net.driver.to_string(),
        "EnableIPv4": net.ipv4_enabled(),
        "EnableIPv6": net.ipv6,
        "IPAM": {
            "Driver": if net.dhcp { "dhcp" } else { "default" },
            "Options": {},
            "Config": config,
        },
        "Internal": net.internal,
        "Attachable": true,
        "Ingress": false,
        "ConfigFrom": { "Network": "" },
        "ConfigOnly": false,
        "Containers": containers,
        "Options": net.options.to_map(net.driver),
        "HostAccess": host.map(|h| json!({"Interface": h.ifname, "IPv4Address": cidr(&h.ipv4), "MacAddress": h.mac.to_string()})),
        "LanConflicts": conflicts
            .iter()
            .map(|c| json!({
                "IPAddress": c.ip.to_string(),
                "MacAddress": c.mac.map(|m| m.to_string()).unwrap_or_default(),
                "Seen": c.seen,
            }))
            .collect::<Vec<_>>(),
        "Labels": net.labels,
    })
}

/// Which front end manages a network: `docker` (made by `docker network create -d mvnet`,
/// removed only by Docker), `cni` (made from a CNI config), or `mvnet` (the CLI).
pub fn network_owner(net: &Network) -> &'static str {
    if net.docker_owned() {
        "docker"
    } else if net.labels.get("mvnet.cni").is_some_and(|v| v == "true") {
        "cni"
    } else {
        "mvnet"
    }
}

/// One `network ls --format json` row.
pub fn network_row(net: &Network, parent_present: bool) -> Value {
    json!({
        "ID": short(&net.id),
        "Name": net.name,
        "Driver": net.driver.to_string(),
        "Scope": "local",
        "Parent": net.options.parent,
        "ParentPresent": parent_present,
        "Owner": network_owner(net),
        "Internal": net.internal,
        "IPv6": net.ipv6,
        "CreatedAt": net.created,
        "Labels": net
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    })
}

/// `mvnet inspect` element, shaped like `docker container inspect`.
pub fn container_inspect(c: &Container, attached: &[(Endpoint, Network)]) -> Value {
    let networks: Map<String, Value> = attached
        .iter()
        .map(|(e, n)| {
            let gw4 = e
                .lease
                .as_ref()
                .and_then(|l| l.gateway.map(std::net::IpAddr::V4))
                .or_else(|| e.ipv4.and_then(|(ip, _)| crate::driver::gateway_for(n, ip)));
            let gw6 = e.ipv6.and_then(|(ip, _)| crate::driver::gateway_for(n, ip));
            (
                n.name.clone(),
                json!({
                    "IPAMConfig": null,
                    "Links": null,
                    "Aliases": [short(&c.id)],
                    "NetworkID": n.id,
                    "EndpointID": e.id,
                    "Gateway": gw4.map(|g| g.to_string()).unwrap_or_default(),
                    "IPAddress": e.ipv4.map(|(ip, _)| ip.to_string()).unwrap_or_default(),
                    "IPPrefixLen": e.ipv4.map(|(_, p)| p).unwrap_or(0),
                    "IPv6Gateway": gw6.map(|g| g.to_string()).unwrap_or_default(),
                    "GlobalIPv6Address": e.ipv6.map(|(ip, _)| ip.to_string()).unwrap_or_default(),
                    "GlobalIPv6PrefixLen": e.ipv6.map(|(_, p)| p).unwrap_or(0),
                    "MacAddress": e.mac.to_string(),
                    "DriverOpts": null,
                    "InterfaceName": e.ifname,
                    "DHCP": e.lease.as_ref().map(|l| json!({
                        "Server": l.server.to_string(),
                        "LeaseSeconds": l.lease_secs,
                        "Obtained": l.obtained,
                        "Expires": l.expires,
                        "DNS": l.dns.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
                        "ClientID": l.client_id,
                        "Hostname": l.hostname,
                    })),
                }),
            )
        })
        .collect();
    let running = c.status == ContainerStatus::Running;
    json!({
        "Id": c.id,
        "Created": c.created,
        "Path": c.command.first().cloned().unwrap_or_default(),
        "Args": c.command.iter().skip(1).collect::<Vec<_>>(),
        "State": {
            "Status": c.status.to_string(),
            "Running": running,
            "Pid": if running { c.pid } else { 0 },
            "ExitCode": c.exit_code.unwrap_or(0),
            "StartedAt": c.started_at.clone().unwrap_or_default(),
            "FinishedAt": c.finished_at.clone().unwrap_or_default(),
            "Paused": false,
            "Restarting": false,
            "OOMKilled": false,
            "Dead": false,
            "Error": "",
        },
        "Name": format!("/{}", c.name),
        "RestartCount": 0,
        "LogPath": c.log_path.clone().unwrap_or_default(),
        "HostConfig": {
            "AutoRemove": c.auto_remove,
            "NetworkMode": attached.first().map(|(_, n)| n.name.clone()).unwrap_or_default(),
        },
        "Config": {
            "Hostname": c.hostname,
            "Domainname": "",
            "User": "",
            "AttachStdin": false,
            "AttachStdout": false,
            "AttachStderr": false,
            "Tty": false,
            "OpenStdin": false,
            "StdinOnce": false,
            "Cmd": c.command,
            "WorkingDir": "",
            "Labels": c.labels,
        },
        // The top-level address fields are the default bridge network's in Docker, so
        // empty for a container on macvlan networks, there as here.
        "NetworkSettings": {
            "Bridge": "",
            "SandboxID": c.id,
            "HairpinMode": false,
            "LinkLocalIPv6Address": "",
            "LinkLocalIPv6PrefixLen": 0,
            "Ports": {},
            "SandboxKey": c.netns,
            "SecondaryIPAddresses": null,
            "SecondaryIPv6Addresses": null,
            "EndpointID": "",
            "Gateway": "",
            "GlobalIPv6Address": "",
            "GlobalIPv6PrefixLen": 0,
            "IPAddress": "",
            "IPPrefixLen": 0,
            "IPv6Gateway": "",
            "MacAddress": "",
            "Networks": networks,
        },
    })
}

/// One `ps --format json` row.
pub fn container_row(c: &Container, networks: &[String]) -> Value {
    json!({
        "ID": short(&c.id),
        "Names": c.name,
        "Command": c.command.join(" "),
        "CreatedAt": c.created,
        "State": c.status.to_string(),
        "Status": status_text(c),
        "Networks": networks.join(","),
        "Labels": c
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    })
}

/// Docker's human STATUS column, without relative times: "Up", "Exited (0)", "Created".
pub fn status_text(c: &Container) -> String {
    match c.status {
        ContainerStatus::Running => "Up".into(),
        // No code: the process ended while nothing watched it (its monitor was killed too).
        ContainerStatus::Exited => match c.exit_code {
            Some(code) => format!("Exited ({code})"),
            None => "Exited (unknown)".into(),
        },
        ContainerStatus::Created => "Created".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CreateNetworkRequest, EndpointState, MacAddr};

    fn seed_network() -> Network {
        let req = CreateNetworkRequest {
            name: "my-macvlan-net".into(),
            subnets: vec!["10.103.19.0/24".into()],
            gateways: vec!["10.103.19.1".into()],
            options: vec!["parent=eth0".into()],
            ..Default::default()
        };
        let v = req.validate().unwrap();
        Network {
            id: "8e9ae1c6629de975356184f8d6959a490dbaf351a8ed5334ba050049a9a5c3d2".into(),
            name: req.name,
            driver: v.driver,
            created: "2026-11-28T00:00:00.000000000Z".into(),
            pools: v.pools,
            internal: false,
            ipv6: false,
            ipv4_disabled: false,
            dhcp: false,
            fleet: None,
            labels: v.labels,
            options: v.options,
        }
    }

    #[test]
    fn network_inspect_has_docker_fields() {
        let v = network_inspect(&seed_network(), &[], &[]);
        assert_eq!(v["Scope"], "local");
        assert_eq!(v["Driver"], "macvlan");
        assert_eq!(v["IPAM"]["Config"][0]["Subnet"], "10.103.19.0/24");
        assert_eq!(v["IPAM"]["Config"][0]["Gateway"], "10.103.19.1");
        assert_eq!(v["Options"]["parent"], "eth0");
        assert_eq!(v["Options"]["macvlan_mode"], "bridge");
        assert!(v["Containers"].as_object().unwrap().is_empty());
        assert_eq!(v["LanConflicts"], json!([]));
        let c = LanConflict {
            ip: "10.103.19.7".parse().unwrap(),
            mac: Some("00:11:22:33:44:55".parse().unwrap()),
            seen: "2026-11-28T04:20:00Z".into(),
        };
        let v = network_inspect(&seed_network(), &[], &[c]);
        assert_eq!(
            v["LanConflicts"],
            json!([{"IPAddress": "10.103.19.7", "MacAddress": "00:11:22:33:44:55", "Seen": "2026-11-28T04:20:00Z"}])
        );
    }

    #[test]
    fn container_inspect_matches_the_seed() {
        let net = seed_network();
        let ip: std::net::IpAddr = "10.103.19.2".parse().unwrap();
        let ep = Endpoint {
            id: "5e88".into(),
            network_id: net.id.clone(),
            container_id: "bb4d75902a4e0000".into(),
            container_name: "my-macvlan-alpine".into(),
            netns: "/run/netns/x".into(),
            ifname: "eth0".into(),
            mac: MacAddr::from_ipv4("10.103.19.2".parse().unwrap()),
            ipv4: Some((ip, 24)),
            ipv6: None,
            state: EndpointState::Active,
            owner_pid: 1,
            frontend: Default::default(),
            lease: None,
        };
        let c = Container {
            id: "bb4d75902a4e0000".into(),
            name: "my-macvlan-alpine".into(),
            hostname: "bb4d75902a4e".into(),
            netns: "/run/netns/x".into(),
            uts: String::new(),
            created: String::new(),
            command: vec!["sleep".into(), "1".into()],
            status: ContainerStatus::Running,
            pid: 7,
            pid_start: 0,
            exit_code: None,
            started_at: None,
            finished_at: None,
            auto_remove: true,
            log_path: None,
            creator_pid: 0,
            creator_start: 0,
            labels: Default::default(),
        };
        let v = container_inspect(&c, &[(ep.clone(), net.clone())]);
        let n = &v["NetworkSettings"]["Networks"]["my-macvlan-net"];
        assert_eq!(n["IPAddress"], "10.103.19.2");
        assert_eq!(n["IPPrefixLen"], 24);
        assert_eq!(n["Gateway"], "10.103.19.1");
        assert_eq!(n["MacAddress"], "02:42:0a:67:13:02");
        assert_eq!(n["NetworkID"], net.id);
        assert_eq!(v["State"]["Running"], true);
        assert_eq!(v["Name"], "/my-macvlan-alpine");
        let ni = network_inspect(&net, &[ep], &[]);
        assert_eq!(
            ni["Containers"]["bb4d75902a4e0000"]["IPv4Address"],
            "10.103.19.2/24"
        );
    }
}

/// The shape of a JSON document: every path with the JSON type found there, for comparing
/// mvnet's output with Docker's field by field (keys and types, not values). Array
/// elements are `[]`; the keys of maps whose keys are data (container ids, network names,
/// labels, options) are `*`.
pub fn json_shape(v: &Value) -> BTreeMap<String, String> {
    fn kind(v: &Value) -> &'static str {
        match v {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }
    /// Maps keyed by data rather than by field names.
    const DATA_KEYED: &[&str] = &[
        "Containers",
        "Networks",
        "Options",
        "Labels",
        "AuxiliaryAddresses",
        "Ports",
        "ExposedPorts",
        "Volumes",
        "DriverOpts",
        "Sysctls",
    ];
    fn walk(path: &str, v: &Value, out: &mut BTreeMap<String, String>) {
        let k = kind(v);
        // null and a typed value seen at one path: keep the typed one.
        let e = out.entry(path.to_string()).or_insert_with(|| k.to_string());
        if e == "null" {
            *e = k.to_string();
        }
        match v {
            Value::Array(items) => {
                for i in items {
                    walk(&format!("{path}[]"), i, out);
                }
            }
            Value::Object(m) => {
                let keyed = DATA_KEYED.iter().any(|d| path.ends_with(&format!(".{d}")));
                for (key, val) in m {
                    let key = if keyed { "*" } else { key.as_str() };
                    walk(&format!("{path}.{key}"), val, out);
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeMap::new();
    walk("", v, &mut out);
    out
}

#[cfg(test)]
mod shape_tests {
    use super::*;

    #[test]
    fn shapes_list_paths_and_types_and_fold_data_keys() {
        let v = json!([{"Name": "n", "Containers": {"abc": {"IPv4Address": "x"}, "def": {"IPv4Address": null}},
                        "IPAM": {"Config": [{"Subnet": "s"}]}, "Internal": false}]);
        let s = json_shape(&v);
        assert_eq!(s[""], "array");
        assert_eq!(s["[].Name"], "string");
        assert_eq!(s["[].Containers.*.IPv4Address"], "string");
        assert_eq!(s["[].IPAM.Config[].Subnet"], "string");
        assert_eq!(s["[].Internal"], "bool");
        assert!(!s.keys().any(|k| k.contains("abc")));
    }
}
