use std::io;
use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::Netlink;

impl Netlink {
    /// Adds `ip/prefix` to a link; IPv4 gets its broadcast address as `ip addr add` does.
    /// IPv6 addresses skip duplicate address detection (as Docker does) unless `dad`.
    pub fn add_address(&mut self, index: u32, ip: IpAddr, prefix: u8) -> io::Result<()> {
        self.add_address_dad(index, ip, prefix, false)
    }

    pub fn add_address_dad(
        &mut self,
        index: u32,
        ip: IpAddr,
        prefix: u8,
        dad: bool,
    ) -> io::Result<()> {
        let mut m = address_message(index, ip, prefix);
        if let IpAddr::V4(v4) = ip {
            if prefix < 31 {
                let host_bits = u32::MAX.checked_shr(prefix as u32).unwrap_or(0);
                let bc = u32::from(v4) | host_bits;
                m.attributes.push(AddressAttribute::Broadcast(bc.into()));
            }
        } else if !dad {
            // Like Docker: the address is ours by allocation, so skip the ~1 s of DAD that
            // would leave it unusable right after attach.
            m.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        self.request(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Removes `ip/prefix` from a link (an address that failed duplicate address detection).
    pub fn del_address(&mut self, index: u32, ip: IpAddr, prefix: u8) -> io::Result<()> {
        let m = address_message(index, ip, prefix);
        self.request(RouteNetlinkMessage::DelAddress(m), 0)
    }

    /// IPv6 addresses on `index` still in duplicate address detection, and those that failed it.
    pub fn dad_state(&mut self, index: u32) -> io::Result<(Vec<IpAddr>, Vec<IpAddr>)> {
        let msgs = self.query(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            true,
        )?;
        let (mut tentative, mut failed) = (Vec::new(), Vec::new());
        for m in msgs {
            let RouteNetlinkMessage::NewAddress(a) = m else {
                continue;
            };
            if a.header.index != index {
                continue;
            }
            let mut flags = AddressFlags::from_bits_retain(a.header.flags.bits() as u32);
            let mut ip = None;
            for x in &a.attributes {
                match x {
                    AddressAttribute::Flags(f) => flags |= *f,
                    AddressAttribute::Address(addr) if addr.is_ipv6() => ip = Some(*addr),
                    _ => {}
                }
            }
            if let Some(ip) = ip {
                if flags.contains(AddressFlags::Dadfailed) {
                    failed.push(ip);
                } else if flags.contains(AddressFlags::Tentative) {
                    tentative.push(ip);
                }
            }
        }
        Ok((tentative, failed))
    }

    /// Addresses on link `index` (all links when `None`), with their prefix lengths.
    pub fn addresses(&mut self, index: Option<u32>) -> io::Result<Vec<(u32, IpAddr, u8)>> {
        let msgs = self.query(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            true,
        )?;
        let mut out = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewAddress(a) = m else {
                continue;
            };
            if index.is_some_and(|i| i != a.header.index) {
                continue;
            }
            let ip = a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let ip = ip.or_else(|| {
                a.attributes.iter().find_map(|x| match x {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(ip) = ip {
                out.push((a.header.index, ip, a.header.prefix_len));
            }
        }
        Ok(out)
    }
}

/// `ip/prefix` on link `index`, as RTM_NEWADDR/RTM_DELADDR carry it.
fn address_message(index: u32, ip: IpAddr, prefix: u8) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.index = index;
    m.header.prefix_len = prefix;
    m.header.family = family(ip);
    m.attributes.push(AddressAttribute::Local(ip));
    m.attributes.push(AddressAttribute::Address(ip));
    m
}

pub(super) fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}
