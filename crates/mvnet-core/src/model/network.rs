use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::MacAddr;
use crate::ipam::Pool;
use crate::{invalid, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    Macvlan,
    /// Shares the parent's MAC: for Wi-Fi parents, clouds and switches that limit MACs.
    Ipvlan,
}

impl FromStr for Driver {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "macvlan" => Ok(Driver::Macvlan),
            "ipvlan" => Ok(Driver::Ipvlan),
            _ => Err(invalid!(
                "unknown driver '{s}'; mvnet supports: macvlan, ipvlan"
            )),
        }
    }
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Driver::Macvlan => "macvlan",
            Driver::Ipvlan => "ipvlan",
        })
    }
}

/// An enum whose values are fixed words: parsed from them and printed as them, with
/// Docker's wording when a word is not valid.
macro_rules! word_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal, $noun:literal, $driver:literal,
     default $default:ident, { $($(#[$vdoc:meta])* $variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            pub const ALL: &'static [&'static str] = &[$($word),+];
        }

        impl FromStr for $name {
            type Err = crate::Error;
            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($word => Ok(Self::$variant),)+
                    _ => Err(invalid!(
                        "requested {} '{s}' is not valid, '{}' {} is the {} driver default; valid {}s: {}",
                        $what, $name::$default, $noun, $driver, $noun, Self::ALL.join(", ")
                    )),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self {
                    $(Self::$variant => $word,)+
                })
            }
        }
    };
}

word_enum!(
    /// The kernel's four macvlan modes (see the seed): who may talk to whom on one parent.
    MacvlanMode, "macvlan mode", "mode", "macvlan", default Bridge, {
        /// Sub-interfaces talk to each other inside the host, without a Linux bridge.
        #[default]
        Bridge = "bridge",
        /// Sub-interfaces cannot talk to each other at all.
        Private = "private",
        /// Sub-interfaces talk only through an external (hairpinning, 802.1Qbg) switch.
        Vepa = "vepa",
        /// One sub-interface owns the parent exclusively.
        Passthru = "passthru",
    }
);

word_enum!(
    /// IPVLAN modes: l2 switches by MAC like a bridge; l3/l3s route by IP (no ARP, no
    /// broadcast), l3s with the host's netfilter (conntrack) in the path.
    IpvlanMode, "ipvlan mode", "mode", "ipvlan", default L2, {
        #[default]
        L2 = "l2",
        L3 = "l3",
        L3s = "l3s",
    }
);

word_enum!(
    /// IPVLAN flags (Docker's `ipvlan_flag`): traffic between sub-interfaces of one parent.
    IpvlanFlag, "ipvlan flag", "flag", "ipvlan", default Bridge, {
        #[default]
        Bridge = "bridge",
        Private = "private",
        Vepa = "vepa",
    }
);

/// Driver options (`-o key=value`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NetworkOptions {
    pub parent: String,
    pub macvlan_mode: MacvlanMode,
    pub mtu: Option<u32>,
    #[serde(default)]
    pub ipvlan_mode: IpvlanMode,
    #[serde(default)]
    pub ipvlan_flag: IpvlanFlag,
    /// `--host-access`: a host-side macvlan shim (`mvh-<id>`) lets the host reach the
    /// network's containers, which the kernel otherwise forbids.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_access: bool,
    /// `--host-access-ip`: the shim's address (default: the next free one from IPAM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_access_ip: Option<IpAddr>,
    /// `-o vlan=VID`: a cleaner spelling of `-o parent=BASE.VID`; folded into `parent`
    /// before the network is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// `-o probe_ms=N`: how long to listen for an answer to the ARP probe (and IPv6 DAD)
    /// before an address is used; 0 turns probing off. Unset means the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_ms: Option<u32>,
    /// Set when the parent is itself a macvlan: the device under it, whose LAN (and so
    /// address book) the network shares. Found by mvnet, not an option a user sets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lan: Option<String>,
    /// `-o dhcp_timeout=S` (networks with `--ipam-driver dhcp`): how long an attach waits
    /// for the LAN's DHCP server before it fails (default 10 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp_timeout: Option<u32>,
}

impl NetworkOptions {
    pub const KEYS: [&'static str; 6] = [
        "parent",
        "macvlan_mode",
        "mtu",
        "vlan",
        "probe_ms",
        "dhcp_timeout",
    ];
    pub const IPVLAN_KEYS: [&'static str; 6] = [
        "parent",
        "ipvlan_mode",
        "ipvlan_flag",
        "mtu",
        "vlan",
        "dhcp_timeout",
    ];
    /// How long a DHCP attach waits for a lease when `-o dhcp_timeout` is not given.
    pub const DEFAULT_DHCP_TIMEOUT_S: u32 = 10;
    /// The conflict-probe window when `-o probe_ms` is not given.
    pub const DEFAULT_PROBE_MS: u32 = 30;
    /// Longest allowed probe window: attach waits this long for every address it tries.
    pub const MAX_PROBE_MS: u32 = 5000;

    /// How long an attach waits for a DHCP lease.
    pub fn dhcp_wait(&self) -> std::time::Duration {
        std::time::Duration::from_secs(
            self.dhcp_timeout.unwrap_or(Self::DEFAULT_DHCP_TIMEOUT_S) as u64
        )
    }

    /// The probe window for this network's endpoints (`None`: probing is off).
    pub fn probe_window(&self) -> Option<std::time::Duration> {
        match self.probe_ms.unwrap_or(Self::DEFAULT_PROBE_MS) {
            0 => None,
            ms => Some(std::time::Duration::from_millis(ms as u64)),
        }
    }

    /// Parses `-o` pairs for `driver`. The parent may still be empty: the caller fills in
    /// the default.
    pub fn parse_for(pairs: &[String], driver: Driver) -> Result<NetworkOptions> {
        let keys: &[&str] = match driver {
            Driver::Macvlan => &Self::KEYS,
            Driver::Ipvlan => &Self::IPVLAN_KEYS,
        };
        for pair in pairs {
            let (k, _) = split_kv(pair, "-o")?;
            if k == "probe_ms" && driver == Driver::Ipvlan {
                return Err(invalid!(
                    "-o probe_ms is for macvlan networks: an ipvlan port shares the parent's MAC and receives frames by destination IP, so the answer to a probe cannot reach it; remove -o probe_ms"
                ));
            }
            if !keys.contains(&k) {
                return Err(invalid!(
                    "unknown driver option '{k}'; {driver} accepts: {}",
                    keys.join(", ")
                ));
            }
        }
        Self::parse(pairs)
    }

