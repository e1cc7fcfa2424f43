use std::io;
use std::os::fd::{AsRawFd, RawFd};

use netlink_packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoIpVlan, InfoKind, InfoMacVlan, InfoMacVtap, InfoPortData,
    InfoPortKind, InfoVeth, InfoVlan, IpVlanFlags, IpVlanMode, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage, MacVlanMode, MacVtapMode,
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

impl Link {
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
        match self.query(RouteNetlinkMessage::GetLink(m), false) {
            Ok(msgs) => Ok(msgs.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(l)),
                _ => None,
            })),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn link_by_index(&mut self, index: u32) -> io::Result<Option<Link>> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        match self.query(RouteNetlinkMessage::GetLink(m), false) {
            Ok(msgs) => Ok(msgs.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(l)),
                _ => None,
            })),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn links(&mut self) -> io::Result<Vec<Link>> {
        let msgs = self.query(RouteNetlinkMessage::GetLink(LinkMessage::default()), true)?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(l)),
                _ => None,
            })
            .collect())
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
    pub fn set_up_announcing(&mut self, index: u32) -> io::Result<()> {
        self.set_link(index, |m| {
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
