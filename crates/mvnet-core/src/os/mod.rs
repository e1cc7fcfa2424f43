//! The operating system below mvnet's attach logic, behind traits, so that the engine, the
//! driver, the parent and host-access code run against the real kernel in production and
//! against an in-memory fake in unit tests (no root, any step made to fail).
//!
//! - [`Rtnl`]: the rtnetlink operations mvnet uses in one network namespace;
//! - [`Os`]: namespaces, and the one trip into a container's namespace that the attach
//!   makes for its sockets and sysctls ([`Inside`]);
//! - [`ProbeListener`] and [`Announcing`]: the packet sockets of the conflict probe and of
//!   the announcements.
//!
//! [`RealOs`] is the kernel; `fake::FakeOs` (tests only) is the fake.

#[cfg(test)]
pub mod fake;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;
use std::time::Duration;

use ipnet::IpNet;

use crate::announce::{Announce, Announcer};
use crate::model::MacAddr;
use crate::netlink::{IpvlanLink, Link, MacvlanLink, Netlink, Route};
use crate::netns::Netns;
use crate::probe::Listener;
use crate::{Error, Result};

/// The rtnetlink operations mvnet uses, in one network namespace.
pub trait Rtnl {
    fn link_by_name(&mut self, name: &str) -> io::Result<Option<Link>>;
    /// Only the index of the link named `name` (cheaper than `link_by_name` in a kernel).
    fn index_of(&mut self, name: &str) -> io::Result<Option<u32>> {
        Ok(self.link_by_name(name)?.map(|l| l.index))
    }
    fn link_by_index(&mut self, index: u32) -> io::Result<Option<Link>>;
    fn links(&mut self) -> io::Result<Vec<Link>>;
    fn routes(&mut self, v6: bool) -> io::Result<Vec<Route>>;
    fn addresses(&mut self, index: Option<u32>) -> io::Result<Vec<(u32, IpAddr, u8)>>;
    fn create_macvlan(&mut self, spec: &MacvlanLink) -> io::Result<()>;
    fn create_ipvlan(&mut self, spec: &IpvlanLink) -> io::Result<()>;
    fn create_vlan(&mut self, name: &str, base_index: u32, vid: u16) -> io::Result<()>;
    fn set_up(&mut self, index: u32, up: bool) -> io::Result<()>;
    /// Up, with arp_notify on, and the MAC `mac` first when given (one message).
    fn set_up_announcing(&mut self, index: u32, mac: Option<MacAddr>) -> io::Result<()>;
    fn set_name(&mut self, index: u32, name: &str) -> io::Result<()>;
    fn set_mac(&mut self, index: u32, mac: MacAddr) -> io::Result<()>;
    fn delete_link(&mut self, index: u32) -> io::Result<()>;
    fn delete_link_by_name(&mut self, name: &str) -> io::Result<bool>;
    fn add_address(&mut self, index: u32, ip: IpAddr, prefix: u8) -> io::Result<()>;
    fn add_address_dad(&mut self, index: u32, ip: IpAddr, prefix: u8, dad: bool) -> io::Result<()>;
    fn del_address(&mut self, index: u32, ip: IpAddr, prefix: u8) -> io::Result<()>;
    fn add_route(
        &mut self,
        dst: Option<IpNet>,
        gateway: Option<IpAddr>,
        oif: u32,
    ) -> io::Result<()>;
    fn del_route(&mut self, dst: IpNet, oif: u32) -> io::Result<()>;
    /// (tentative, dadfailed) addresses of the interface.
    fn dad_state(&mut self, index: u32) -> io::Result<(Vec<IpAddr>, Vec<IpAddr>)>;
}