    /// Parses `-o` pairs of any driver (see `parse_for` for the per-driver check).
    pub fn parse(pairs: &[String]) -> Result<NetworkOptions> {
        let mut o = NetworkOptions::default();
        for pair in pairs {
            let (k, v) = split_kv(pair, "-o")?;
            match k {
                "parent" => {
                    if v.is_empty() {
                        return Err(invalid!(
                            "-o parent= needs an interface name, e.g. -o parent=eth0"
                        ));
                    }
                    check_ifname(v, "-o parent")?;
                    o.parent = v.to_string();
                }
                "macvlan_mode" => o.macvlan_mode = v.parse()?,
                "ipvlan_mode" => o.ipvlan_mode = v.parse()?,
                "ipvlan_flag" => o.ipvlan_flag = v.parse()?,
                "vlan" => o.vlan = Some(parse_vid(v)?),
                "probe_ms" => {
                    let ms: u32 = v.parse().map_err(|_| {
                        invalid!("invalid -o probe_ms={v}: expected milliseconds such as 30 (0 turns probing off)")
                    })?;
                    if ms > Self::MAX_PROBE_MS {
                        return Err(invalid!(
                            "invalid -o probe_ms={v}: at most {} ms (every attach waits this long per address)",
                            Self::MAX_PROBE_MS
                        ));
                    }
                    o.probe_ms = Some(ms);
                }
                "dhcp_timeout" => {
                    let t: u32 = v
                        .parse()
                        .ok()
                        .filter(|t| (1..=600).contains(t))
                        .ok_or_else(|| {
                            invalid!("invalid -o dhcp_timeout={v}: expected seconds from 1 to 600")
                        })?;
                    o.dhcp_timeout = Some(t);
                }
                "mtu" => {
                    let mtu: u32 = v.parse().map_err(|_| {
                        invalid!("invalid -o mtu={v}: expected a number such as 1500")
                    })?;
                    if !(68..=65535).contains(&mtu) {
                        return Err(invalid!(
                            "invalid -o mtu={v}: the MTU must be between 68 and 65535"
                        ));
                    }
                    o.mtu = Some(mtu);
                }
                _ => {
                    return Err(invalid!(
                        "unknown driver option '{k}'; macvlan accepts: {}",
                        Self::KEYS.join(", ")
                    ))
                }
            }
        }
        Ok(o)
    }

    /// Options as Docker prints them under "Options".
    pub fn to_map(&self, driver: Driver) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert("parent".into(), self.parent.clone());
        match driver {
            Driver::Macvlan => {
                m.insert("macvlan_mode".into(), self.macvlan_mode.to_string());
            }
            Driver::Ipvlan => {
                m.insert("ipvlan_mode".into(), self.ipvlan_mode.to_string());
                m.insert("ipvlan_flag".into(), self.ipvlan_flag.to_string());
            }
        }
        if let Some(mtu) = self.mtu {
            m.insert("mtu".into(), mtu.to_string());
        }
        if let Some(ms) = self.probe_ms {
            m.insert("probe_ms".into(), ms.to_string());
        }
        m
    }
}

/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

fn parse_vid(v: &str) -> Result<u16> {
    match v.parse::<i64>() {
        Ok(n) if (1..=4094).contains(&n) => Ok(n as u16),
        Ok(n) => Err(invalid!("vlan id must be between 1-4094, received: {n}")),
        // Docker's words (drivers/macvlan/macvlan_setup.go).
        Err(_) => Err(invalid!(
            "unable to parse a valid vlan id from: {v} (ex. eth0.10 for vlan 10)"
        )),
    }
}

/// Docker's reading of a parent name that does not exist: `BASE.VID` names an 802.1Q
/// sub-interface to create. `Ok(None)` means a plain name (no dot).
pub fn parse_vlan_parent(name: &str) -> Result<Option<(String, u16)>> {
    let Some((base, vid)) = name.split_once('.') else {
        return Ok(None);
    };
    // Docker's rule and words: exactly one dot, a name before it.
    if base.is_empty() || vid.contains('.') {
        return Err(invalid!(
            "required interface name format is: name.vlan_id, ex. eth0.10 for vlan 10, instead received {name}"
        ));
    }
    let vid = parse_vid(vid)?;
    if name.len() > MAX_IFNAME {
        return Err(invalid!(
            "interface name {name} is longer than {MAX_IFNAME} characters; use a shorter parent name"
        ));
    }
    Ok(Some((base.to_string(), vid)))
}

/// `-o vlan=VID` with `-o parent=BASE` yields the same name as `-o parent=BASE.VID`.
pub fn fold_vlan_option(o: &mut NetworkOptions) -> Result<()> {
    if let Some(vid) = o.vlan.take() {
        if o.parent.contains('.') {
            return Err(invalid!(
                "-o vlan={vid} needs a plain parent such as -o parent=eth0, not {}",
                o.parent
            ));
        }
        o.parent = format!("{}.{vid}", o.parent);
        parse_vlan_parent(&o.parent)?;
    }
    Ok(())
}

/// `key=value` with a message naming the flag when the `=` is missing.
pub fn split_kv<'a>(pair: &'a str, flag: &str) -> Result<(&'a str, &'a str)> {
    pair.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| invalid!("invalid {flag} '{pair}': expected key=value"))
}

/// One subnet of a network as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSpec {
    pub subnet: IpNet,
    pub gateway: Option<IpAddr>,
    pub ip_range: Option<IpNet>,
    /// `--aux-address name=IP`, reserved and never handed out.
    #[serde(default)]
    pub aux: BTreeMap<String, IpAddr>,
    /// CNI `rangeStart` / `rangeEnd` (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_start: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_end: Option<IpAddr>,
}

