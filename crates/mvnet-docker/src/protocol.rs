//! Docker's plugin protocol, as libnetwork speaks it (remote network driver and remote IPAM
//! driver): the request bodies mvnet reads. Field names are Go's. Docker sends no
//! Content-Type and an empty body for calls without arguments, so every body is parsed
//! from bytes here, and an empty one reads as `{}`.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

/// Parses a request body; empty means "no arguments".
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| format!("cannot read the request: {e}"))
}

/// Go sends `null` for an empty map or list: read it as empty.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// One subnet of a network as libnetwork hands it to the network driver.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct IpamData {
    pub address_space: String,
    pub pool: String,
    pub gateway: String,
    #[serde(deserialize_with = "null_as_default")]
    pub aux_addresses: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct CreateNetwork {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(deserialize_with = "null_as_default")]
    pub options: Map<String, Value>,
    #[serde(rename = "IPv4Data", deserialize_with = "null_as_default")]
    pub ipv4_data: Vec<IpamData>,
    #[serde(rename = "IPv6Data", deserialize_with = "null_as_default")]
    pub ipv6_data: Vec<IpamData>,
}

/// Docker's option keys in `CreateNetwork.Options`.
pub const GENERIC: &str = "com.docker.network.generic";
pub const ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
pub const INTERNAL: &str = "com.docker.network.internal";
/// The MAC in `RequestAddress.Options` (sent because mvnet's IPAM asks for it).
pub const MAC_ADDRESS: &str = "com.docker.network.endpoint.macaddress";
/// `RequestAddress.Options` of the gateway's request at network creation.
pub const REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";
pub const GATEWAY_TYPE: &str = "com.docker.network.gateway";

