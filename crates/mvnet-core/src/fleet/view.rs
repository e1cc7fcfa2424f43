//! What `mvnet pool ls` and `mvnet pool inspect` show, read from etcd: which host holds
//! which address of a shared pool, and which hosts are alive.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::{json, Value};

use super::coord::Coordinator;
use super::{claims_prefix, hosts_prefix, Claim, Seen, LAN_HOST};
use crate::model::time::format_rfc3339;
use crate::model::{FleetPool, Network};
use crate::Result;

/// `mvnet pool inspect NAME`: the pool as etcd has it. `nets`: this host's networks on it.
pub fn inspect(pool: &FleetPool, nets: &[Network], coord: &mut dyn Coordinator) -> Result<Value> {
    let prefix = claims_prefix(&pool.pool);
    let mut addresses: Vec<(IpAddr, Claim)> = coord
        .list(&prefix)?
        .into_iter()
        .filter_map(|(k, v, _)| Some((k.strip_prefix(&prefix)?.parse().ok()?, Claim::parse(&v)?)))
        .collect();
    addresses.sort_by_key(|(ip, _)| *ip);
    // Hosts: /mvnet/v1/hosts/<id>/alive and /seen.
    let hp = hosts_prefix();
    let mut hosts: BTreeMap<String, (String, bool, Option<i64>)> = BTreeMap::new();
    for (k, v, _) in coord.list(&hp)? {
        let Some((id, what)) = k.strip_prefix(&hp).and_then(|r| r.split_once('/')) else {
            continue;
        };
        let e = hosts
            .entry(id.to_string())
            .or_insert((String::new(), false, None));
        match what {
            "alive" => {
                e.1 = true;
                if e.0.is_empty() {
                    e.0 = v;
                }
            }
            "seen" => {
                if let Ok(s) = serde_json::from_str::<Seen>(&v) {
                    e.0 = s.name;
                    e.2 = Some(s.at);
                }
            }
            _ => {}
        }
    }
    for (_, c) in &addresses {
        if c.host != LAN_HOST {
            hosts
                .entry(c.host.clone())
                .or_insert((c.host_name.clone(), false, None));
        }
    }
    let held = |id: &str| addresses.iter().filter(|(_, c)| c.host == id).count();
    let spec = nets.first().and_then(|n| n.pools.first());
    Ok(json!({
        "Name": pool.pool,
        "Subnet": spec.map(|s| s.subnet.to_string()),
        "Gateway": spec.and_then(|s| s.gateway).map(|g| g.to_string()),
        "Etcd": super::etcd_endpoints(pool).unwrap_or_default(),
        "GraceSeconds": pool.grace_secs,
        "Networks": nets.iter().map(|n| n.name.clone()).collect::<Vec<_>>(),
        "Hosts": hosts.iter().map(|(id, (name, alive, seen))| json!({
            "Id": id,
            "Name": name,
            "Alive": alive,
            "LastSeen": seen.map(|s| format_rfc3339(s, 0)),
            "Addresses": held(id),
        })).collect::<Vec<_>>(),
        "Addresses": addresses.iter().map(|(ip, c)| {
            let mut v = json!({
                "Address": ip.to_string(),
                "Host": if c.host == LAN_HOST { "(a LAN device)".to_string() } else { c.host_name.clone() },
                "HostId": c.host,
                "Container": c.container,
                "Endpoint": c.endpoint,
                "Network": c.network,
                "Since": format_rfc3339(c.since, 0),
            });
            if let Some(m) = &c.holder {
                v["MacAddress"] = json!(m);
            }
            if c.host != LAN_HOST && c.container.is_empty() {
                // Claimed ahead by its host (--ipam-opt spares=N): no container yet.
                v["Spare"] = json!(true);
            }
            v
        }).collect::<Vec<_>>(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::coord::MemoryCoordinator;

    #[test]
    fn inspect_shows_every_address_and_host() {
        let mut c = MemoryCoordinator::new();
        let claim = |host: &str, name: &str, ct: &str| Claim {
            host: host.into(),
            host_name: name.into(),
            endpoint: format!("ep-{ct}"),
            container: ct.into(),
            network: "lan".into(),
            since: 1_700_000_000,
            holder: None,
        };
        c.create(
            &crate::fleet::claim_key("office", "10.0.0.3".parse().unwrap()),
            &claim("b", "host-b", "db").to_json(),
        )
        .unwrap();
        c.create(
            &crate::fleet::claim_key("office", "10.0.0.2".parse().unwrap()),
            &claim("a", "host-a", "web").to_json(),
        )
        .unwrap();
        c.create(&crate::fleet::alive_key("a"), "host-a").unwrap();
        c.create(
            &crate::fleet::seen_key("b"),
            &serde_json::to_string(&Seen {
                name: "host-b".into(),
                at: 1_700_000_100,
            })
            .unwrap(),
        )
        .unwrap();
        let pool = FleetPool {
            pool: "office".into(),
            etcd: vec!["http://10.0.0.5:2379".into()],
            grace_secs: 60,
            spares: 0,
        };
        let v = inspect(&pool, &[], &mut c).unwrap();
        assert_eq!(v["Addresses"][0]["Address"], "10.0.0.2");
        assert_eq!(v["Addresses"][0]["Host"], "host-a");
        assert_eq!(v["Addresses"][1]["Container"], "db");
        let hosts = v["Hosts"].as_array().unwrap();
        assert_eq!(hosts.len(), 2);
        assert_eq!(hosts[0]["Alive"], true);
        assert_eq!(hosts[0]["Addresses"], 1);
        assert_eq!(hosts[1]["Alive"], false);
        assert_eq!(hosts[1]["LastSeen"], "2023-11-14T22:15:00.000000000Z");
    }
}