impl PoolSpec {
    pub fn pool(&self) -> Pool {
        // Specs are validated at creation, so rebuilding the pool cannot fail.
        Pool {
            subnet: self.subnet,
            gateway: self.gateway,
            range: self.ip_range,
            aux: self.aux.values().copied().collect(),
            start: self.range_start,
            end: self.range_end,
        }
    }
}

/// A network as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub driver: Driver,
    pub created: String,
    pub pools: Vec<PoolSpec>,
    pub internal: bool,
    pub ipv6: bool,
    /// False for an IPv6-only network (`--ipv4=false`). Stored only when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ipv4_disabled: bool,
    /// `--ipam-driver dhcp`: endpoints lease their IPv4 address from the LAN's DHCP server
    /// (the network has no pools of its own). Stored only when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dhcp: bool,
    /// `--ipam-opt pool=NAME`: the network's addresses are shared with every host on the
    /// LAN that uses the same pool, through etcd (see `crate::fleet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetPool>,
    pub labels: BTreeMap<String, String>,
    pub options: NetworkOptions,
}

/// A shared address pool: its name (the same on every host), the etcd cluster that
/// records who holds which address, and how long a silent host keeps its addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetPool {
    pub pool: String,
    /// etcd client URLs; empty: `MVNET_ETCD` of the process at hand.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub etcd: Vec<String>,
    /// Seconds after a host was last seen alive before its addresses may be reused (and
    /// then only those the conflict probe finds silent).
    pub grace_secs: u32,
    /// Addresses this host claims ahead (Calico-style, one at a time): an attach takes one
    /// with no etcd round trip, and the host tops them up after it answers. 0: off.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub spares: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The most spares one host may hold in one pool.
pub const MAX_FLEET_SPARES: u32 = 64;

/// A host's addresses stay its own this long after it was last seen, by default.
pub const DEFAULT_FLEET_GRACE_SECS: u32 = 60;

impl FleetPool {
    /// `--ipam-opt KEY=VALUE` pairs (`pool`, `etcd`, `grace`, `spares`); `None` without
    /// `pool`.
    pub fn from_ipam_options(given: &[String]) -> Result<Option<FleetPool>> {
        let mut pool = None;
        let mut etcd = Vec::new();
        let mut grace = None;
        let mut spares = None;
        for o in given {
            let (k, v) = split_kv(o, "--ipam-opt")?;
            match k {
                "pool" => {
                    let ok = !v.is_empty()
                        && v.len() <= 64
                        && v.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
                    if !ok {
                        return Err(invalid!(
                            "invalid --ipam-opt pool={}: a pool name is 1-64 letters, digits, '.', '_' or '-'",
                            crate::quote(v)
                        ));
                    }
                    pool = Some(v.to_string());
                }
                "etcd" => etcd = parse_etcd_endpoints(v)?,
                "grace" => {
                    grace = Some(v.parse::<u32>().ok().filter(|g| (1..=86_400).contains(g)).ok_or_else(
                        || invalid!("invalid --ipam-opt grace={}: seconds, 1 to 86400", crate::quote(v)),
                    )?)
                }
                "spares" => {
                    spares = Some(v.parse::<u32>().ok().filter(|n| *n <= MAX_FLEET_SPARES).ok_or_else(
                        || invalid!("invalid --ipam-opt spares={}: a count, 0 to {MAX_FLEET_SPARES}", crate::quote(v)),
                    )?)
                }
                other => {
                    return Err(invalid!(
                        "unknown --ipam-opt {}; mvnet takes pool=NAME, etcd=URL[,URL...], grace=SECONDS and spares=COUNT",
                        crate::quote(other)
                    ))
                }
            }
        }
        match pool {
            Some(pool) => Ok(Some(FleetPool {
                pool,
                etcd,
                grace_secs: grace.unwrap_or(DEFAULT_FLEET_GRACE_SECS),
                spares: spares.unwrap_or(0),
            })),
            None if !etcd.is_empty() || grace.is_some() || spares.is_some() => Err(invalid!(
                "--ipam-opt etcd=, grace= and spares= belong to a shared pool: add --ipam-opt pool=NAME (the same name on every host)"
            )),
            None => Ok(None),
        }
    }
}

/// `http://host:port,host:port`: etcd client URLs (http only: mvnet does not do TLS yet).
pub fn parse_etcd_endpoints(v: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let hostport = e.strip_prefix("http://").unwrap_or(e);
        let valid = !e.starts_with("https://")
            && hostport
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
            && !hostport.contains('/');
        if !valid {
            return Err(invalid!(
                "invalid etcd endpoint {}: expected http://HOST:PORT (several separated by commas)",
                crate::quote(e)
            ));
        }
        out.push(format!("http://{hostport}"));
    }
    if out.is_empty() {
        return Err(invalid!(
            "no etcd endpoint given: expected http://HOST:PORT (several separated by commas)"
        ));
    }
    Ok(out)
}

/// The label of a network the Docker plugin created (its id is Docker's network id); the
/// value is the network's name in Docker once known.
pub const DOCKER_LABEL: &str = "mvnet.docker";

impl Network {
    /// Whether the Docker plugin made this network: Docker owns it, so only
    /// `docker network rm` removes it.
    pub fn docker_owned(&self) -> bool {
        self.labels.contains_key(DOCKER_LABEL)
    }

    /// Whether endpoints get IPv4 addresses (Docker's EnableIPv4).
    pub fn ipv4_enabled(&self) -> bool {
        !self.ipv4_disabled
    }

    /// The L2 domain an address must be unique in: networks sharing a parent share a LAN,
    /// and so do networks on a macvlan and on that macvlan's own lower device.
    pub fn address_domain(&self) -> &str {
        self.options.lan.as_deref().unwrap_or(&self.options.parent)
    }
}

