//! Raw ARP on one interface: RFC 5227 announcements, so switches and neighbours learn at
//! once that an address now lives at a new MAC (an address moved, a container restarted).
//! The kernel's arp_notify sends one at link-up; mvnet sends three more, spaced out.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use crate::model::MacAddr;
use crate::netns::{self, Netns};
use crate::{Error, Result};

pub(crate) const ETH_P_ARP: u16 = 0x0806;
pub(crate) const ARP_REQUEST: u16 = 1;

/// An ARP packet (Ethernet/IPv4): 28 bytes. Pure, so it is unit-tested.
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

/// A packet socket for ARP, bound to one interface of one namespace.
pub struct ArpSocket {
    fd: OwnedFd,
    ifindex: u32,
}

impl ArpSocket {
    /// Opens a send-only socket inside `ns` (a packet socket belongs to the namespace it was
    /// created in). Protocol 0 on purpose: a socket with a protocol registers a receive
    /// hook, and closing it then waits for synchronize_net(), about 10 ms. The ethertype is
    /// given per packet in sendto instead.
    pub fn open_in(ns: &Netns, ifindex: u32) -> Result<ArpSocket> {
        netns::run_in(ns, || ArpSocket::open_here(ifindex))?
    }

    /// The same, in the calling thread's current namespace (for callers already inside it).
    pub fn open_here(ifindex: u32) -> Result<ArpSocket> {
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(Error::kernel(
                "open ARP socket",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(ArpSocket {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            ifindex,
        })
    }

    /// Names the interface to send on (a send-only socket is not bound to one).
    pub fn on(mut self, ifindex: u32) -> ArpSocket {
        self.ifindex = ifindex;
        self
    }

    /// Broadcasts one ARP packet on the interface.
    pub fn send(&self, packet: &[u8; 28]) -> Result<()> {
        if send_raw(self.fd.as_raw_fd(), self.ifindex, packet) < 0 {
            return Err(Error::kernel("send ARP", std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Sends one announcement now and `more` further ones `interval` apart from a detached
    /// child process, so the attach returns at once. The child holds nothing else: its
    /// stdio goes to /dev/null (a CNI runtime waits for our stdout to close).
    ///
    /// `hand_over`: a socket whose close would stall us (a receiving packet socket waits
    /// for synchronize_net); the child keeps it open and the kernel closes it when the
    /// child exits, off the attach path.
    pub fn announce(
        self,
        mac: MacAddr,
        ip: Ipv4Addr,
        more: u32,
        interval: Duration,
        hand_over: Option<OwnedFd>,
    ) -> Result<()> {
        let packet = announcement(mac, ip);
        // Best effort: a busy parent (ENOBUFS when hundreds of macvlans share it) must not
        // fail the attach; the kernel's own arp_notify announcement went out already.
        if let Err(e) = self.send(&packet) {
            tracing::warn!(%ip, error = %e, "ARP announcement not sent");
        }
        if more == 0 {
            drop(hand_over);
            return Ok(());
        }
        let (fd, ifindex) = (self.fd.as_raw_fd(), self.ifindex);
        // SAFETY: the child only calls async-signal-safe functions (setsid, open, dup2,
        // nanosleep, sendto, _exit) on data prepared before the fork.
        let devnull = c"/dev/null".as_ptr();
        let ts = libc::timespec {
            tv_sec: interval.as_secs() as i64,
            tv_nsec: interval.subsec_nanos() as i64,
        };
        match unsafe { libc::fork() } {
            0 => unsafe {
                libc::setsid();
                let null = libc::open(devnull, libc::O_RDWR);
                for std_fd in 0..3 {
                    libc::dup2(null, std_fd);
                }
                for _ in 0..more {
                    libc::nanosleep(&ts, std::ptr::null_mut());
                    send_raw(fd, ifindex, &packet);
                }
                libc::_exit(0)
            },
            -1 => Err(Error::kernel(
                "fork the ARP announcer",
                std::io::Error::last_os_error(),
            )),
            // Our copy of `hand_over` is dropped here; the child's is now the last one.
            _ => Ok(()),
        }
    }
}

pub(crate) fn send_raw(fd: i32, ifindex: u32, packet: &[u8; 28]) -> isize {
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = ETH_P_ARP.to_be();
    to.sll_ifindex = ifindex as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    unsafe {
        libc::sendto(
            fd,
            packet.as_ptr() as *const libc::c_void,
            packet.len(),
            0,
            &to as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    }
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
}
