//! What one attachment asks of the kernel, as plain data: the link's kind and mode, its
//! name, MAC and MTU, its addresses and routes. Pure: built from the store's endpoint (CLI,
//! Docker) or from a CNI IPAM result, then carried out by `attach`.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::network::{IpvlanFlag, IpvlanMode};
use crate::model::{Driver, Endpoint, MacAddr, MacvlanMode, Network};

/// One route to add in the container: `dst` None is the default route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePlan {
    pub dst: Option<IpNet>,
    pub gateway: Option<IpAddr>,
}

/// Which sub-interface type to create, with its mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    Macvlan(MacvlanMode),
    Ipvlan(IpvlanMode, IpvlanFlag),
}

impl LinkKind {
    pub fn of(net: &Network) -> LinkKind {
        match net.driver {
            Driver::Macvlan => LinkKind::Macvlan(net.options.macvlan_mode),
            Driver::Ipvlan => LinkKind::Ipvlan(net.options.ipvlan_mode, net.options.ipvlan_flag),
        }
    }

    /// l3/l3s ipvlan has no ARP: routes point at the device, not at a gateway.
    pub fn routes_via_device(&self) -> bool {
        matches!(self, LinkKind::Ipvlan(IpvlanMode::L3 | IpvlanMode::L3s, _))
    }
}

/// Everything the kernel needs for one attachment.
#[derive(Debug, Clone)]
pub struct LinkPlan {
    pub ifname: String,
    pub parent_index: u32,
    /// Name of the parent, for messages.
    pub parent_name: String,
    pub kind: LinkKind,
    /// The MAC to give a macvlan; ipvlan always shares the parent's.
    pub mac: MacAddr,
    pub mtu: Option<u32>,
    pub addresses: Vec<(IpAddr, u8)>,
    pub routes: Vec<RoutePlan>,
    /// Run IPv6 duplicate address detection and wait for it (CNI does; Docker skips it).
    pub wait_dad: bool,
    /// Broadcast queue length of the macvlan port (CNI `bcqueuelen`).
    pub bc_queue_len: Option<u32>,
    /// RFC 5227 announcements to send after the link is up, 1 s apart (0: none).
    pub announcements: u32,
    /// Probe the LAN for each address this long before using it (None: don't).
    pub probe: Option<std::time::Duration>,
    /// Turn IPv6 off on the interface (`disable_ipv6=1`), as Docker does for an endpoint
    /// without IPv6: no link-local address, and a router's advertisements cannot give it
    /// addresses nobody asked for.
    pub disable_ipv6: bool,
    /// The container runtime moves the link and configures it itself (Docker): the link
    /// is left down, with no addresses, routes or announcements, after the IPv4 probe.
    pub handover: bool,
    /// The link exists already: made while the store reserved its address, so with a MAC
    /// of the kernel's choosing (`attach::create_early`). `attach` only configures it,
    /// and gives it `mac` first.
    pub made_early: bool,
}

impl LinkPlan {
    /// The plan for an mvnet endpoint: its addresses, and a default route through each
    /// subnet's gateway unless the network is internal.
    pub fn for_endpoint(net: &Network, ep: &Endpoint, parent_index: u32) -> LinkPlan {
        let addresses: Vec<(IpAddr, u8)> = ep.ipv4.iter().chain(ep.ipv6.iter()).copied().collect();
        let kind = LinkKind::of(net);
        let routes = if net.internal {
            Vec::new()
        } else if kind.routes_via_device() {
            // Docker's l3 routes: `default dev eth0`, one per address family.
            addresses
                .iter()
                .map(|(ip, _)| RoutePlan {
                    dst: Some(if ip.is_ipv4() {
                        "0.0.0.0/0".parse().unwrap()
                    } else {
                        "::/0".parse().unwrap()
                    }),
                    gateway: None,
                })
                .collect()
        } else {
            addresses
                .iter()
                .filter_map(|(ip, _)| gateway_for(net, *ip))
                .map(|gw| RoutePlan {
                    dst: None,
                    gateway: Some(gw),
                })
                .collect()
        };
        LinkPlan {
            ifname: ep.ifname.clone(),
            parent_index,
            parent_name: net.options.parent.clone(),
            kind,
            mac: ep.mac,
            mtu: net.options.mtu,
            addresses,
            routes,
            wait_dad: false,
            bc_queue_len: None,
            announcements: 3,
            probe: net.options.probe_window(),
            disable_ipv6: ep.ipv6.is_none(),
            handover: false,
            made_early: false,
        }
    }
}

/// Whether a parent cannot carry traffic now: down, or up without carrier (a cable
/// unplugged, a tap nobody opened).
pub fn parent_is_down(parent: &crate::netlink::Link) -> bool {
    !parent.up || !parent.carrier
}

/// What the user is told when an endpoint is attached to a parent that is down.
pub fn parent_down_notice(parent: &str) -> String {
    format!(
        "parent {parent} is down (no carrier): the container starts, but reaches nothing until {parent} is up (ip link set {parent} up); the LAN conflict probe and IPv6 duplicate address detection were skipped"
    )
}

/// The gateway of the pool an address came from.
pub fn gateway_for(net: &Network, ip: IpAddr) -> Option<IpAddr> {
    net.pools
        .iter()
        .find(|p| p.subnet.contains(&ip))
        .and_then(|p| p.gateway)
}