/// What `network create` asks for, before validation.
#[derive(Debug, Clone, Default)]
pub struct CreateNetworkRequest {
    /// The id to give the network (a front end whose runtime names networks itself, like
    /// Docker); `None`: a new one.
    pub id: Option<String>,
    pub name: String,
    pub driver: String,
    pub subnets: Vec<String>,
    pub gateways: Vec<String>,
    pub ip_ranges: Vec<String>,
    pub aux_addresses: Vec<String>,
    pub ipv6: bool,
    /// `--ipv4=false`: an IPv6-only network.
    pub ipv4_disabled: bool,
    pub internal: bool,
    pub labels: Vec<String>,
    pub options: Vec<String>,
    pub host_access: bool,
    pub host_access_ip: Option<String>,
    /// `--ipam-driver`: "" or "default" (mvnet's store), or "dhcp" (the LAN's server).
    pub ipam_driver: String,
    /// `--ipam-opt KEY=VALUE` (Docker's flag): `pool=NAME`, `etcd=URLS`, `grace=SECONDS`.
    pub ipam_options: Vec<String>,
}

/// `--label KEY=VALUE` (or `KEY`, an empty value), as Docker takes them.
pub fn parse_labels(given: &[String]) -> Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for l in given {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        if k.is_empty() {
            return Err(invalid!(
                "invalid --label {}: expected key=value",
                crate::quote(l)
            ));
        }
        labels.insert(k.to_string(), v.to_string());
    }
    Ok(labels)
}

/// The validated parts of a request that need no kernel: driver, pools, labels, options.
#[derive(Debug, Clone)]
pub struct ValidatedRequest {
    pub driver: Driver,
    pub pools: Vec<PoolSpec>,
    pub labels: BTreeMap<String, String>,
    pub options: NetworkOptions,
    pub ipv6: bool,
    pub ipv4_disabled: bool,
    /// `--ipam-driver dhcp`.
    pub dhcp: bool,
    /// `--ipam-opt pool=`.
    pub fleet: Option<FleetPool>,
    /// Things to tell the user that do not stop the create (an unusual subnet, say).
    pub warnings: Vec<String>,
}

impl CreateNetworkRequest {
    /// Pure validation: everything but the parent's existence and MTU (the kernel's part).
    pub fn validate(&self) -> Result<ValidatedRequest> {
        check_name(&self.name, "network")?;
        let driver: Driver = if self.driver.is_empty() {
            Driver::Macvlan
        } else {
            self.driver.parse()?
        };
        let dhcp = match self.ipam_driver.as_str() {
            "" | "default" => false,
            "dhcp" => true,
            other => {
                return Err(invalid!(
                    "unknown --ipam-driver {}; mvnet has default (its own address book) and dhcp (the LAN's DHCP server)",
                    crate::quote(other)
                ))
            }
        };
        let fleet = FleetPool::from_ipam_options(&self.ipam_options)?;
        if dhcp {
            if fleet.is_some() {
                return Err(invalid!(
                    "--ipam-opt pool= shares mvnet's own address book through etcd; with --ipam-driver dhcp the LAN's DHCP server shares the addresses already: remove one of them"
                ));
            }
            return self.validate_dhcp(driver);
        }
        if self.subnets.is_empty() {
            return Err(invalid!(
                "a macvlan network needs the LAN's subnet: add --subnet (and --gateway), e.g. --subnet=10.103.19.0/24 --gateway=10.103.19.1, or let the LAN's DHCP server give addresses: --ipam-driver dhcp"
            ));
        }
        let subnets: Vec<IpNet> = self
            .subnets
            .iter()
            .map(|s| parse_net(s, "--subnet"))
            .collect::<Result<_>>()?;
        // Gateways, ranges and aux addresses go to the subnet that contains them; one that
        // no subnet contains is reported against the subnet in the same position.
        let mut gateways: Vec<Option<IpAddr>> = vec![None; subnets.len()];
        for (i, g) in self.gateways.iter().enumerate() {
            let ip: IpAddr = g
                .parse()
                .map_err(|_| invalid!("invalid --gateway '{g}': expected an IP address"))?;
            let slot = owner(&subnets, |n| n.contains(&ip), i, ip.is_ipv6());
            if gateways[slot].is_some() && subnets[slot].contains(&ip) {
                return Err(invalid!(
                    "two gateways for subnet {}; give one --gateway per --subnet",
                    subnets[slot]
                ));
            }
            gateways[slot] = Some(ip);
        }
        let mut ranges: Vec<Option<IpNet>> = vec![None; subnets.len()];
        for (i, r) in self.ip_ranges.iter().enumerate() {
            let net = parse_net(r, "--ip-range")?;
            let slot = owner(&subnets, |n| n.contains(&net), i, net.network().is_ipv6());
            ranges[slot] = Some(net);
        }
        let mut aux: Vec<BTreeMap<String, IpAddr>> = vec![BTreeMap::new(); subnets.len()];
        for (i, a) in self.aux_addresses.iter().enumerate() {
            let (name, ip) = split_kv(a, "--aux-address")?;
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| invalid!("invalid --aux-address '{a}': expected name=IP"))?;
            let slot = owner(&subnets, |n| n.contains(&ip), i, ip.is_ipv6());
            aux[slot].insert(name.to_string(), ip);
        }
        let mut warnings = Vec::new();
        for subnet in &subnets {
            if let Some(what) = special_subnet(subnet)? {
                warnings.push(format!("subnet {subnet} is {what}"));
            }
        }
        let mut pools = Vec::new();
        for (i, subnet) in subnets.iter().enumerate() {
            let spec = PoolSpec {
                subnet: *subnet,
                gateway: gateways[i],
                ip_range: ranges[i],
                aux: aux[i].clone(),
                range_start: None,
                range_end: None,
            };
            let pool = Pool::new(spec.subnet, spec.gateway, spec.ip_range, spec.pool().aux)?;
            for earlier in &pools {
                crate::ipam::check_overlap(&pool, &PoolSpec::pool(earlier), &self.name).map_err(
                    |_| {
                        invalid!(
                            "subnets {} and {} of this network overlap; give distinct subnets",
                            earlier.subnet,
                            subnet
                        )
                    },
                )?;
            }
            pools.push(spec);
        }
        let has_v6 = pools.iter().any(|p| p.subnet.network().is_ipv6());
        let has_v4 = pools.iter().any(|p| p.subnet.network().is_ipv4());
        // As current Docker: an IPv6 subnet turns IPv6 on by itself.
        let ipv6 = self.ipv6 || has_v6;
        if self.ipv4_disabled {
            if has_v4 {
                return Err(invalid!(
                    "--ipv4=false makes an IPv6-only network, but an IPv4 --subnet was given; remove one of them"
                ));
            }
            if !has_v6 {
                return Err(invalid!(
                    "--ipv4=false needs an IPv6 network: add --ipv6 and an IPv6 --subnet"
                ));
            }
        }
        let labels = parse_labels(&self.labels)?;
        let mut options = NetworkOptions::parse_for(&self.options, driver)?;
        if self.host_access_ip.is_some() && !self.host_access {
            return Err(invalid!("--host-access-ip needs --host-access"));
        }
        options.host_access = self.host_access;
        options.host_access_ip = self
            .host_access_ip
            .as_deref()
            .map(|s| {
                s.parse()
                    .map_err(|_| invalid!("invalid --host-access-ip '{s}': expected an IP address"))
            })
            .transpose()?;
        if let Some(ip) = options.host_access_ip {
            let pool = pools.iter().find(|p| p.subnet.contains(&ip)).ok_or_else(|| {
                invalid!("--host-access-ip {ip} is outside the network's subnets; pick an address inside one")
            })?;
            pool.pool().check_static(ip)?;
        }
        let fleet = fleet.map(|f| check_fleet(f, &pools, ipv6)).transpose()?;
        Ok(ValidatedRequest {
            driver,
            pools,
            labels,
            options,
            ipv6,
            ipv4_disabled: self.ipv4_disabled,
            dhcp: false,
            fleet,
            warnings,
        })
    }
}

