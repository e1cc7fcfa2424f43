use std::io;
use std::os::fd::{AsRawFd, RawFd};

use netlink_packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoIpVlan, InfoKind, InfoMacVlan, InfoMacVtap, InfoPortData,
    InfoPortKind, InfoVeth, InfoVlan, IpVlanFlags, IpVlanMode, LinkAttribute, LinkExtentMask,
    LinkFlags, LinkInfo, LinkMessage, MacVlanMode, MacVtapMode,
};
use netlink_packet_route::RouteNetlinkMessage;

use super::Netlink;

const IFLA_AF_SPEC: u16 = 26;
const IFLA_INET_CONF: u16 = 1;
const IPV4_DEVCONF_ARP_NOTIFY: u16 = 22;

/// IFLA_AF_SPEC's payload setting one IPv4 per-device setting (`IPV4_DEVCONF_*`): an
/// AF_INET attribute holding IFLA_INET_CONF holding the one value. The kernel applies only
/// the entries present, so nothing else of the interface's configuration changes.
fn inet_devconf(id: u16, value: u32) -> Vec<u8> {
    let nla = |kind: u16, payload: &[u8]| {
        let mut v = Vec::with_capacity(4 + payload.len());
        v.extend_from_slice(&(4 + payload.len() as u16).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(payload);
        v
    };
    let setting = nla(id, &value.to_ne_bytes());
    let conf = nla(IFLA_INET_CONF, &setting);
    nla(libc::AF_INET as u16, &conf)
}
use crate::model::network::{IpvlanFlag, IpvlanMode};
use crate::model::{MacAddr, MacvlanMode};
use crate::netns::Netns;

/// What we read back about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND` ("macvlan", "veth", "bridge", ...); empty for plain hardware.
    pub kind: String,
    pub mtu: u32,
    pub max_mtu: Option<u32>,
    pub up: bool,
    pub loopback: bool,
    pub carrier: bool,
    pub mac: Option<MacAddr>,
    /// Index of the lower device (IFLA_LINK), e.g. a macvlan's parent.
    pub parent_index: Option<u32>,
    /// Index of the bridge or bond this link is enslaved to.
    pub master_index: Option<u32>,
    pub macvlan_mode: Option<MacvlanMode>,
    pub ipvlan_mode: Option<IpvlanMode>,
}

#[cfg(test)]
impl Link {
    /// The reference parse, through netlink-packet-route (for the tests of `parse`).
    fn from_message(m: LinkMessage) -> Link {
        let mut l = Link {
            index: m.header.index,
            name: String::new(),
            kind: String::new(),
            mtu: 0,
            max_mtu: None,
            up: m.header.flags.contains(LinkFlags::Up),
            loopback: m.header.flags.contains(LinkFlags::Loopback),
            carrier: m.header.flags.contains(LinkFlags::LowerUp),
            mac: None,
            parent_index: None,
            master_index: None,
            macvlan_mode: None,
            ipvlan_mode: None,
        };
        for a in m.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n,
                LinkAttribute::Mtu(v) => l.mtu = v,
                LinkAttribute::MaxMtu(v) => l.max_mtu = Some(v),
                LinkAttribute::Link(v) => l.parent_index = Some(v),
                LinkAttribute::Controller(v) => l.master_index = Some(v),
                LinkAttribute::Address(b) if b.len() == 6 => {
                    l.mac = Some(MacAddr(b.try_into().expect("6 bytes")))
                }
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        match i {
                            LinkInfo::Kind(k) => l.kind = kind_name(&k),
                            LinkInfo::Data(InfoData::IpVlan(d)) => {
                                for x in d {
                                    if let InfoIpVlan::Mode(m) = x {
                                        l.ipvlan_mode = match m {
                                            IpVlanMode::L2 => Some(IpvlanMode::L2),
                                            IpVlanMode::L3 => Some(IpvlanMode::L3),
                                            IpVlanMode::L3S => Some(IpvlanMode::L3s),
                                            _ => None,
                                        };
                                    }
                                }
                            }
                            LinkInfo::Data(InfoData::MacVlan(d)) => {
                                for x in d {
                                    if let InfoMacVlan::Mode(m) = x {
                                        l.macvlan_mode = from_kernel_mode(m);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        l
    }
}

/// The attributes of a link message, walked by hand (see `Netlink::receive_raw`).
fn attributes(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        // NLA_F_NESTED and NLA_F_NET_BYTEORDER are flags, not part of the type.
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            return None;
        }
        let value = &buf[4..len];
        buf = &buf[((len + 3) & !3).min(buf.len())..];
        Some((kind, value))
    })
}

fn u32_of(v: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(v.get(0..4)?.try_into().ok()?))
}

