use std::io;
use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::addr::family;
use super::Netlink;

fn route_address(ip: IpAddr) -> RouteAddress {
    match ip {
        IpAddr::V4(v4) => RouteAddress::Inet(v4),
        IpAddr::V6(v6) => RouteAddress::Inet6(v6),
    }
}

/// A route as read back: destination (None = default), gateway, output interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: Option<IpNet>,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
}

impl Netlink {
    /// Adds a route in the main table: `dst` (None = default) via `gateway` or on-link.
    pub fn add_route(
        &mut self,
        dst: Option<IpNet>,
        gateway: Option<IpAddr>,
        oif: u32,
    ) -> io::Result<()> {
        let probe = dst.map(|d| d.addr()).or(gateway).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "a route needs a destination or a gateway",
            )
        })?;
        let mut m = RouteMessage::default();
        m.header.address_family = family(probe);
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        // `boot` is what `ip route add` uses, so `ip route` prints exactly what the seed shows.
        m.header.protocol = RouteProtocol::Boot;
        m.header.kind = RouteType::Unicast;
        m.header.scope = if gateway.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        if let Some(d) = dst {
            m.header.destination_prefix_length = d.prefix_len();
            m.attributes
                .push(RouteAttribute::Destination(route_address(d.network())));
        }
        if let Some(gw) = gateway {
            m.attributes
                .push(RouteAttribute::Gateway(route_address(gw)));
        }
        m.attributes.push(RouteAttribute::Oif(oif));
        self.request(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Deletes a route to `dst` on `oif`; a route that is already gone is not an error.
    pub fn del_route(&mut self, dst: IpNet, oif: u32) -> io::Result<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = family(dst.addr());
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.destination_prefix_length = dst.prefix_len();
        // "Any scope": the kernel matches scope exactly unless told RT_SCOPE_NOWHERE.
        m.header.scope = RouteScope::NoWhere;
        m.attributes
            .push(RouteAttribute::Destination(route_address(dst.network())));
        m.attributes.push(RouteAttribute::Oif(oif));
        match self.request(RouteNetlinkMessage::DelRoute(m), 0) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            other => other,
        }
    }

    /// Routes of the main table for one family.
    pub fn routes(&mut self, v6: bool) -> io::Result<Vec<Route>> {
        let mut m = RouteMessage::default();
        m.header.address_family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        let msgs = self.query(RouteNetlinkMessage::GetRoute(m), true)?;
        let mut out = Vec::new();
        for msg in msgs {
            let RouteNetlinkMessage::NewRoute(r) = msg else {
                continue;
            };
            if r.header.table != RouteHeader::RT_TABLE_MAIN {
                continue;
            }
            let mut route = Route {
                destination: None,
                gateway: None,
                oif: None,
            };
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(v4)) => {
                        route.destination =
                            IpNet::new((*v4).into(), r.header.destination_prefix_length).ok()
                    }
                    RouteAttribute::Destination(RouteAddress::Inet6(v6)) => {
                        route.destination =
                            IpNet::new((*v6).into(), r.header.destination_prefix_length).ok()
                    }
                    RouteAttribute::Gateway(RouteAddress::Inet(v4)) => {
                        route.gateway = Some((*v4).into())
                    }
                    RouteAttribute::Gateway(RouteAddress::Inet6(v6)) => {
                        route.gateway = Some((*v6).into())
                    }
                    RouteAttribute::Oif(i) => route.oif = Some(*i),
                    _ => {}
                }
            }
            out.push(route);
        }
        Ok(out)
    }
}