impl Rtnl for Netlink {
    fn link_by_name(&mut self, name: &str) -> io::Result<Option<Link>> {
        Netlink::link_by_name(self, name)
    }
    fn index_of(&mut self, name: &str) -> io::Result<Option<u32>> {
        Netlink::index_of(self, name)
    }
    fn link_by_index(&mut self, index: u32) -> io::Result<Option<Link>> {
        Netlink::link_by_index(self, index)
    }
    fn links(&mut self) -> io::Result<Vec<Link>> {
        Netlink::links(self)
    }
    fn routes(&mut self, v6: bool) -> io::Result<Vec<Route>> {
        Netlink::routes(self, v6)
    }
    fn addresses(&mut self, index: Option<u32>) -> io::Result<Vec<(u32, IpAddr, u8)>> {
        Netlink::addresses(self, index)
    }
    fn create_macvlan(&mut self, spec: &MacvlanLink) -> io::Result<()> {
        Netlink::create_macvlan(self, spec)
    }
    fn create_ipvlan(&mut self, spec: &IpvlanLink) -> io::Result<()> {
        Netlink::create_ipvlan(self, spec)
    }
    fn create_vlan(&mut self, name: &str, base_index: u32, vid: u16) -> io::Result<()> {
        Netlink::create_vlan(self, name, base_index, vid, None)
    }
    fn set_up(&mut self, index: u32, up: bool) -> io::Result<()> {
        Netlink::set_up(self, index, up)
    }
    fn set_up_announcing(&mut self, index: u32, mac: Option<MacAddr>) -> io::Result<()> {
        Netlink::set_up_announcing(self, index, mac)
    }
    fn set_name(&mut self, index: u32, name: &str) -> io::Result<()> {
        Netlink::set_name(self, index, name)
    }
    fn set_mac(&mut self, index: u32, mac: MacAddr) -> io::Result<()> {
        Netlink::set_mac(self, index, mac)
    }
    fn delete_link(&mut self, index: u32) -> io::Result<()> {
        Netlink::delete_link(self, index)
    }
    fn delete_link_by_name(&mut self, name: &str) -> io::Result<bool> {
        Netlink::delete_link_by_name(self, name)
    }
    fn add_address(&mut self, index: u32, ip: IpAddr, prefix: u8) -> io::Result<()> {
        Netlink::add_address(self, index, ip, prefix)
    }
    fn add_address_dad(&mut self, index: u32, ip: IpAddr, prefix: u8, dad: bool) -> io::Result<()> {
        Netlink::add_address_dad(self, index, ip, prefix, dad)
    }
    fn del_address(&mut self, index: u32, ip: IpAddr, prefix: u8) -> io::Result<()> {
        Netlink::del_address(self, index, ip, prefix)
    }
    fn add_route(
        &mut self,
        dst: Option<IpNet>,
        gateway: Option<IpAddr>,
        oif: u32,
    ) -> io::Result<()> {
        Netlink::add_route(self, dst, gateway, oif)
    }
    fn del_route(&mut self, dst: IpNet, oif: u32) -> io::Result<()> {
        Netlink::del_route(self, dst, oif)
    }
    fn dad_state(&mut self, index: u32) -> io::Result<(Vec<IpAddr>, Vec<IpAddr>)> {
        Netlink::dad_state(self, index)
    }
}

/// The conflict probe's receiving socket (see `probe::Listener`).
pub trait ProbeListener {
    /// Starts receiving every frame of interface `ifindex`.
    fn bind(&mut self, ifindex: u32) -> Result<()>;
    /// Probes for `ip`; returns the MAC of a device that uses it.
    fn probe_v4(
        &mut self,
        ifindex: u32,
        mac: MacAddr,
        ip: Ipv4Addr,
        window: Duration,
    ) -> Result<Option<MacAddr>>;
    /// The device that defended `ip` against our DAD, if it was seen.
    fn ndp_holder(&mut self, ip: Ipv6Addr, ours: MacAddr) -> Option<MacAddr>;
    /// The socket, for someone who can afford the wait its close costs (the announcer).
    fn into_fd(self: Box<Self>) -> Option<OwnedFd>;
}

impl ProbeListener for Listener {
    fn bind(&mut self, ifindex: u32) -> Result<()> {
        Listener::bind(self, ifindex)
    }
    fn probe_v4(
        &mut self,
        ifindex: u32,
        mac: MacAddr,
        ip: Ipv4Addr,
        window: Duration,
    ) -> Result<Option<MacAddr>> {
        Listener::probe_v4(self, ifindex, mac, ip, window)
    }
    fn ndp_holder(&mut self, ip: Ipv6Addr, ours: MacAddr) -> Option<MacAddr> {
        Listener::ndp_holder(self, ip, ours)
    }
    fn into_fd(self: Box<Self>) -> Option<OwnedFd> {
        Some(Listener::into_fd(*self))
    }
}

/// The announcements after an attach (see `announce::Announcer`).
pub trait Announcing {
    fn announce(self: Box<Self>, what: &Announce, hand_over: Option<OwnedFd>) -> Result<()>;
}

impl Announcing for Announcer {
    fn announce(self: Box<Self>, what: &Announce, hand_over: Option<OwnedFd>) -> Result<()> {
        Announcer::announce(*self, what, hand_over)
    }
}