fn string_of(v: &[u8]) -> String {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

impl Link {
    /// A link from the payload of an RTM_NEWLINK message (ifinfomsg, then attributes):
    /// only what `Link` holds is read. `from_message` is the same through
    /// netlink-packet-route (the unit tests hold them to the same answers).
    fn parse(payload: &[u8]) -> Option<Link> {
        const IFLA_ADDRESS: u16 = 1;
        const IFLA_IFNAME: u16 = 3;
        const IFLA_MTU: u16 = 4;
        const IFLA_LINK: u16 = 5;
        const IFLA_MASTER: u16 = 10;
        const IFLA_LINKINFO: u16 = 18;
        const IFLA_MAX_MTU: u16 = 51;
        const IFLA_INFO_KIND: u16 = 1;
        const IFLA_INFO_DATA: u16 = 2;
        // The mode is attribute 1 of both IFLA_MACVLAN_* and IFLA_IPVLAN_*.
        const IFLA_MODE: u16 = 1;
        let header = payload.get(0..16)?;
        let flags = u32_of(&header[8..12])?;
        let mut l = Link {
            index: u32_of(&header[4..8])?,
            name: String::new(),
            kind: String::new(),
            mtu: 0,
            max_mtu: None,
            up: flags & libc::IFF_UP as u32 != 0,
            loopback: flags & libc::IFF_LOOPBACK as u32 != 0,
            carrier: flags & libc::IFF_LOWER_UP as u32 != 0,
            mac: None,
            parent_index: None,
            master_index: None,
            macvlan_mode: None,
            ipvlan_mode: None,
        };
        for (kind, v) in attributes(&payload[16..]) {
            match kind {
                IFLA_IFNAME => l.name = string_of(v),
                IFLA_MTU => l.mtu = u32_of(v)?,
                IFLA_MAX_MTU => l.max_mtu = u32_of(v),
                IFLA_LINK => l.parent_index = u32_of(v),
                IFLA_MASTER => l.master_index = u32_of(v),
                IFLA_ADDRESS if v.len() == 6 => {
                    l.mac = Some(MacAddr(v.try_into().expect("6 bytes")))
                }
                IFLA_LINKINFO => {
                    let mut data = None;
                    for (k, v) in attributes(v) {
                        match k {
                            IFLA_INFO_KIND => l.kind = string_of(v),
                            IFLA_INFO_DATA => data = Some(v),
                            _ => {}
                        }
                    }
                    let mode = data.and_then(|d| {
                        attributes(d).find_map(|(k, v)| (k == IFLA_MODE).then_some(v))
                    });
                    match (l.kind.as_str(), mode) {
                        ("macvlan", Some(m)) => {
                            l.macvlan_mode =
                                u32_of(m).and_then(|m| from_kernel_mode(MacVlanMode::from(m)));
                        }
                        ("ipvlan", Some(m)) if m.len() >= 2 => {
                            l.ipvlan_mode = match u16::from_ne_bytes([m[0], m[1]]) {
                                0 => Some(IpvlanMode::L2),
                                1 => Some(IpvlanMode::L3),
                                2 => Some(IpvlanMode::L3s),
                                _ => None,
                            };
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        Some(l)
    }
}

#[cfg(test)]
fn kind_name(k: &InfoKind) -> String {
    match k {
        InfoKind::Other(s) => s.clone(),
        other => other.to_string(),
    }
}

fn to_kernel_mode(m: MacvlanMode) -> MacVlanMode {
    match m {
        MacvlanMode::Bridge => MacVlanMode::Bridge,
        MacvlanMode::Private => MacVlanMode::Private,
        MacvlanMode::Vepa => MacVlanMode::Vepa,
        MacvlanMode::Passthru => MacVlanMode::Passthrough,
    }
}

fn from_kernel_mode(m: MacVlanMode) -> Option<MacvlanMode> {
    match m {
        MacVlanMode::Bridge => Some(MacvlanMode::Bridge),
        MacVlanMode::Private => Some(MacvlanMode::Private),
        MacVlanMode::Vepa => Some(MacvlanMode::Vepa),
        MacVlanMode::Passthrough => Some(MacvlanMode::Passthru),
        _ => None,
    }
}

/// A macvlan sub-interface to create, possibly straight inside another namespace.
#[derive(Debug, Clone)]
pub struct MacvlanLink<'a> {
    pub name: &'a str,
    pub parent_index: u32,
    pub mode: MacvlanMode,
    pub mac: Option<MacAddr>,
    pub mtu: Option<u32>,
    pub bc_queue_len: Option<u32>,
    /// Create it directly inside this namespace (IFLA_NET_NS_FD): no move, no rename.
    pub netns: Option<&'a Netns>,
}

/// An ipvlan sub-interface to create, possibly straight inside another namespace. It has
/// no MAC of its own: it shares the parent's.
#[derive(Debug, Clone)]
pub struct IpvlanLink<'a> {
    pub name: &'a str,
    pub parent_index: u32,
    pub mode: IpvlanMode,
    pub flag: IpvlanFlag,
    pub mtu: Option<u32>,
    pub netns: Option<&'a Netns>,
}

/// Link types whose kernel support `kernel::probe` checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Macvlan,
    Vlan,
    Ipvlan,
    Macvtap,
}

/// One end of a veth pair: its name and the namespace it is created in.
#[derive(Debug, Clone, Copy)]
pub struct VethEnd<'a> {
    pub name: &'a str,
    pub netns: Option<&'a Netns>,
}

fn new_link_message(name: &str, netns: Option<RawFd>) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    if let Some(fd) = netns {
        m.attributes.push(LinkAttribute::NetNsFd(fd));
    }
    m
}

impl Netlink {
    /// The index of the link named `name` in this socket's namespace, or `None` when it does
    /// not exist: one ioctl (SIOCGIFINDEX) instead of a whole RTM_GETLINK answer (about a
    /// kilobyte the kernel fills in and we parse), for a caller that needs only the index.
    pub fn index_of(&mut self, name: &str) -> io::Result<Option<u32>> {
        if name.is_empty() || name.len() > 15 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an interface name has 1 to 15 bytes",
            ));
        }
        // SAFETY: an all-zero ifreq is valid; the name fits (checked above) with its NUL.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *d = s as libc::c_char;
        }
        // SAFETY: SIOCGIFINDEX reads the name and writes the index into `req`, which lives
        // for the call; the ioctl answers for the socket's own network namespace.
        let rc = unsafe { libc::ioctl(self.sock.as_raw_fd(), libc::SIOCGIFINDEX as _, &mut req) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENODEV) => Ok(None),
                _ => Err(e),
            };
        }
        // SAFETY: the kernel filled in the index member of the union.
        Ok(Some(unsafe { req.ifr_ifru.ifru_ifindex } as u32))
    }

    /// The link named `name`, or `None` when it does not exist.
    pub fn link_by_name(&mut self, name: &str) -> io::Result<Option<Link>> {
        // The kernel's limit (IFNAMSIZ); a longer name would overflow netlink's attribute
        // length or come back as a bare ERANGE.
        if name.is_empty() || name.len() > 15 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an interface name has 1 to 15 bytes",
            ));
        }
        let m = new_link_message(name, None);
        match self.query_links(m, false) {
            Ok(links) => Ok(links.into_iter().next()),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A GET (or a dump) of links, without their statistics, parsed by hand (`Link::parse`).
    fn query_links(&mut self, mut m: LinkMessage, dump: bool) -> io::Result<Vec<Link>> {
        const RTM_NEWLINK: u16 = 16;
        m.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        let flags = if dump {
            netlink_packet_core::NLM_F_DUMP
        } else {
            netlink_packet_core::NLM_F_ACK
        };
        let seq = self.send(RouteNetlinkMessage::GetLink(m), flags)?;
        let mut out = Vec::new();
        let mut bad = false;
        self.receive_raw(seq, |kind, _, payload| {
            if kind == RTM_NEWLINK {
                match Link::parse(payload) {
                    Some(l) => out.push(l),
                    None => bad = true,
                }
            }
        })?;
        if bad {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "malformed RTM_NEWLINK message",
            ));
        }
        Ok(out)
    }

    pub fn link_by_index(&mut self, index: u32) -> io::Result<Option<Link>> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        match self.query_links(m, false) {
            Ok(links) => Ok(links.into_iter().next()),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn links(&mut self) -> io::Result<Vec<Link>> {
        self.query_links(LinkMessage::default(), true)
    }

    pub fn create_macvlan(&mut self, spec: &MacvlanLink) -> io::Result<()> {
        let mut m = new_link_message(spec.name, spec.netns.map(|n| n.as_raw_fd()));
        m.attributes.push(LinkAttribute::Link(spec.parent_index));
        if let Some(mac) = spec.mac {
            m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        }
        if let Some(mtu) = spec.mtu {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::MacVlan),
            LinkInfo::Data(InfoData::MacVlan(
                std::iter::once(InfoMacVlan::Mode(to_kernel_mode(spec.mode)))
                    .chain(spec.bc_queue_len.map(InfoMacVlan::BcQueueLen))
                    .collect(),
            )),
        ]));
        self.request(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// An ipvlan sub-interface, possibly straight inside another namespace. It has no MAC
    /// of its own: it shares the parent's.
    pub fn create_ipvlan(&mut self, spec: &IpvlanLink) -> io::Result<()> {
        let mut m = new_link_message(spec.name, spec.netns.map(|n| n.as_raw_fd()));
        m.attributes.push(LinkAttribute::Link(spec.parent_index));
        if let Some(mtu) = spec.mtu {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        let kmode = match spec.mode {
            IpvlanMode::L2 => IpVlanMode::L2,
            IpvlanMode::L3 => IpVlanMode::L3,
            IpvlanMode::L3s => IpVlanMode::L3S,
        };
        let kflags = match spec.flag {
            IpvlanFlag::Bridge => IpVlanFlags::empty(),
            IpvlanFlag::Private => IpVlanFlags::Private,
            IpvlanFlag::Vepa => IpVlanFlags::Vepa,
        };
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::IpVlan),
            LinkInfo::Data(InfoData::IpVlan(vec![
                InfoIpVlan::Mode(kmode),
                InfoIpVlan::Flags(kflags),
            ])),
        ]));
        self.request(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// An 802.1Q sub-interface `name` of `base` carrying VLAN `vid`.
    pub fn create_vlan(
        &mut self,
        name: &str,
        base_index: u32,
        vid: u16,
        netns: Option<&Netns>,
    ) -> io::Result<()> {
        let mut m = new_link_message(name, netns.map(|n| n.as_raw_fd()));
        m.attributes.push(LinkAttribute::Link(base_index));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vlan),
            LinkInfo::Data(InfoData::Vlan(vec![InfoVlan::Id(vid)])),
        ]));
        self.request(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// A link of `kind` stacked on `parent_index` with default settings: used to probe
    /// whether the kernel supports a link type at all.
    pub fn create_probe_link(
        &mut self,
        name: &str,
        parent_index: u32,
        kind: ProbeKind,
    ) -> io::Result<()> {
        let mut m = new_link_message(name, None);
        m.attributes.push(LinkAttribute::Link(parent_index));
        let info = match kind {
            ProbeKind::Macvlan => vec![
                LinkInfo::Kind(InfoKind::MacVlan),
                LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(
                    MacVlanMode::Bridge,
                )])),
            ],
            ProbeKind::Vlan => vec![
                LinkInfo::Kind(InfoKind::Vlan),
                LinkInfo::Data(InfoData::Vlan(vec![InfoVlan::Id(42)])),
            ],
            ProbeKind::Ipvlan => vec![
                LinkInfo::Kind(InfoKind::IpVlan),
                LinkInfo::Data(InfoData::IpVlan(vec![InfoIpVlan::Mode(IpVlanMode::L2)])),
            ],
            ProbeKind::Macvtap => vec![
                LinkInfo::Kind(InfoKind::MacVtap),
                LinkInfo::Data(InfoData::MacVtap(vec![InfoMacVtap::Mode(
                    MacVtapMode::Bridge,
                )])),
            ],
        };
        m.attributes.push(LinkAttribute::LinkInfo(info));
        self.request(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
    }

    pub fn create_veth(&mut self, a: VethEnd, b: VethEnd) -> io::Result<()> {
        let peer = new_link_message(b.name, b.netns.map(|n| n.as_raw_fd()));
        let mut m = new_link_message(a.name, a.netns.map(|n| n.as_raw_fd()));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        self.request(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
    }

    pub fn create_bridge(&mut self, name: &str) -> io::Result<()> {
        let mut m = new_link_message(name, None);
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.request(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
    }

    fn set_link(&mut self, index: u32, edit: impl FnOnce(&mut LinkMessage)) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        edit(&mut m);
        self.request(RouteNetlinkMessage::SetLink(m), 0)
    }

    pub fn set_up(&mut self, index: u32, up: bool) -> io::Result<()> {
        self.set_link(index, |m| {
            m.header.change_mask = LinkFlags::Up;
            m.header.flags = if up {
                LinkFlags::Up
            } else {
                LinkFlags::empty()
            };
        })
    }

    /// Brings a link up and turns on its IPv4 `arp_notify` (a gratuitous ARP whenever its
    /// MAC changes or peers must be told) in the same message. Through netlink rather than
    /// /proc/sys: opening a per-interface sysctl file walks a dcache chain holding that
    /// name for every namespace on the machine, which gets slow with thousands of
    /// containers, while RTM_SETLINK finds the link by index.
    /// With `mac`, the link takes that MAC in the same message, before it goes up (the
    /// kernel applies the address before the flags).
    pub fn set_up_announcing(&mut self, index: u32, mac: Option<MacAddr>) -> io::Result<()> {
        self.set_link(index, |m| {
            if let Some(mac) = mac {
                m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
            }
            m.header.change_mask = LinkFlags::Up;
            m.header.flags = LinkFlags::Up;
            m.attributes.push(LinkAttribute::Other(DefaultNla::new(
                IFLA_AF_SPEC,
                inet_devconf(IPV4_DEVCONF_ARP_NOTIFY, 1),
            )));
        })
    }

    pub fn set_master(&mut self, index: u32, master: u32) -> io::Result<()> {
        self.set_link(index, |m| {
            m.attributes.push(LinkAttribute::Controller(master))
        })
    }

    /// Hairpin mode on a bridge port: frames may leave through the port they came in on,
    /// which is what a VEPA (802.1Qbg) switch does.
    /// (Port options travel in IFLA_INFO_SLAVE_DATA, which the kernel applies only through
    /// RTM_NEWLINK on an existing link; RTM_SETLINK silently ignores them.)
    pub fn set_hairpin(&mut self, index: u32, on: bool) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(
                on,
            )])),
        ]));
        self.request(RouteNetlinkMessage::NewLink(m), 0)
    }

    pub fn set_name(&mut self, index: u32, name: &str) -> io::Result<()> {
        self.set_link(index, |m| {
            m.attributes.push(LinkAttribute::IfName(name.to_string()))
        })
    }

    pub fn set_mac(&mut self, index: u32, mac: MacAddr) -> io::Result<()> {
        self.set_link(index, |m| {
            m.attributes.push(LinkAttribute::Address(mac.0.to_vec()))
        })
    }

    /// Deletes a link; a link that is already gone is not an error.
    pub fn delete_link(&mut self, index: u32) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        match self.request(RouteNetlinkMessage::DelLink(m), 0) {
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
            other => other,
        }
    }

    pub fn delete_link_by_name(&mut self, name: &str) -> io::Result<bool> {
        match self.link_by_name(name)? {
            Some(l) => self.delete_link(l.index).map(|_| true),
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod parse_tests {
    use netlink_packet_core::Emitable;
    use netlink_packet_route::link::{
        InfoData, InfoIpVlan, InfoKind, InfoMacVlan, IpVlanMode, LinkAttribute, LinkFlags,
        LinkInfo, LinkMessage, MacVlanMode, State,
    };

    use super::Link;

    fn both_ways(m: LinkMessage) -> Link {
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(&mut buf);
        let by_hand = Link::parse(&buf).expect("parses");
        assert_eq!(by_hand, Link::from_message(m));
        by_hand
    }

    fn message(flags: LinkFlags, attributes: Vec<LinkAttribute>) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = 7;
        m.header.flags = flags;
        m.attributes = attributes;
        m
    }

    #[test]
    fn a_macvlan_reads_the_same_by_hand_as_through_the_library() {
        let l = both_ways(message(
            LinkFlags::Up | LinkFlags::LowerUp | LinkFlags::Broadcast,
            vec![
                LinkAttribute::IfName("eth0".into()),
                LinkAttribute::Mtu(1500),
                LinkAttribute::MaxMtu(9000),
                LinkAttribute::Link(3),
                LinkAttribute::Address(vec![2, 0x42, 10, 0, 0, 9]),
                LinkAttribute::OperState(State::Up),
                LinkAttribute::LinkInfo(vec![
                    LinkInfo::Kind(InfoKind::MacVlan),
                    LinkInfo::Data(InfoData::MacVlan(vec![
                        InfoMacVlan::Mode(MacVlanMode::Passthrough),
                        InfoMacVlan::BcQueueLen(1000),
                    ])),
                ]),
            ],
        ));
        assert_eq!(l.name, "eth0");
        assert_eq!(
            (l.index, l.mtu, l.max_mtu, l.parent_index),
            (7, 1500, Some(9000), Some(3))
        );
        assert!(l.up && l.carrier && !l.loopback);
        assert_eq!(l.macvlan_mode, Some(crate::model::MacvlanMode::Passthru));
        assert_eq!(l.mac.unwrap().to_string(), "02:42:0a:00:00:09");
    }

    #[test]
    fn ipvlan_bridge_port_and_bare_links_read_the_same_by_hand() {
        let l = both_ways(message(
            LinkFlags::empty(),
            vec![
                LinkAttribute::IfName("ipv1".into()),
                LinkAttribute::LinkInfo(vec![
                    LinkInfo::Kind(InfoKind::IpVlan),
                    LinkInfo::Data(InfoData::IpVlan(vec![InfoIpVlan::Mode(IpVlanMode::L3S)])),
                ]),
            ],
        ));
        assert_eq!(l.ipvlan_mode, Some(crate::model::network::IpvlanMode::L3s));
        assert!(!l.up);
        let l = both_ways(message(
            LinkFlags::Loopback | LinkFlags::Up,
            vec![
                LinkAttribute::IfName("veth-a".into()),
                LinkAttribute::Controller(12),
                LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth)]),
            ],
        ));
        assert_eq!((l.kind.as_str(), l.master_index), ("veth", Some(12)));
        assert!(l.loopback);
        // No kind at all (plain hardware), and a kind the library does not know.
        let l = both_ways(message(
            LinkFlags::Up,
            vec![LinkAttribute::IfName("lo".into())],
        ));
        assert_eq!(l.kind, "");
        let l = both_ways(message(
            LinkFlags::Up,
            vec![LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Other("newkind".into()),
            )])],
        ));
        assert_eq!(l.kind, "newkind");
    }

    #[test]
    fn a_truncated_message_is_refused_not_misread() {
        let m = message(LinkFlags::Up, vec![LinkAttribute::IfName("eth0".into())]);
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(&mut buf);
        assert!(Link::parse(&buf[..10]).is_none());
        // An attribute whose length runs past the end stops the walk: no garbage name.
        let cut = Link::parse(&buf[..buf.len() - 4]).expect("the header is whole");
        assert_eq!(cut.name, "");
    }
}
