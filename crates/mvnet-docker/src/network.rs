//! Docker's `CreateNetwork` as mvnet's network request (pure, no kernel): the same options
//! `docker network create -d macvlan|ipvlan` takes, plus mvnet's own.

use std::collections::BTreeMap;

use mvnet_core::model::{CreateNetworkRequest, DOCKER_LABEL};

use crate::protocol::{CreateNetwork, IpamData, ENABLE_IPV6, INTERNAL};

/// The address space mvnet's IPAM announces; a network whose pools carry it gets its
/// addresses from mvnet's store (held until Docker's `ReleaseAddress`).
pub const LOCAL_SPACE: &str = "mvnet-local";
pub const GLOBAL_SPACE: &str = "mvnet-global";
/// Records which IPAM serves a Docker network ("mvnet", or Docker's own).
pub const IPAM_LABEL: &str = "mvnet.docker.ipam";

/// `-o` keys the plugin itself reads; every other key goes to mvnet's option parser, which
/// knows Docker's (`parent`, `macvlan_mode`, `ipvlan_mode`, `ipvlan_flag`, `mtu`) and
/// mvnet's (`vlan`, `probe_ms`).
const DRIVER_KEY: &str = "driver";
const HOST_ACCESS_KEY: &str = "host_access";
const HOST_ACCESS_IP_KEY: &str = "host_access_ip";
/// `-o dhcp=on`: addresses from the LAN's DHCP server (with `--ipam-driver null`).
const DHCP_KEY: &str = "dhcp";
/// The address space of Docker's built-in null IPAM (its one pool is 0.0.0.0/0).
const NULL_SPACE: &str = "null";

/// The mvnet request for Docker's `CreateNetwork`. `ranges` maps a pool to the
/// `--ip-range` its `RequestPool` carried (Docker does not repeat it here).
pub fn request(
    r: &CreateNetwork,
    ranges: &BTreeMap<String, String>,
) -> Result<CreateNetworkRequest, String> {
    if r.network_id.is_empty() {
        return Err("CreateNetwork without a NetworkID".into());
    }
    let mut driver = String::new();
    let mut host_access = false;
    let mut host_access_ip = None;
    let mut dhcp = false;
    let mut options = Vec::new();
    for (k, v) in r.generic_options() {
        match k.as_str() {
            DRIVER_KEY => driver = v,
            HOST_ACCESS_KEY => {
                host_access = match v.as_str() {
                    "on" | "true" | "1" | "yes" => true,
                    "off" | "false" | "0" | "no" => false,
                    _ => {
                        return Err(format!(
                            "-o host_access={} is not on or off; use -o host_access=on",
                            mvnet_core::quote(&v)
                        ))
                    }
                }
            }
            HOST_ACCESS_IP_KEY => host_access_ip = Some(v),
            DHCP_KEY => {
                dhcp = match v.as_str() {
                    "on" | "true" | "1" | "yes" => true,
                    "off" | "false" | "0" | "no" => false,
                    _ => {
                        return Err(format!(
                            "-o dhcp={} is not on or off; use -o dhcp=on",
                            mvnet_core::quote(&v)
                        ))
                    }
                }
            }
            _ => options.push(format!("{k}={v}")),
        }
    }
    // Docker's ipvlan options select mvnet's ipvlan driver without `-o driver=ipvlan`.
    if driver.is_empty()
        && options
            .iter()
            .any(|o| o.starts_with("ipvlan_mode=") || o.starts_with("ipvlan_flag="))
    {
        driver = "ipvlan".into();
    }
    let mut req = CreateNetworkRequest {
        id: Some(r.network_id.clone()),
        name: default_name(&r.network_id),
        driver,
        ipv6: r.flag(ENABLE_IPV6),
        internal: r.flag(INTERNAL),
        options,
        host_access,
        host_access_ip,
        labels: vec![format!("{DOCKER_LABEL}=")],
        ..Default::default()
    };
    let null_ipam = r
        .ipv4_data
        .iter()
        .any(|d| d.address_space == NULL_SPACE || d.pool == "0.0.0.0/0");
    match (null_ipam, dhcp) {
        (true, true) => {
            // The LAN's DHCP server hands out the addresses; the driver returns each one
            // from CreateEndpoint (Docker's null IPAM has none to give).
            req.ipam_driver = "dhcp".into();
            req.labels.push(format!("{IPAM_LABEL}=dhcp"));
            return Ok(req);
        }
        (true, false) => {
            return Err("with --ipam-driver null mvnet has no addresses to give: add -o dhcp=on to lease them from the LAN's DHCP server, or use --ipam-driver mvnet with a --subnet".into())
        }
        (false, true) => {
            return Err("-o dhcp=on needs --ipam-driver null (the addresses come from the LAN's DHCP server, not from an IPAM pool); drop --subnet and --ipam-driver mvnet".into())
        }
        (false, false) => {}
    }
    let ours = r
        .ipv4_data
        .iter()
        .chain(&r.ipv6_data)
        .any(|d| d.address_space == LOCAL_SPACE || d.address_space == GLOBAL_SPACE);
    req.labels.push(format!(
        "{IPAM_LABEL}={}",
        if ours { "mvnet" } else { "docker" }
    ));
    for d in r.ipv4_data.iter().chain(&r.ipv6_data) {
        add_pool(&mut req, d, ranges)?;
    }
    if r.ipv4_data.is_empty() {
        return Err("Docker sent no IPv4 subnet; give --subnet".into());
    }
    Ok(req)
}

