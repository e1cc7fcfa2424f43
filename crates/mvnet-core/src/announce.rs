//! Announcements after attach, so switches and neighbours learn at once that an address now
//! lives at a new MAC (an address moved, a container restarted): RFC 5227 gratuitous ARP
//! for IPv4 and unsolicited neighbour advertisements (RFC 4861 7.2.6) for IPv6, three of
//! each, one second apart. The packets are built here (pure, unit-tested).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use crate::model::MacAddr;
use crate::packet::{send_arp_broadcast, send_to, socket};
use crate::{Error, Result};

pub(crate) const ARP_REQUEST: u16 = 1;
const NEIGHBOR_ADVERTISEMENT: u8 = 136;
/// The NA "override" flag: replace whatever link-layer address a neighbour has cached.
const NA_OVERRIDE: u32 = 0x2000_0000;

/// An ARP packet (Ethernet/IPv4): 28 bytes.
pub fn arp_packet(op: u16, sha: MacAddr, spa: Ipv4Addr, tha: MacAddr, tpa: Ipv4Addr) -> [u8; 28] {
    let mut p = [0u8; 28];
    p[0..2].copy_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    p[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    p[4] = 6;
    p[5] = 4;
    p[6..8].copy_from_slice(&op.to_be_bytes());
    p[8..14].copy_from_slice(&sha.0);
    p[14..18].copy_from_slice(&spa.octets());
    p[18..24].copy_from_slice(&tha.0);
    p[24..28].copy_from_slice(&tpa.octets());
    p
}

/// RFC 5227 announcement: an ARP request whose sender and target address are both ours.
pub fn announcement(mac: MacAddr, ip: Ipv4Addr) -> [u8; 28] {
    arp_packet(ARP_REQUEST, mac, ip, MacAddr([0; 6]), ip)
}

/// Unsolicited neighbour advertisement for `ip` at `mac` (the ICMPv6 message; the kernel
/// adds the IPv6 header and the checksum): override set, solicited clear, and the target
/// link-layer address option.
pub fn unsolicited_na(mac: MacAddr, ip: Ipv6Addr) -> [u8; 32] {
    let mut p = [0u8; 32];
    p[0] = NEIGHBOR_ADVERTISEMENT;
    p[4..8].copy_from_slice(&NA_OVERRIDE.to_be_bytes());
    p[8..24].copy_from_slice(&ip.octets());
    p[24] = 2; // option: target link-layer address
    p[25] = 1; // length in units of 8 bytes
    p[26..32].copy_from_slice(&mac.0);
    p
}

/// Sockets for the announcements of one endpoint, opened inside its namespace (a socket
/// belongs to the namespace it was created in).
pub struct Announcer {
    /// Send-only packet socket. Protocol 0 on purpose: a socket with a protocol registers a
    /// receive hook, and closing it then waits for synchronize_net(), about 10 ms. The
    /// ethertype is given per packet in sendto instead.
    arp: Option<OwnedFd>,
    /// Raw ICMPv6 socket (hop limit 255, as NDP requires).
    ndp: Option<OwnedFd>,
    /// The namespace the sockets belong to: the announcer process joins it, so that
    /// whoever removes the container (and kills every process in its namespace) stops the
    /// announcements too, before they could announce an address that is gone.
    netns: Option<OwnedFd>,
}

/// What to announce, on which interface.
pub struct Announce {
    pub ifindex: u32,
    pub mac: MacAddr,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// Announcements per address (the first at once, the rest from a detached child).
    pub count: u32,
    pub interval: Duration,
}

impl Announcer {
    /// Opens the sockets needed, in the calling thread's current namespace.
    pub fn open_here(ipv4: bool, ipv6: bool) -> Result<Announcer> {
        let netns = std::fs::File::open("/proc/thread-self/ns/net")
            .ok()
            .map(OwnedFd::from);
        let arp = if ipv4 {
            Some(socket(libc::AF_PACKET, libc::SOCK_DGRAM, 0, "ARP")?)
        } else {
            None
        };
        let ndp = if ipv6 {
            let fd = socket(
                libc::AF_INET6,
                libc::SOCK_RAW,
                libc::IPPROTO_ICMPV6,
                "ICMPv6",
            )?;
            let hops: libc::c_int = 255;
            // SAFETY: the option value is a live c_int and its size is given.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::IPPROTO_IPV6,
                    libc::IPV6_MULTICAST_HOPS,
                    &hops as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as u32,
                )
            };
            if rc < 0 {
                return Err(Error::kernel(
                    "set ICMPv6 hop limit",
                    std::io::Error::last_os_error(),
                ));
            }
            Some(fd)
        } else {
            None
        };
        Ok(Announcer { arp, ndp, netns })
    }

    /// Sends the announcements of each address from a detached child process (the first at
    /// once, the rest `interval` apart), so the attach returns at once. The child holds nothing else: its stdio goes
    /// to /dev/null (a CNI runtime waits for our stdout to close).
    ///
    /// `hand_over`: a socket whose close would stall us (a receiving packet socket waits
    /// for synchronize_net); the child keeps it open and the kernel closes it when the
    /// child exits, off the attach path.
    pub fn announce(self, what: &Announce, hand_over: Option<OwnedFd>) -> Result<()> {
        let arp = self
            .arp
            .as_ref()
            .zip(what.ipv4)
            .map(|(fd, ip)| (fd.as_raw_fd(), announcement(what.mac, ip)));
        let ndp = match (self.ndp.as_ref(), what.ipv6) {
            // The advertisement's source is the address itself (it is not tentative: DAD
            // is done or was skipped), so neighbours may cache it right away.
            (Some(fd), Some(ip)) => match bind_v6(fd.as_raw_fd(), ip, what.ifindex) {
                Ok(()) => Some((fd.as_raw_fd(), unsolicited_na(what.mac, ip))),
                Err(e) => {
                    tracing::warn!(%ip, error = %e, "no neighbour advertisements");
                    None
                }
            },
            _ => None,
        };
        let ifindex = what.ifindex;
        let send_all = || {
            // Best effort: a busy parent (ENOBUFS when hundreds of macvlans share it) must
            // not fail an attach; the kernel's own notifications went out too.
            if let Some((fd, packet)) = &arp {
                send_arp_broadcast(*fd, ifindex, packet);
            }
            if let Some((fd, packet)) = &ndp {
                send_all_nodes(*fd, ifindex, packet);
            }
        };
        if what.count == 0 || (arp.is_none() && ndp.is_none()) {
            return Ok(());
        }
        if what.count == 1 {
            send_all();
            return Ok(());
        }
        if let Some(resident) = RESIDENT.get() {
            // A long-lived process (the CNI agent) hands the job to its announcer thread:
            // no fork on the attach path, and no child left for it to reap.
            let job = Job {
                ifindex,
                arp: self.arp.zip(arp.map(|(_, p)| p)),
                ndp: self.ndp.zip(ndp.map(|(_, p)| p)),
                left: what.count,
                interval: what.interval,
                // The first one a moment later, not at once: the agent answers its caller
                // first (each broadcast on a busy parent costs the kernel a while), and the
                // kernel's own announcement at link-up has gone out already.
                next: std::time::Instant::now() + FIRST_FROM_THREAD,
                _hand_over: hand_over,
            };
            let _ = resident.lock().map(|tx| tx.send(job));
            return Ok(());
        }
        let devnull = c"/dev/null".as_ptr();
        let ts = libc::timespec {
            tv_sec: what.interval.as_secs() as i64,
            tv_nsec: what.interval.subsec_nanos() as i64,
        };
        // SAFETY: the child only makes async-signal-safe calls (sendto, nanosleep, close, _exit) on data prepared before the fork.
        match unsafe { libc::fork() } {
            0 => unsafe {
                libc::setsid();
                // Named, so `rm -f` tells it from an mvnet command visiting the namespace.
                libc::prctl(libc::PR_SET_NAME, ANNOUNCER_COMM.as_ptr(), 0, 0, 0);
                // Into the container's namespace (see `netns`); on failure, announce anyway.
                if let Some(ns) = &self.netns {
                    libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET);
                }
                let null = libc::open(devnull, libc::O_RDWR);
                for std_fd in 0..3 {
                    libc::dup2(null, std_fd);
                }
                // Keep only our sockets: the caller's descriptors (a shell's pipe, say)
                // must not stay open for the seconds we run.
                let keep = [
                    self.netns.as_ref().map_or(-1, |fd| fd.as_raw_fd()),
                    arp.as_ref().map_or(-1, |(fd, _)| *fd),
                    ndp.as_ref().map_or(-1, |(fd, _)| *fd),
                    hand_over.as_ref().map_or(-1, |fd| fd.as_raw_fd()),
                ];
                crate::process::close_fds_except(&keep);
                // The first one at once, here rather than in the attach: in macvlan bridge
                // mode the sender's own sendto delivers a broadcast to every other port on
                // the parent, which with a thousand containers takes milliseconds.
                send_all();
                for _ in 1..what.count {
                    libc::nanosleep(&ts, std::ptr::null_mut());
                    send_all();
                }
                libc::_exit(0)
            },
            -1 => {
                // No child: announce once, inline, rather than fail the attach.
                tracing::warn!(error = %std::io::Error::last_os_error(), "cannot fork the announcer; announcing once");
                send_all();
                Ok(())
            }
            _ => {
                // The child holds its own copy now, so dropping ours closes nothing.
                drop(hand_over);
                Ok(())
            }
        }
    }
}