/// A shared pool has one IPv4 subnet (what every host must agree on) and no IPv6.
fn check_fleet(f: FleetPool, pools: &[PoolSpec], ipv6: bool) -> Result<FleetPool> {
    if ipv6 || pools.len() != 1 || pools[0].subnet.network().is_ipv6() {
        return Err(invalid!(
            "a shared pool (--ipam-opt pool={}) takes exactly one IPv4 --subnet and no IPv6; give one --subnet",
            f.pool
        ));
    }
    Ok(f)
}

impl CreateNetworkRequest {
    /// `--ipam-driver dhcp`: addresses, gateway and subnet all come from the LAN's server.
    fn validate_dhcp(&self, driver: Driver) -> Result<ValidatedRequest> {
        let given = [
            (!self.subnets.is_empty(), "--subnet"),
            (!self.gateways.is_empty(), "--gateway"),
            (!self.ip_ranges.is_empty(), "--ip-range"),
            (!self.aux_addresses.is_empty(), "--aux-address"),
            (self.host_access, "--host-access"),
        ];
        if let Some((_, flag)) = given.iter().find(|(g, _)| *g) {
            return Err(invalid!(
                "{flag} does not go with --ipam-driver dhcp: the LAN's DHCP server gives the subnet, the gateway and the addresses; remove {flag}"
            ));
        }
        if self.ipv6 || self.ipv4_disabled {
            return Err(invalid!(
                "--ipam-driver dhcp leases IPv4 addresses (DHCPv4); remove --ipv6 / --ipv4=false"
            ));
        }
        let labels = parse_labels(&self.labels)?;
        let options = NetworkOptions::parse_for(&self.options, driver)?;
        if driver == Driver::Ipvlan && options.ipvlan_mode != IpvlanMode::L2 {
            return Err(invalid!(
                "--ipam-driver dhcp needs ipvlan_mode=l2: in l3 modes the LAN's broadcasts (DHCP's replies among them) do not reach the container; use -o ipvlan_mode=l2"
            ));
        }
        Ok(ValidatedRequest {
            driver,
            pools: Vec::new(),
            labels,
            options,
            ipv6: false,
            ipv4_disabled: false,
            dhcp: true,
            fleet: None,
            warnings: Vec::new(),
        })
    }
}

/// Index of the subnet an item belongs to: the containing one, else the `i`-th (or the first
/// of the same family) so that validation reports it against a sensible subnet.
fn owner(subnets: &[IpNet], contains: impl Fn(&IpNet) -> bool, i: usize, v6: bool) -> usize {
    subnets
        .iter()
        .position(&contains)
        .or_else(|| (i < subnets.len()).then_some(i))
        .or_else(|| subnets.iter().position(|n| n.network().is_ipv6() == v6))
        .unwrap_or(0)
}

fn parse_net(s: &str, flag: &str) -> Result<IpNet> {
    s.parse().map_err(|_| {
        invalid!(
            "invalid {flag} '{s}': expected CIDR notation such as 10.103.19.0/24 or 2001:db8::/64"
        )
    })
}

/// An interface name the kernel can take: 1-15 bytes (IFNAMSIZ), no '/', ':' or spaces.
/// Checked before any netlink call (a 64 KiB name would not even fit a netlink attribute).
pub fn check_ifname(name: &str, what: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_IFNAME
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(invalid!(
            "invalid {what} {}: an interface name has 1-{MAX_IFNAME} characters, without '/', ':' or spaces",
            crate::quote(name)
        ))
    }
}