/// What the attach needs inside the container's namespace, opened in one trip.
#[derive(Debug, Clone, Default)]
pub struct EnterRequest {
    pub ifname: String,
    /// Sockets for announcements of IPv4 / IPv6 addresses.
    pub announce_v4: bool,
    pub announce_v6: bool,
    /// A listener for the conflict probe.
    pub listen: bool,
    /// `disable_ipv6=1` on the interface.
    pub disable_ipv6: bool,
    /// `ndisc_notify=1` on the interface (it has IPv6 addresses).
    pub ndisc_notify: bool,
    /// Fast DAD in this window: accept_dad=1, no solicitation delay, retransmit timer
    /// shortened (restored by `Inside::restore_after_dad`).
    pub fast_dad: Option<Duration>,
}

/// What one trip into a container's namespace opened.
pub struct Inside {
    pub rtnl: Box<dyn Rtnl>,
    pub listener: Option<Box<dyn ProbeListener>>,
    pub announcer: Option<Box<dyn Announcing>>,
    /// Puts back what `fast_dad` changed.
    pub restore_after_dad: Option<Box<dyn FnOnce() -> Result<()>>>,
}

/// Namespaces and sockets: everything of the OS that the attach logic touches.
pub trait Os {
    /// rtnetlink in mvnet's own network namespace (the host's).
    fn host(&mut self) -> Result<&mut dyn Rtnl>;
    /// A network namespace by path, checked to be one.
    fn open_netns(&mut self, path: &str) -> Result<Netns>;
    /// Whether `ns` is mvnet's own namespace.
    fn is_own_netns(&mut self, ns: &Netns) -> Result<bool>;
    /// rtnetlink inside `ns`.
    fn rtnl_in(&mut self, ns: &Netns) -> Result<Box<dyn Rtnl>>;
    /// One trip into `ns`: its rtnetlink, the sockets and the sysctls `req` asks for.
    fn enter(&mut self, ns: &Netns, req: &EnterRequest) -> Result<Inside>;
    /// A probe listener in mvnet's own namespace (the host-access shim's probe).
    fn host_listener(&mut self) -> Result<Box<dyn ProbeListener>>;
}

/// The CPUs the calling thread may run on (sched_getaffinity), lowest first.
pub fn cpus_of_this_thread() -> Vec<usize> {
    // SAFETY: an all-zero cpu_set_t is valid; the call fills it in for this thread.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the size is the set's own; the set lives for the call.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) } != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET reads a bit of the set within its size.
        .filter(|c| unsafe { libc::CPU_ISSET(*c, &set) })
        .collect()
}

/// Lets the calling thread run only on `cpus` (best effort: nothing changes on an error,
/// or when `cpus` is empty).
pub fn run_this_thread_on(cpus: &[usize]) {
    if cpus.is_empty() {
        return;
    }
    // SAFETY: an all-zero cpu_set_t is valid.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus.iter().filter(|c| **c < libc::CPU_SETSIZE as usize) {
        // SAFETY: CPU_SET writes a bit of the set within its size (checked above).
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: the size is the set's own; the set lives for the call; 0 is this thread.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
}

/// In a child between fork and exec: may run on any CPU again. A process the agent starts
/// from a worker bound to one CPU (a keeper, the DHCP agent) must not inherit that.
/// Async-signal-safe: one system call on a set on the stack.
pub fn run_anywhere_in_child() {
    // SAFETY: an all-ones cpu_set_t is valid; the kernel keeps the CPUs the process's
    // cpuset allows.
    let set: libc::cpu_set_t =
        unsafe { std::mem::transmute([0xffu8; std::mem::size_of::<libc::cpu_set_t>()]) };
    // SAFETY: the size is the set's own; the set lives for the call; 0 is this thread.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
}

/// The real kernel. The host's rtnetlink socket is opened on first use.
#[derive(Default)]
pub struct RealOs {
    host: Option<Netlink>,
    /// Keep the host's socket for this thread's next request in namespace `.0`
    /// (`for_namespace`).
    park_as: Option<u64>,
}

thread_local! {
    /// A long-lived thread's host socket between requests, with the inode of the network
    /// namespace it was opened in (a socket stays in its namespace for good).
    static PARKED_HOST: std::cell::RefCell<Option<(u64, Netlink)>> =
        const { std::cell::RefCell::new(None) };
}

impl RealOs {
    pub fn new() -> RealOs {
        RealOs::default()
    }

    /// For a resident process's worker serving one request after another: the kernel of
    /// the thread's current network namespace, whose inode is `ns`. The host's rtnetlink
    /// socket of this thread's last request in that namespace is used again, and this one's
    /// is kept when it ends (an open costs five system calls per request).
    pub fn for_namespace(ns: u64) -> RealOs {
        let host = PARKED_HOST.with(|p| {
            let mut p = p.borrow_mut();
            match p.take() {
                Some((n, nl)) if n == ns => Some(nl),
                other => {
                    *p = other;
                    None
                }
            }
        });
        RealOs {
            host,
            park_as: Some(ns),
        }
    }
}

