//! `mvnet-floor`: the benchmark's "exec only" contestant. It does the kernel work of one
//! macvlan attach (create the link in the container's namespace with its MAC, then address,
//! up and default route) or detach, with hand-built rtnetlink messages and nothing else: no
//! IPAM, no store, no config parsing, no allocations worth naming. Built static (musl), it
//! shows what starting a process and doing the kernel's work costs, so the table can say
//! how close each contestant gets to that floor.
//!
//!     mvnet-floor add NETNS_PATH PARENT IFNAME IPV4/PREFIX GATEWAY
//!     mvnet-floor del NETNS_PATH IFNAME

use std::ffi::CString;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const NLMSG_ERROR: u16 = 2;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINK: u16 = 5;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_MACVLAN_MODE: u16 = 1;
const MACVLAN_MODE_BRIDGE: u32 = 4;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_GATEWAY: u16 = 5;
const RTA_OIF: u16 = 4;
const NLA_F_NESTED: u16 = 0x8000;

/// One rtnetlink message under construction.
struct Msg(Vec<u8>);

impl Msg {
    fn new(kind: u16, flags: u16, body: &[u8]) -> Msg {
        let mut v = vec![0u8; 16];
        v[4..6].copy_from_slice(&kind.to_ne_bytes());
        v[6..8].copy_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        v[8..12].copy_from_slice(&1u32.to_ne_bytes());
        v.extend_from_slice(body);
        Msg(v)
    }
    fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Msg {
        let len = 4 + data.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(data);
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
        self
    }
    /// Starts a nested attribute; `end` fills in its length.
    fn begin(&mut self, kind: u16) -> usize {
        let at = self.0.len();
        self.0.extend_from_slice(&[0, 0]);
        self.0
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        at
    }
    fn end(&mut self, at: usize) {
        let len = (self.0.len() - at) as u16;
        self.0[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }
    fn finish(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[0..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

fn die(what: &str, err: std::io::Error) -> ! {
    eprintln!("mvnet-floor: {what}: {err}");
    std::process::exit(1)
}

fn rtnetlink() -> OwnedFd {
    // SAFETY: socket(2) with constant arguments; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        die("netlink socket", std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Sends one request and waits for its acknowledgement.
fn request(sock: &OwnedFd, what: &str, msg: Msg) {
    let bytes = msg.finish();
    // SAFETY: the buffer is live for the call.
    let n = unsafe { libc::send(sock.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
    if n < 0 {
        die(what, std::io::Error::last_os_error());
    }
    let mut buf = [0u8; 4096];
    // SAFETY: the buffer is live and its length is given.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 20 {
        die(what, std::io::Error::last_os_error());
    }
    let kind = u16::from_ne_bytes([buf[4], buf[5]]);
    let code = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
    if kind == NLMSG_ERROR && code != 0 {
        die(what, std::io::Error::from_raw_os_error(-code));
    }
}

fn ifinfomsg(index: i32, flags: u32, change: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b[12..16].copy_from_slice(&change.to_ne_bytes());
    b
}

fn index_of(name: &str) -> i32 {
    let c = CString::new(name).expect("no NUL in a name");
    // SAFETY: a valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        die(name, std::io::Error::last_os_error());
    }
    i as i32
}

fn enter(netns: &std::fs::File) {
    // SAFETY: setns of this single-threaded process to a namespace fd we hold.
    if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        die("setns", std::io::Error::last_os_error());
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| -> &str { args.get(i).map(String::as_str).unwrap_or("") };
    let netns = std::fs::File::open(arg(2)).unwrap_or_else(|e| die(arg(2), e));
    match arg(1) {
        "add" => {
            let (parent, ifname) = (arg(3), arg(4));
            let (ip, prefix) = arg(5).split_once('/').unwrap_or((arg(5), "32"));
            let ip: Ipv4Addr = ip
                .parse()
                .unwrap_or_else(|e| die("address", std::io::Error::other(e)));
            let prefix: u8 = prefix.parse().unwrap_or(32);
            let gw: Ipv4Addr = arg(6)
                .parse()
                .unwrap_or_else(|e| die("gateway", std::io::Error::other(e)));
            let o = ip.octets();
            let mac = [0x02, 0x42, o[0], o[1], o[2], o[3]];
            let host = rtnetlink();
            let mut m = Msg::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &ifinfomsg(0, 0, 0));
            let mut name = ifname.as_bytes().to_vec();
            name.push(0);
            m.attr(IFLA_IFNAME, &name)
                .attr(IFLA_LINK, &(index_of(parent) as u32).to_ne_bytes())
                .attr(IFLA_ADDRESS, &mac)
                .attr(IFLA_NET_NS_FD, &(netns.as_raw_fd() as u32).to_ne_bytes());
            let info = m.begin(IFLA_LINKINFO);
            m.attr(IFLA_INFO_KIND, b"macvlan");
            let data = m.begin(IFLA_INFO_DATA);
            m.attr(IFLA_MACVLAN_MODE, &MACVLAN_MODE_BRIDGE.to_ne_bytes());
            m.end(data);
            m.end(info);
            request(&host, "create the macvlan", m);
            enter(&netns);
            let inside = rtnetlink();
            let index = index_of(ifname);
            let mut ifa = [0u8; 8];
            ifa[0] = libc::AF_INET as u8;
            ifa[1] = prefix;
            ifa[4..8].copy_from_slice(&(index as u32).to_ne_bytes());
            let mut m = Msg::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &ifa);
            m.attr(IFA_LOCAL, &o).attr(IFA_ADDRESS, &o);
            request(&inside, "add the address", m);
            let up = libc::IFF_UP as u32;
            request(
                &inside,
                "set the link up",
                Msg::new(RTM_NEWLINK, 0, &ifinfomsg(index, up, up)),
            );
            // rtmsg: AF_INET, main table, boot protocol, universe scope, unicast.
            let rt = [libc::AF_INET as u8, 0, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0];
            let mut m = Msg::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, &rt);
            m.attr(RTA_GATEWAY, &gw.octets())
                .attr(RTA_OIF, &(index as u32).to_ne_bytes());
            request(&inside, "add the default route", m);
        }
        "del" => {
            enter(&netns);
            let inside = rtnetlink();
            let index = index_of(arg(3));
            request(
                &inside,
                "delete the link",
                Msg::new(RTM_DELLINK, 0, &ifinfomsg(index, 0, 0)),
            );
        }
        _ => {
            eprintln!(
                "usage: mvnet-floor add NETNS PARENT IFNAME IP/PREFIX GATEWAY | del NETNS IFNAME"
            );
            std::process::exit(2)
        }
    }
}