impl CreateNetwork {
    /// `-o key=value` of `docker network create`, as strings.
    pub fn generic_options(&self) -> Vec<(String, String)> {
        match self.options.get(GENERIC) {
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), v)
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    pub fn flag(&self, key: &str) -> bool {
        match self.options.get(key) {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s == "true",
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct NetworkRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct EndpointInterface {
    pub address: String,
    #[serde(rename = "AddressIPv6")]
    pub address_ipv6: String,
    pub mac_address: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct CreateEndpoint {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub interface: Option<EndpointInterface>,
    #[serde(deserialize_with = "null_as_default")]
    pub options: Map<String, Value>,
}

/// `Leave`, `DeleteEndpoint`, `EndpointOperInfo`, `Program/RevokeExternalConnectivity`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct EndpointRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Join {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub sandbox_key: String,
    #[serde(deserialize_with = "null_as_default")]
    pub options: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct RequestPool {
    pub address_space: String,
    pub pool: String,
    pub sub_pool: String,
    #[serde(deserialize_with = "null_as_default")]
    pub options: BTreeMap<String, String>,
    #[serde(rename = "V6")]
    pub v6: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct RequestAddress {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub address: String,
    #[serde(deserialize_with = "null_as_default")]
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ReleaseAddress {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub address: String,
}

/// Which of the two drivers a method belongs to: they report errors under different keys
/// (`Err` for the network driver, `Error` for IPAM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Plugin,
    Network,
    Ipam,
}

impl Api {
    pub fn of(method: &str) -> Option<Api> {
        if method.starts_with("/Plugin.") {
            Some(Api::Plugin)
        } else if method.starts_with("/NetworkDriver.") {
            Some(Api::Network)
        } else if method.starts_with("/IpamDriver.") {
            Some(Api::Ipam)
        } else {
            None
        }
    }

    /// The error body Docker reads for this API.
    pub fn error(self, msg: &str) -> Value {
        let key = match self {
            Api::Ipam => "Error",
            _ => "Err",
        };
        let mut m = Map::new();
        m.insert(key.to_string(), Value::String(msg.to_string()));
        Value::Object(m)
    }
}

/// A pool id names the subnet and the `--ip-range` (Docker's SubPool), so every later call
/// can be served without memory of earlier ones: `mvnet:<pool>` or `mvnet:<pool>:<range>`.
pub fn pool_id(pool: &str, sub_pool: &str) -> String {
    if sub_pool.is_empty() {
        format!("mvnet:{pool}")
    } else {
        format!("mvnet:{pool}:{sub_pool}")
    }
}

/// The subnet and range of a pool id from [`pool_id`].
pub fn parse_pool_id(id: &str) -> Result<(ipnet::IpNet, Option<ipnet::IpNet>), String> {
    let bad = || {
        format!(
            "unknown pool id {}: not one of mvnet's",
            mvnet_core::quote(id)
        )
    };
    let rest = id.strip_prefix("mvnet:").ok_or_else(bad)?;
    // IPv6 subnets contain ':', so split at the last "/len:" boundary instead.
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, c) in rest.char_indices() {
        if c == ':' && rest[start..i].contains('/') {
            parts.push(&rest[start..i]);
            start = i + 1;
        }
    }
    parts.push(&rest[start..]);
    let net = |s: &str| s.parse::<ipnet::IpNet>().map_err(|_| bad());
    match parts.as_slice() {
        [pool] => Ok((net(pool)?, None)),
        [pool, range] => Ok((net(pool)?, Some(net(range)?))),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_body_means_no_arguments() {
        let r: RequestPool = parse(b"").unwrap();
        assert_eq!(r.pool, "");
        let r: NetworkRef = parse(b"  \n").unwrap();
        assert_eq!(r.network_id, "");
        assert!(parse::<NetworkRef>(b"{")
            .unwrap_err()
            .contains("cannot read"));
    }

    #[test]
    fn docker_20_10_create_network_is_read() {
        // As dockerd 20.10 sent it for
        // `docker network create -d mvnet --ipam-driver mvnet --subnet 10.103.19.0/24
        //  --gateway 10.103.19.1 -o parent=eth0 --internal --ipv6 --subnet fd00:19::/64 n`.
        let body = br#"{"NetworkID":"4f6c","Options":{"com.docker.network.enable_ipv6":true,"com.docker.network.generic":{"parent":"eth0","mtu":"1400"},"com.docker.network.internal":true},"IPv4Data":[{"AddressSpace":"mvnet-local","Gateway":"10.103.19.1/24","Pool":"10.103.19.0/24","AuxAddresses":{"router":"10.103.19.5/24"}}],"IPv6Data":[{"AddressSpace":"mvnet-local","Gateway":"fd00:19::1/64","Pool":"fd00:19::/64"}]}"#;
        let r: CreateNetwork = parse(body).unwrap();
        assert_eq!(r.network_id, "4f6c");
        assert!(r.flag(ENABLE_IPV6) && r.flag(INTERNAL));
        let mut o = r.generic_options();
        o.sort();
        assert_eq!(
            o,
            vec![
                ("mtu".to_string(), "1400".to_string()),
                ("parent".to_string(), "eth0".to_string())
            ]
        );
        assert_eq!(r.ipv4_data[0].aux_addresses["router"], "10.103.19.5/24");
        assert_eq!(r.ipv6_data[0].pool, "fd00:19::/64");
    }

    #[test]
    fn create_endpoint_and_join_are_read() {
        let r: CreateEndpoint = parse(br#"{"NetworkID":"n","EndpointID":"e","Interface":{"Address":"10.103.19.2/24","AddressIPv6":"","MacAddress":""},"Options":{"com.docker.network.endpoint.exposedports":[],"com.docker.network.portmap":[]}}"#).unwrap();
        let i = r.interface.unwrap();
        assert_eq!(i.address, "10.103.19.2/24");
        assert_eq!(i.mac_address, "");
        let j: Join = parse(br#"{"NetworkID":"n","EndpointID":"e","SandboxKey":"/var/run/docker/netns/0123456789ab","Options":null}"#).unwrap();
        assert_eq!(j.endpoint_id, "e");
    }

    #[test]
    fn errors_use_each_apis_key() {
        assert_eq!(Api::of("/IpamDriver.RequestAddress"), Some(Api::Ipam));
        assert_eq!(Api::of("/NetworkDriver.Join"), Some(Api::Network));
        assert_eq!(Api::of("/VolumeDriver.Mount"), None);
        assert_eq!(Api::Ipam.error("x")["Error"], "x");
        assert_eq!(Api::Network.error("x")["Err"], "x");
    }

    #[test]
    fn pool_ids_round_trip() {
        for (pool, sub) in [
            ("10.1.0.0/16", ""),
            ("10.1.0.0/16", "10.1.2.0/24"),
            ("fd00:1::/64", ""),
            ("fd00:1::/64", "fd00:1::80/121"),
        ] {
            let (p, s) = parse_pool_id(&pool_id(pool, sub)).unwrap();
            assert_eq!(p.to_string(), pool);
            assert_eq!(s.map(|s| s.to_string()).unwrap_or_default(), sub);
        }
        assert!(parse_pool_id("default:10.0.0.0/8").is_err());
        assert!(parse_pool_id("mvnet:nonsense").is_err());
    }
}
