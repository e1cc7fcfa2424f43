//! `mvnet pool ls` and `mvnet pool inspect`: the shared pools (`--ipam-opt pool=`), read
//! from etcd through the engine.

use mvnet_core::engine::Engine;
use mvnet_core::Result;

use crate::cli::PoolCmd;
use crate::format::Format;

const POOL_HEADERS: &[(&str, &str)] = &[
    ("Name", "POOL"),
    ("Subnet", "SUBNET"),
    ("Addresses", "ADDRESSES"),
    ("Hosts", "HOSTS"),
    ("Etcd", "ETCD"),
];

pub fn run(engine: &mut Engine, cmd: PoolCmd) -> Result<u8> {
    match cmd {
        PoolCmd::Ls { format } => {
            let mut rows = Vec::new();
            for (pool, nets) in engine.fleet_pools()? {
                let subnet = nets
                    .first()
                    .and_then(|n| n.pools.first())
                    .map(|p| p.subnet.to_string())
                    .unwrap_or_default();
                let etcd = mvnet_core::fleet::etcd_endpoints(&pool)
                    .map(|e| e.join(","))
                    .unwrap_or_else(|e| format!("({e})"));
                // What etcd says; a pool whose etcd does not answer is still listed.
                let (addresses, hosts) = match engine.pool_inspect(&pool.pool) {
                    Ok(v) => {
                        let hosts = v["Hosts"].as_array().cloned().unwrap_or_default();
                        let alive = hosts.iter().filter(|h| h["Alive"] == true).count();
                        (
                            v["Addresses"].as_array().map_or(0, |a| a.len()).to_string(),
                            format!("{alive} alive of {}", hosts.len()),
                        )
                    }
                    Err(_) => ("?".into(), "etcd unreachable".into()),
                };
                rows.push(serde_json::json!({
                    "Name": pool.pool,
                    "Subnet": subnet,
                    "Addresses": addresses,
                    "Hosts": hosts,
                    "Etcd": etcd,
                    "Networks": nets.iter().map(|n| n.name.clone()).collect::<Vec<_>>(),
                }));
            }
            let fmt = Format::parse(&format);
            if fmt == Format::Default {
                let table: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| {
                        POOL_HEADERS
                            .iter()
                            .map(|(k, _)| r[*k].as_str().unwrap_or_default().to_string())
                            .collect()
                    })
                    .collect();
                let headers: Vec<&str> = POOL_HEADERS.iter().map(|(_, h)| *h).collect();
                crate::table::print(&headers, &table);
            } else {
                crate::format::print(&fmt, &rows, POOL_HEADERS)?;
            }
            Ok(0)
        }
        PoolCmd::Inspect { format, pool } => {
            let v = engine.pool_inspect(&pool)?;
            let fmt = Format::parse(&format);
            if fmt == Format::Default || fmt == Format::Json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::Value::Array(vec![v]))
                        .expect("serializes")
                );
            } else {
                crate::format::print(&fmt, &[v], &[])?;
            }
            Ok(0)
        }
    }
}