/// The name a Docker network has in mvnet until the plugin learns Docker's own.
pub fn default_name(id: &str) -> String {
    format!("docker-{}", mvnet_core::ids::short(id))
}

fn add_pool(
    req: &mut CreateNetworkRequest,
    d: &IpamData,
    ranges: &BTreeMap<String, String>,
) -> Result<(), String> {
    let pool: ipnet::IpNet = d.pool.parse().map_err(|_| {
        format!(
            "Docker sent pool {}, not a subnet",
            mvnet_core::quote(&d.pool)
        )
    })?;
    req.subnets.push(pool.to_string());
    if !d.gateway.is_empty() {
        req.gateways.push(strip_len(&d.gateway).to_string());
    }
    if let Some(range) = ranges.get(&pool.to_string()) {
        req.ip_ranges.push(range.clone());
    }
    for (name, ip) in &d.aux_addresses {
        req.aux_addresses.push(format!("{name}={}", strip_len(ip)));
    }
    Ok(())
}

/// `10.0.0.1/24` -> `10.0.0.1` (Docker gives addresses with their prefix length).
pub fn strip_len(s: &str) -> &str {
    s.split('/').next().unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::parse;

    fn create(body: &str) -> CreateNetwork {
        parse(body.as_bytes()).unwrap()
    }

    #[test]
    fn the_seeds_network_becomes_an_mvnet_request() {
        let r = create(
            r#"{"NetworkID":"0123456789abcdef","Options":{"com.docker.network.enable_ipv6":false,"com.docker.network.generic":{"parent":"eth0"}},"IPv4Data":[{"AddressSpace":"mvnet-local","Gateway":"10.103.19.1/24","Pool":"10.103.19.0/24"}]}"#,
        );
        let mut ranges = BTreeMap::new();
        ranges.insert("10.103.19.0/24".to_string(), "10.103.19.128/25".to_string());
        let q = request(&r, &ranges).unwrap();
        assert_eq!(q.id.as_deref(), Some("0123456789abcdef"));
        assert_eq!(q.name, "docker-0123456789ab");
        assert_eq!(q.subnets, ["10.103.19.0/24"]);
        assert_eq!(q.gateways, ["10.103.19.1"]);
        assert_eq!(q.ip_ranges, ["10.103.19.128/25"]);
        assert_eq!(q.options, ["parent=eth0"]);
        assert!(q.labels.contains(&"mvnet.docker.ipam=mvnet".to_string()));
        // What mvnet's validation makes of it.
        let v = q.validate().unwrap();
        assert_eq!(v.options.parent, "eth0");
    }

    #[test]
    fn ipvlan_options_select_the_ipvlan_driver() {
        let r = create(
            r#"{"NetworkID":"ab","Options":{"com.docker.network.generic":{"parent":"eth0","ipvlan_mode":"l3"}},"IPv4Data":[{"AddressSpace":"LocalDefault","Gateway":"10.1.0.1/24","Pool":"10.1.0.0/24"}]}"#,
        );
        let q = request(&r, &BTreeMap::new()).unwrap();
        assert_eq!(q.driver, "ipvlan");
        assert!(q.labels.contains(&"mvnet.docker.ipam=docker".to_string()));
        assert!(q.validate().is_ok());
    }

    #[test]
    fn mvnet_options_and_aux_addresses_and_internal() {
        let r = create(
            r#"{"NetworkID":"ab","Options":{"com.docker.network.internal":true,"com.docker.network.generic":{"parent":"eth0","host_access":"on","probe_ms":"0","macvlan_mode":"private"}},"IPv4Data":[{"AddressSpace":"mvnet-local","Gateway":"10.1.0.1/24","Pool":"10.1.0.0/24","AuxAddresses":{"printer":"10.1.0.9/24"}}]}"#,
        );
        let q = request(&r, &BTreeMap::new()).unwrap();
        assert!(q.host_access && q.internal);
        assert_eq!(q.aux_addresses, ["printer=10.1.0.9"]);
        let mut o = q.options.clone();
        o.sort();
        assert_eq!(o, ["macvlan_mode=private", "parent=eth0", "probe_ms=0"]);
        let v = q.validate().unwrap();
        assert!(v.pools[0].aux.contains_key("printer"));
    }

    #[test]
    fn dhcp_on_with_the_null_ipam_makes_a_dhcp_network() {
        let body = |opts: &str, space: &str, pool: &str| {
            create(&format!(
                r#"{{"NetworkID":"ab","Options":{{"com.docker.network.generic":{{"parent":"eth0"{opts}}}}},"IPv4Data":[{{"AddressSpace":"{space}","Pool":"{pool}"}}]}}"#
            ))
        };
        let q = request(
            &body(r#","dhcp":"on""#, "null", "0.0.0.0/0"),
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(q.ipam_driver, "dhcp");
        assert!(q.subnets.is_empty());
        assert!(q.labels.contains(&"mvnet.docker.ipam=dhcp".to_string()));
        let v = q.validate().unwrap();
        assert!(v.dhcp);
        let e = request(&body("", "null", "0.0.0.0/0"), &BTreeMap::new()).unwrap_err();
        assert!(e.contains("-o dhcp=on"), "{e}");
        let e = request(
            &body(r#","dhcp":"on""#, "mvnet-local", "10.1.0.0/24"),
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(e.contains("--ipam-driver null"), "{e}");
        let e = request(
            &body(r#","dhcp":"maybe""#, "null", "0.0.0.0/0"),
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(e.contains("-o dhcp=on"), "{e}");
    }

    #[test]
    fn bad_options_are_refused_by_name() {
        let r = create(
            r#"{"NetworkID":"ab","Options":{"com.docker.network.generic":{"parent":"eth0","host_access":"maybe"}},"IPv4Data":[{"Pool":"10.1.0.0/24"}]}"#,
        );
        assert!(request(&r, &BTreeMap::new())
            .unwrap_err()
            .contains("host_access=on"));
        let r = create(
            r#"{"NetworkID":"ab","Options":{"com.docker.network.generic":{"parent":"eth0","macvlan_mode":"bogus"}},"IPv4Data":[{"Pool":"10.1.0.0/24"}]}"#,
        );
        let e = request(&r, &BTreeMap::new())
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }
}