/// What kind of address range a subnet is, when it is not an ordinary LAN's.
/// Err: never a LAN (multicast, loopback, unspecified); Ok(Some): unusual, worth a warning.
pub fn special_subnet(net: &IpNet) -> Result<Option<&'static str>> {
    let refuse = |what: &str| {
        Err(invalid!(
            "subnet {net} is {what} address space, which no LAN uses for hosts; give the LAN's own subnet"
        ))
    };
    match net {
        IpNet::V4(n) => {
            let a = n.network();
            if a.is_multicast() || n.broadcast().is_multicast() {
                return refuse("multicast");
            }
            if a.is_loopback() {
                return refuse("loopback");
            }
            if a.octets()[0] == 0 {
                return refuse("unspecified (0.0.0.0/8, \"this network\")");
            }
            if a.octets()[0] >= 240 {
                return Ok(Some(
                    "reserved for future use (240.0.0.0/4); many systems drop it",
                ));
            }
            if a.is_link_local() {
                return Ok(Some("link-local (169.254.0.0/16), normally self-assigned"));
            }
            if a.is_documentation() {
                return Ok(Some("reserved for documentation"));
            }
            Ok(None)
        }
        IpNet::V6(n) => {
            let a = n.network();
            if a.is_multicast() {
                return refuse("multicast");
            }
            if a.is_loopback() || a.is_unspecified() {
                return refuse(if a.is_loopback() {
                    "loopback"
                } else {
                    "unspecified"
                });
            }
            if (a.segments()[0] & 0xffc0) == 0xfe80 {
                return Ok(Some(
                    "link-local (fe80::/10); every interface has such addresses already",
                ));
            }
            if a.segments()[0] == 0x2001 && a.segments()[1] == 0x0db8 {
                return Ok(Some("reserved for documentation (2001:db8::/32)"));
            }
            Ok(None)
        }
    }
}

/// Names are used in paths and interface-free contexts; keep them to a safe alphabet.
pub fn check_name(name: &str, what: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(invalid!(
            "invalid {what} name '{name}': use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        ))
    }
}

/// Where an endpoint is in its life: `Creating` rows belong to a process that may have died
/// mid-attach (kill -9) and are reclaimed when that process is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointState {
    Creating,
    Active,
}

/// An address that another device on the LAN answered for when mvnet probed it before use.
/// The allocator skips it from then on; `network inspect` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LanConflict {
    pub ip: IpAddr,
    /// The device that answered (`None`: IPv6 DAD failed but the answer was not captured).
    pub mac: Option<MacAddr>,
    /// When it was seen (RFC 3339).
    pub seen: String,
}

/// A container's attachment to a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: String,
    pub network_id: String,
    pub container_id: String,
    /// Container name (or the netns path for bare namespaces), for inspect output.
    pub container_name: String,
    pub netns: String,
    pub ifname: String,
    pub mac: MacAddr,
    pub ipv4: Option<(IpAddr, u8)>,
    pub ipv6: Option<(IpAddr, u8)>,
    pub state: EndpointState,
    pub owner_pid: u32,
    /// Which front end made it: the CNI plugin's GC, DEL and CHECK touch only its own.
    /// Rows written before mvnet recorded it read as `Unrecorded`.
    #[serde(default = "Frontend::unrecorded")]
    pub frontend: Frontend,
    /// The DHCP lease its IPv4 address comes from (networks with `--ipam-driver dhcp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
}

/// A DHCP lease as mvnet records it on the endpoint: enough to show it, to renew it after
/// the lease agent restarts (INIT-REBOOT, no new DORA), and to release it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub ip: std::net::Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<std::net::Ipv4Addr>,
    #[serde(default)]
    pub dns: Vec<std::net::Ipv4Addr>,
    /// The server that granted it (option 54).
    pub server: std::net::Ipv4Addr,
    pub lease_secs: u32,
    pub t1_secs: u32,
    pub t2_secs: u32,
    /// When it was granted or last renewed, and when it runs out (RFC 3339).
    pub obtained: String,
    pub expires: String,
    /// The client identifier sent (option 61), hex: the same network and container name
    /// give the same one, so the server gives the same address back.
    pub client_id: String,
    pub hostname: String,
    /// Where the lease's client runs when the runtime moved the interface away from the
    /// endpoint's recorded place (Docker: the container's namespace and its `ethN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
}

/// The front end that made an endpoint. Each one manages only its own endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Frontend {
    /// The `mvnet` CLI (and rows written before this field existed).
    #[default]
    Cli,
    Cni,
    Docker,
    /// A row from before mvnet recorded the front end.
    Unrecorded,
}

impl Frontend {
    fn unrecorded() -> Frontend {
        Frontend::Unrecorded
    }