/// The process name (comm) of a forked announcer.
pub const ANNOUNCER_NAME: &str = "mvnet-announce";
const ANNOUNCER_COMM: &std::ffi::CStr = c"mvnet-announce";

/// How long the announcer thread waits before an endpoint's first announcement.
const FIRST_FROM_THREAD: Duration = Duration::from_millis(3);

/// The announcer thread of a long-lived process (see `announce_from_a_thread`).
static RESIDENT: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<Job>>> =
    std::sync::OnceLock::new();

/// One endpoint's announcements, owned by the announcer thread until the last one is out.
struct Job {
    ifindex: u32,
    arp: Option<(OwnedFd, [u8; 28])>,
    ndp: Option<(OwnedFd, [u8; 32])>,
    left: u32,
    interval: Duration,
    next: std::time::Instant,
    /// Closed with the job, off the attach path (see `announce`).
    _hand_over: Option<OwnedFd>,
}

/// From now on this process sends its announcements from one background thread instead of
/// a forked child per attach. For resident processes only: a short-lived one would exit
/// before its thread had sent the later announcements. A socket keeps its namespace, so
/// the thread needs no `setns`; once the link is deleted, its sends just fail.
pub fn announce_from_a_thread() {
    RESIDENT.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::spawn(move || {
            let mut jobs: Vec<Job> = Vec::new();
            loop {
                let now = std::time::Instant::now();
                for job in jobs.iter_mut().filter(|j| j.next <= now) {
                    if let Some((fd, packet)) = &job.arp {
                        send_arp_broadcast(fd.as_raw_fd(), job.ifindex, packet);
                    }
                    if let Some((fd, packet)) = &job.ndp {
                        send_all_nodes(fd.as_raw_fd(), job.ifindex, packet);
                    }
                    job.left -= 1;
                    job.next = now + job.interval;
                }
                jobs.retain(|j| j.left > 0);
                let wait = jobs
                    .iter()
                    .map(|j| j.next.saturating_duration_since(now))
                    .min();
                let got = match wait {
                    Some(w) => rx
                        .recv_timeout(w)
                        .map_err(|e| matches!(e, std::sync::mpsc::RecvTimeoutError::Disconnected)),
                    None => rx.recv().map_err(|_| true),
                };
                match got {
                    Ok(job) => jobs.push(job),
                    Err(true) => return,
                    Err(false) => {}
                }
            }
        });
        std::sync::Mutex::new(tx)
    });
}