impl Drop for RealOs {
    fn drop(&mut self) {
        if let (Some(ns), Some(nl)) = (self.park_as, self.host.take()) {
            let _ = PARKED_HOST.try_with(|p| *p.borrow_mut() = Some((ns, nl)));
        }
    }
}

impl Os for RealOs {
    fn host(&mut self) -> Result<&mut dyn Rtnl> {
        if self.host.is_none() {
            self.host = Some(Netlink::new()?);
        }
        Ok(self.host.as_mut().expect("just opened"))
    }

    fn open_netns(&mut self, path: &str) -> Result<Netns> {
        Netns::open(path)
    }

    fn is_own_netns(&mut self, ns: &Netns) -> Result<bool> {
        ns.is_current()
    }

    fn rtnl_in(&mut self, ns: &Netns) -> Result<Box<dyn Rtnl>> {
        Ok(Box::new(Netlink::in_netns(ns)?))
    }

    fn enter(&mut self, ns: &Netns, req: &EnterRequest) -> Result<Inside> {
        // One trip: sockets stay bound to the namespace they were opened in, and sysctl
        // files resolve against the namespace of the thread that opens them.
        crate::netns::run_in(ns, || -> Result<Inside> {
            let ifname = &req.ifname;
            if req.disable_ipv6 && std::path::Path::new("/proc/sys/net/ipv6").exists() {
                // Before the link is up, so it never gets even a link-local address.
                write_sysctl(
                    &format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"),
                    "1",
                )?;
            }
            // IPv4's arp_notify is set with the link-up message; IPv6's has no netlink knob.
            if req.ndisc_notify {
                write_sysctl(
                    &format!("/proc/sys/net/ipv6/conf/{ifname}/ndisc_notify"),
                    "1",
                )?;
            }
            let mut restore_after_dad: Option<Box<dyn FnOnce() -> Result<()>>> = None;
            if let Some(w) = req.fast_dad {
                // DAD in one probe window: start at once (no random delay of up to 1 s)
                // and wait `w` for a defence instead of the default 1 s.
                write_sysctl(&format!("/proc/sys/net/ipv6/conf/{ifname}/accept_dad"), "1")?;
                write_sysctl(
                    &format!("/proc/sys/net/ipv6/conf/{ifname}/router_solicitation_delay"),
                    "0",
                )?;
                let (file, old) = shorten_retrans_timer(ifname, w)?;
                restore_after_dad = Some(Box::new(move || {
                    use std::os::unix::fs::FileExt;
                    file.write_at(old.as_bytes(), 0)
                        .map(|_| ())
                        .map_err(|e| Error::io("restore the IPv6 retransmit timer", e))
                }));
            }
            let announcer: Option<Box<dyn Announcing>> = if req.announce_v4 || req.announce_v6 {
                Some(Box::new(Announcer::open_here(
                    req.announce_v4,
                    req.announce_v6,
                )?))
            } else {
                None
            };
            let listener: Option<Box<dyn ProbeListener>> = if req.listen {
                Some(Box::new(Listener::open_here()?))
            } else {
                None
            };
            Ok(Inside {
                rtnl: Box::new(Netlink::new()?),
                listener,
                announcer,
                restore_after_dad,
            })
        })?
    }

    fn host_listener(&mut self) -> Result<Box<dyn ProbeListener>> {
        Ok(Box::new(Listener::open_here()?))
    }
}

fn write_sysctl(path: &str, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|e| Error::io(format!("write {path}"), e))
}

/// Sets the interface's IPv6 retransmit timer (what DAD waits per probe) to `window`;
/// returns the open file and the old value, to restore it after DAD.
fn shorten_retrans_timer(ifname: &str, window: Duration) -> Result<(std::fs::File, String)> {
    use std::io::Read;
    use std::os::unix::fs::FileExt;
    let path = format!("/proc/sys/net/ipv6/neigh/{ifname}/retrans_time_ms");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("open {path}"), e))?;
    let mut old = String::new();
    f.read_to_string(&mut old)
        .map_err(|e| Error::io(format!("read {path}"), e))?;
    // Sysctl writes must start at offset 0.
    f.write_at(window.as_millis().max(10).to_string().as_bytes(), 0)
        .map_err(|e| Error::io(format!("write {path}"), e))?;
    Ok((f, old.trim().to_string()))
}