    /// Whether an endpoint on `net` belongs to the CNI plugin: made by it, or an old row
    /// (no front end recorded) on a network the CNI plugin created.
    pub fn is_cni(self, net: &Network) -> bool {
        match self {
            Frontend::Cni => true,
            Frontend::Unrecorded => net.labels.get("mvnet.cni").is_some_and(|v| v == "true"),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_from_before_the_frontend_field_belong_to_cni_only_on_its_networks() {
        let row = r#"{"id":"e","network_id":"n","container_id":"c","container_name":"c",
            "netns":"/run/netns/x","ifname":"eth0","mac":"02:42:0a:00:00:02",
            "ipv4":null,"ipv6":null,"state":"active","owner_pid":1}"#;
        let ep: Endpoint = serde_json::from_str(row).unwrap();
        assert_eq!(ep.frontend, Frontend::Unrecorded);
        let mut r = req(&[("subnet", "10.0.0.0/24")]);
        r.options = vec!["parent=eth0".into()];
        let v = r.validate().unwrap();
        let mut net = Network {
            id: "n".into(),
            name: "n".into(),
            driver: v.driver,
            created: String::new(),
            pools: v.pools,
            internal: false,
            ipv6: false,
            ipv4_disabled: false,
            dhcp: false,
            fleet: None,
            labels: Default::default(),
            options: v.options,
        };
        assert!(
            !ep.frontend.is_cni(&net),
            "a CLI network's old rows are not CNI's"
        );
        net.labels.insert("mvnet.cni".into(), "true".into());
        assert!(ep.frontend.is_cni(&net));
        assert!(Frontend::Cni.is_cni(&net) && !Frontend::Cli.is_cni(&net));
    }

    #[test]
    fn interface_names_are_checked_before_the_kernel_sees_them() {
        assert!(check_ifname("eth0", "-o parent").is_ok());
        assert!(check_ifname("ens19.1318", "-o parent").is_ok());
        for bad in [
            "",
            "a23456789012345x",
            "a/b",
            "a b",
            "a:b",
            ".",
            "..",
            "a\nb",
        ] {
            assert!(check_ifname(bad, "-o parent").is_err(), "{bad:?}");
        }
        let huge = "x".repeat(70_000);
        let e = check_ifname(&huge, "-o parent").unwrap_err().to_string();
        assert!(e.len() < 200, "the message quotes a cut value: {}", e.len());
        // Through option parsing too (it used to reach netlink and panic).
        let e = NetworkOptions::parse(&[format!("parent={huge}")]).unwrap_err();
        assert!(e.to_string().contains("interface name"), "{e}");
    }

    #[test]
    fn special_purpose_subnets() {
        let s = |n: &str| special_subnet(&n.parse().unwrap());
        for refused in [
            "224.0.0.0/24",
            "239.1.0.0/16",
            "127.0.0.0/24",
            "0.0.0.0/8",
            "ff02::/64",
            "::1/128",
        ] {
            assert!(s(refused).is_err(), "{refused}");
        }
        for warned in [
            "240.0.0.0/8",
            "169.254.0.0/16",
            "192.0.2.0/24",
            "fe80::/64",
            "2001:db8::/64",
        ] {
            assert!(matches!(s(warned), Ok(Some(_))), "{warned}");
        }
        for fine in ["10.103.19.0/24", "192.168.1.0/24", "fd00:19::/64"] {
            assert!(matches!(s(fine), Ok(None)), "{fine}");
        }
        let mut r = req(&[("subnet", "240.0.0.0/8")]);
        r.options = vec!["parent=eth0".into()];
        let v = r.validate().unwrap();
        assert!(v.warnings[0].contains("240.0.0.0/8"), "{:?}", v.warnings);
    }

    fn req(args: &[(&str, &str)]) -> CreateNetworkRequest {
        let mut r = CreateNetworkRequest {
            name: "n".into(),
            ..Default::default()
        };
        for (k, v) in args {
            match *k {
                "subnet" => r.subnets.push(v.to_string()),
                "gateway" => r.gateways.push(v.to_string()),
                "range" => r.ip_ranges.push(v.to_string()),
                "aux" => r.aux_addresses.push(v.to_string()),
                "o" => r.options.push(v.to_string()),
                "label" => r.labels.push(v.to_string()),
                "ipv6" => r.ipv6 = true,
                _ => unreachable!(),
            }
        }
        r
    }

    #[test]
    fn seed_request_validates() {
        let v = req(&[
            ("subnet", "10.103.19.0/24"),
            ("gateway", "10.103.19.1"),
            ("o", "parent=eth0"),
        ])
        .validate()
        .unwrap();
        assert_eq!(v.options.parent, "eth0");
        assert_eq!(v.options.macvlan_mode, MacvlanMode::Bridge);
        assert_eq!(v.pools[0].gateway.unwrap().to_string(), "10.103.19.1");
    }

    #[test]
    fn dual_stack_pairs_by_containment() {
        let v = req(&[
            ("subnet", "10.1.0.0/24"),
            ("subnet", "2001:db8::/64"),
            ("gateway", "2001:db8::1"),
            ("gateway", "10.1.0.1"),
            ("aux", "printer=10.1.0.9"),
            ("ipv6", ""),
        ])
        .validate()
        .unwrap();
        assert_eq!(v.pools[0].gateway.unwrap().to_string(), "10.1.0.1");
        assert_eq!(v.pools[1].gateway.unwrap().to_string(), "2001:db8::1");
        assert_eq!(v.pools[0].aux["printer"].to_string(), "10.1.0.9");
    }

    #[test]
    fn bad_requests_say_how_to_fix() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "needs the LAN's subnet"),
            (&[("subnet", "10.1.0.0/33")], "CIDR"),
            (
                &[("subnet", "10.1.0.0/24"), ("gateway", "10.2.0.1")],
                "outside subnet",
            ),
            (
                &[("subnet", "10.1.0.0/24"), ("range", "10.2.0.0/28")],
                "outside subnet",
            ),
            (
                &[("subnet", "10.1.0.0/24"), ("o", "macvlan_mode=x")],
                "valid modes: bridge, private, vepa, passthru",
            ),
            (
                &[("subnet", "10.1.0.0/24"), ("o", "bogus=1")],
                "accepts: parent",
            ),
            (&[("subnet", "10.1.0.0/24"), ("o", "mtu=abc")], "mtu"),
            (
                &[("subnet", "10.1.0.0/24"), ("o", "probe_ms=soon")],
                "0 turns probing off",
            ),
            (
                &[("subnet", "10.1.0.0/24"), ("o", "probe_ms=60000")],
                "at most 5000 ms",
            ),
            (
                &[("subnet", "10.1.0.0/24"), ("subnet", "10.1.0.0/16")],
                "overlap",
            ),
        ];
        for (args, want) in cases {
            let e = req(args).validate().unwrap_err().to_string();
            assert!(e.contains(want), "{args:?}: got '{e}', want '{want}'");
        }
        // An IPv6 subnet turns IPv6 on by itself, as in current Docker (issue 18).
        let v = req(&[("subnet", "fd00:1::/64")]).validate().unwrap();
        assert!(v.ipv6);
    }

    #[test]
    fn vlan_parent_names_follow_docker() {
        assert_eq!(
            parse_vlan_parent("ens19.1318").unwrap(),
            Some(("ens19".into(), 1318))
        );
        assert_eq!(parse_vlan_parent("eth0").unwrap(), None);
        let e = parse_vlan_parent("eth0.5000").unwrap_err().to_string();
        assert_eq!(e, "vlan id must be between 1-4094, received: 5000");
        let e = parse_vlan_parent("eth0.0").unwrap_err().to_string();
        assert_eq!(e, "vlan id must be between 1-4094, received: 0");
        // Docker's texts (issue 18, item 6).
        let e = parse_vlan_parent("eth0.abc").unwrap_err().to_string();
        assert_eq!(
            e,
            "unable to parse a valid vlan id from: abc (ex. eth0.10 for vlan 10)"
        );
        let e = parse_vlan_parent("eth0.10.20").unwrap_err().to_string();
        assert_eq!(
            e,
            "required interface name format is: name.vlan_id, ex. eth0.10 for vlan 10, instead received eth0.10.20"
        );
        assert!(parse_vlan_parent(".10").is_err());
        assert!(parse_vlan_parent("averyverylongname.10")
            .unwrap_err()
            .to_string()
            .contains("15"));
        let mut o = NetworkOptions::parse(&["parent=ens19".into(), "vlan=1318".into()]).unwrap();
        fold_vlan_option(&mut o).unwrap();
        assert_eq!(o.parent, "ens19.1318");
        assert_eq!(o.vlan, None);
        assert!(NetworkOptions::parse(&["vlan=9999".into()]).is_err());
    }

    #[test]
    fn probe_window_defaults_to_30_ms_and_0_turns_it_off() {
        let o = NetworkOptions::parse(&["parent=eth0".into()]).unwrap();
        assert_eq!(o.probe_window(), Some(std::time::Duration::from_millis(30)));
        assert!(!o.to_map(Driver::Macvlan).contains_key("probe_ms"));
        let o = NetworkOptions::parse(&["probe_ms=0".into()]).unwrap();
        assert_eq!(o.probe_window(), None);
        assert_eq!(o.to_map(Driver::Macvlan)["probe_ms"], "0");
        let o = NetworkOptions::parse(&["probe_ms=250".into()]).unwrap();
        assert_eq!(
            o.probe_window(),
            Some(std::time::Duration::from_millis(250))
        );
        // ipvlan shares the parent's MAC, so a probe's reply cannot reach the new port.
        let e = NetworkOptions::parse_for(&["probe_ms=5".into()], Driver::Ipvlan).unwrap_err();
        assert!(
            e.to_string()
                .contains("an ipvlan port shares the parent's MAC"),
            "{e}"
        );
    }

    #[test]
    fn names() {
        assert!(check_name("my-macvlan-net", "network").is_ok());
        assert!(check_name("-x", "network").is_err());
        assert!(check_name("a/b", "network").is_err());
        assert!(check_name("", "network").is_err());
    }

    #[test]
    fn shared_pools_take_ipam_options_and_one_ipv4_subnet() {
        let v = |o: &[&str]| {
            FleetPool::from_ipam_options(&o.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        let p = v(&[
            "pool=office",
            "etcd=10.0.0.5:2379,http://10.0.0.6:2379",
            "grace=30",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(p.pool, "office");
        assert_eq!(p.etcd, ["http://10.0.0.5:2379", "http://10.0.0.6:2379"]);
        assert_eq!(p.grace_secs, 30);
        assert_eq!(
            v(&["pool=office"]).unwrap().unwrap().grace_secs,
            DEFAULT_FLEET_GRACE_SECS
        );
        assert!(v(&[]).unwrap().is_none());
        for (bad, says) in [
            (&["pool=a b"][..], "pool name"),
            (&["pool=x", "etcd=https://h:2379"][..], "http://HOST:PORT"),
            (&["pool=x", "etcd=h"][..], "http://HOST:PORT"),
            (&["pool=x", "grace=0"][..], "grace"),
            (&["etcd=http://h:2379"][..], "add --ipam-opt pool=NAME"),
            (&["pool=x", "size=4"][..], "unknown --ipam-opt"),
            (&["pool"][..], "--ipam-opt"),
        ] {
            let e = v(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        let req = |subnets: &[&str], ipv6: bool| CreateNetworkRequest {
            name: "lan".into(),
            subnets: subnets.iter().map(|s| s.to_string()).collect(),
            options: vec!["parent=eth0".into()],
            ipam_options: vec!["pool=office".into()],
            ipv6,
            ..Default::default()
        };
        assert!(req(&["10.0.0.0/24"], false)
            .validate()
            .unwrap()
            .fleet
            .is_some());
        for r in [
            req(&["10.0.0.0/24", "10.0.1.0/24"], false),
            req(&["10.0.0.0/24"], true),
            req(&["fd00::/64"], false),
        ] {
            let e = r.validate().unwrap_err().to_string();
            assert!(e.contains("exactly one IPv4 --subnet"), "{e}");
        }
        let mut d = req(&[], false);
        d.ipam_driver = "dhcp".into();
        assert!(d
            .validate()
            .unwrap_err()
            .to_string()
            .contains("remove one of them"));
    }

    #[test]
    fn dhcp_networks_take_no_subnet_and_say_what_to_remove() {
        let dhcp = |extra: &dyn Fn(&mut CreateNetworkRequest)| {
            let mut r = CreateNetworkRequest {
                name: "lan".into(),
                ipam_driver: "dhcp".into(),
                options: vec!["parent=eth0".into(), "dhcp_timeout=5".into()],
                ..Default::default()
            };
            extra(&mut r);
            r.validate()
        };
        let v = dhcp(&|_| {}).unwrap();
        assert!(v.dhcp && v.pools.is_empty());
        assert_eq!(v.options.dhcp_wait(), std::time::Duration::from_secs(5));
        let e = dhcp(&|r| r.subnets = vec!["10.0.0.0/24".into()]).unwrap_err();
        assert!(e.to_string().contains("remove --subnet"), "{e}");
        let e = dhcp(&|r| r.ipv6 = true).unwrap_err();
        assert!(e.to_string().contains("DHCPv4"), "{e}");
        assert!(dhcp(&|r| r.driver = "ipvlan".into()).is_ok());
        let e = dhcp(&|r| {
            r.driver = "ipvlan".into();
            r.options.push("ipvlan_mode=l3".into());
        })
        .unwrap_err();
        assert!(e.to_string().contains("ipvlan_mode=l2"), "{e}");
        let e = dhcp(&|r| r.options.push("dhcp_timeout=0".into())).unwrap_err();
        assert!(e.to_string().contains("dhcp_timeout"), "{e}");
        let e = dhcp(&|r| r.ipam_driver = "etcd".into()).unwrap_err();
        assert!(e.to_string().contains("--ipam-driver"), "{e}");
        // Without it, a subnet is still required, and the message offers DHCP.
        let mut r = CreateNetworkRequest {
            name: "n".into(),
            options: vec!["parent=eth0".into()],
            ..Default::default()
        };
        r.ipam_driver = String::new();
        assert!(r
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--ipam-driver dhcp"));
    }
}