fn bind_v6(fd: i32, ip: Ipv6Addr, ifindex: u32) -> Result<()> {
    // SAFETY: a plain C struct, for which all-zero bytes are a valid value.
    let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    sa.sin6_family = libc::AF_INET6 as u16;
    sa.sin6_addr.s6_addr = ip.octets();
    sa.sin6_scope_id = ifindex;
    // SAFETY: the address is a live, fully initialised struct of the size given.
    let rc = unsafe {
        libc::bind(
            fd,
            &sa as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in6>() as u32,
        )
    };
    if rc < 0 {
        return Err(Error::kernel(
            format!("bind the NA socket to {ip}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Sends an ICMPv6 message to all nodes (ff02::1) on the interface.
fn send_all_nodes(fd: i32, ifindex: u32, packet: &[u8]) -> isize {
    // SAFETY: a plain C struct, for which all-zero bytes are a valid value.
    let mut to: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    to.sin6_family = libc::AF_INET6 as u16;
    to.sin6_addr.s6_addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets();
    to.sin6_scope_id = ifindex;
    send_to(fd, packet, &to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcement_layout_follows_rfc_5227() {
        let mac = MacAddr::from_ipv4("10.103.19.2".parse().unwrap());
        let p = announcement(mac, "10.103.19.2".parse().unwrap());
        assert_eq!(
            &p[0..8],
            &[0, 1, 8, 0, 6, 4, 0, 1],
            "Ethernet/IPv4, request"
        );
        assert_eq!(&p[8..14], &mac.0, "sender MAC");
        assert_eq!(&p[14..18], &[10, 103, 19, 2], "sender IP is ours");
        assert_eq!(&p[18..24], &[0; 6], "target MAC unknown");
        assert_eq!(&p[24..28], &[10, 103, 19, 2], "target IP is ours too");
    }

    #[test]
    fn unsolicited_na_layout_follows_rfc_4861() {
        let mac: MacAddr = "02:42:0a:67:13:02".parse().unwrap();
        let ip: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let p = unsolicited_na(mac, ip);
        assert_eq!(p[0], 136, "neighbour advertisement");
        assert_eq!(p[1], 0, "code 0");
        assert_eq!(
            &p[4..8],
            &[0x20, 0, 0, 0],
            "override, not solicited, not router"
        );
        assert_eq!(&p[8..24], &ip.octets(), "target is the address");
        assert_eq!(
            &p[24..26],
            &[2, 1],
            "target link-layer address option, 8 bytes"
        );
        assert_eq!(&p[26..32], &mac.0);
    }
}
