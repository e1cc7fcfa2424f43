//! Conflict probing before an address is used. IPv4 follows RFC 5227: ARP probes with
//! sender address 0.0.0.0 from the new interface, before the address is configured, and a
//! short listening window. IPv6 uses the kernel's duplicate address detection; the frames
//! seen here name the device that answered it.
//!
//! The packet parsing is pure (unit-tested); `Listener` is the socket around it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::announce::{arp_packet, ARP_REQUEST};
use crate::model::MacAddr;
use crate::packet::{send_arp_broadcast, socket, ETH_P_ARP};
use crate::{Error, Result};

const ETH_P_ALL: u16 = 0x0003;
const ETH_P_IPV6: u16 = 0x86dd;
const ICMPV6: u8 = 58;
const NEIGHBOR_SOLICITATION: u8 = 135;
const NEIGHBOR_ADVERTISEMENT: u8 = 136;

/// What a probe found: `ip` is in use on the LAN, by `holder` when the answer was captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressTaken {
    pub ip: IpAddr,
    pub holder: Option<MacAddr>,
}

impl AddressTaken {
    /// The holder for messages: its MAC, or "a device" when unknown.
    pub fn who(&self) -> String {
        self.holder
            .map(|m| format!("the device with MAC {m}"))
            .unwrap_or_else(|| "another device".into())
    }
}

/// The RFC 5227 probe: "who has `ip`?", asked without claiming any address.
pub fn probe_packet(mac: MacAddr, ip: Ipv4Addr) -> [u8; 28] {
    arp_packet(ARP_REQUEST, mac, Ipv4Addr::UNSPECIFIED, MacAddr([0; 6]), ip)
}

/// Whether an ARP packet (the 28-byte payload) shows that someone else uses `candidate`:
/// any ARP it sends with `candidate` as sender address (a reply to our probe, an
/// announcement, a request), or a probe of its own for the same address (RFC 5227 2.1.1:
/// two hosts probing at once both back off). Returns that sender's MAC.
pub fn arp_conflict(arp: &[u8], candidate: Ipv4Addr, ours: MacAddr) -> Option<MacAddr> {
    if arp.len() < 28 || arp[0..6] != [0, 1, 8, 0, 6, 4] {
        return None;
    }
    let op = u16::from_be_bytes([arp[6], arp[7]]);
    let sha = MacAddr(arp[8..14].try_into().ok()?);
    let spa = Ipv4Addr::new(arp[14], arp[15], arp[16], arp[17]);
    let tpa = Ipv4Addr::new(arp[24], arp[25], arp[26], arp[27]);
    // Anything sent *from* the candidate is someone else's, even with our own MAC: we send
    // nothing from it while probing, and under the 02:42 + IPv4 rule another holder of the
    // address (a container on another host of a shared pool) has exactly our MAC.
    if spa == candidate {
        return Some(sha);
    }
    // Our own probe, reflected back (a VEPA switch does that), is not a competitor.
    if sha == ours {
        return None;
    }
    if op == ARP_REQUEST && spa.is_unspecified() && tpa == candidate {
        return Some(sha);
    }
    None
}

/// Whether an IPv6 packet is a neighbour advertisement for `candidate` (its holder defends
/// it), or another node's DAD solicitation for it (source `::`). Returns `sender`, the
/// frame's source MAC, when it is not ours.
pub fn ndp_conflict(
    packet: &[u8],
    candidate: Ipv6Addr,
    sender: MacAddr,
    ours: MacAddr,
) -> Option<MacAddr> {
    if sender == ours || packet.len() < 64 || packet[0] >> 4 != 6 || packet[6] != ICMPV6 {
        return None;
    }
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&packet[8..24]).ok()?);
    let target = Ipv6Addr::from(<[u8; 16]>::try_from(&packet[48..64]).ok()?);
    if target != candidate {
        return None;
    }
    match packet[40] {
        NEIGHBOR_ADVERTISEMENT => Some(sender),
        NEIGHBOR_SOLICITATION if src.is_unspecified() => Some(sender),
        _ => None,
    }
}

/// One frame received on the listener.
struct Frame {
    protocol: u16,
    sender: MacAddr,
    len: usize,
}

/// A packet socket that sees every frame of one interface, opened inside the container's
/// namespace. It is created with protocol 0 (no receive hook, so creating it is free) and
/// starts receiving only when bound, after the link is up.
///
/// Closing a receiving packet socket waits for synchronize_net() (~10 ms): hand the fd to
/// a process that outlives the attach (the announcer) with `into_fd` to keep that off the
/// attach path.
pub struct Listener {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl Listener {
    /// Opens the socket in the calling thread's current namespace.
    pub fn open_here() -> Result<Listener> {
        // Protocol 0: nothing is received until `bind` names the interface.
        Ok(Listener {
            fd: socket(libc::AF_PACKET, libc::SOCK_DGRAM, 0, "probe")?,
            buf: vec![0; 2048],
        })
    }

    /// Starts receiving every frame of interface `ifindex` (of the socket's namespace).
    pub fn bind(&mut self, ifindex: u32) -> Result<()> {
        // SAFETY: a plain C struct, for which all-zero bytes are a valid value.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = ETH_P_ALL.to_be();
        sa.sll_ifindex = ifindex as i32;
        // SAFETY: the address is a live, fully initialised struct of the size given.
        let rc = unsafe {
            libc::bind(
                self.fd.as_raw_fd(),
                &sa as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc < 0 {
            return Err(Error::kernel(
                "bind the probe socket",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// The next frame already queued, if any (frames we sent ourselves are skipped).
    fn next_frame(&mut self) -> Option<Frame> {
        loop {
            // SAFETY: a plain C struct, for which all-zero bytes are a valid value.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr() as *mut libc::c_void,
                    self.buf.len(),
                    libc::MSG_DONTWAIT,
                    &mut from as *mut _ as *mut libc::sockaddr,
                    &mut from_len,
                )
            };
            if n < 0 {
                return None;
            }
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&from.sll_addr[..6]);
            return Some(Frame {
                protocol: u16::from_be(from.sll_protocol),
                sender: MacAddr(mac),
                len: n as usize,
            });
        }
    }

    /// Waits until a frame is queued or `until` passes.
    fn wait(&self, until: Instant) {
        let left = until.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: one live pollfd, and the count says one.
        unsafe { libc::poll(&mut pfd, 1, ms) };
    }

    /// Probes for `ip` from interface `ifindex` (which must be up, bound, and not yet hold
    /// the address): one ARP probe at once and one half-way through `window`, answers
    /// watched until the window closes. Returns the MAC of a device that uses the address.
    pub fn probe_v4(
        &mut self,
        ifindex: u32,
        mac: MacAddr,
        ip: Ipv4Addr,
        window: Duration,
    ) -> Result<Option<MacAddr>> {
        let packet = probe_packet(mac, ip);
        let start = Instant::now();
        let deadline = start + window;
        let second = start + window / 2;
        let mut sent = 0;
        loop {
            let now = Instant::now();
            if sent == 0 || (sent == 1 && now >= second) {
                if send_arp_broadcast(self.fd.as_raw_fd(), ifindex, &packet) < 0 {
                    // A full parent queue (ENOBUFS) drops one probe; the other still goes.
                    tracing::warn!(%ip, error = %std::io::Error::last_os_error(), "ARP probe not sent");
                }
                sent += 1;
            }
            while let Some(f) = self.next_frame() {
                if f.protocol == ETH_P_ARP {
                    if let Some(holder) = arp_conflict(&self.buf[..f.len], ip, mac) {
                        return Ok(Some(holder));
                    }
                }
            }
            if now >= deadline {
                return Ok(None);
            }
            self.wait(if sent == 1 {
                second.min(deadline)
            } else {
                deadline
            });
        }
    }

    /// The device that defended `ip` against our DAD, from the frames queued so far.
    pub fn ndp_holder(&mut self, ip: Ipv6Addr, ours: MacAddr) -> Option<MacAddr> {
        while let Some(f) = self.next_frame() {
            if f.protocol == ETH_P_IPV6 {
                if let Some(h) = ndp_conflict(&self.buf[..f.len], ip, f.sender, ours) {
                    return Some(h);
                }
            }
        }
        None
    }

    /// The socket, to be closed by someone who can afford the wait (see the type's doc).
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(s: &str) -> MacAddr {
        s.parse().unwrap()
    }

    #[test]
    fn probe_claims_no_address() {
        let p = probe_packet(mac("02:42:0a:00:00:05"), "10.0.0.5".parse().unwrap());
        assert_eq!(&p[6..8], &[0, 1], "a request");
        assert_eq!(
            &p[14..18],
            &[0, 0, 0, 0],
            "sender IP 0.0.0.0 (RFC 5227 2.1.1)"
        );
        assert_eq!(&p[18..24], &[0; 6]);
        assert_eq!(&p[24..28], &[10, 0, 0, 5]);
    }

    #[test]
    fn arp_conflicts_are_answers_uses_and_competing_probes() {
        let ours = mac("02:42:0a:00:00:05");
        let them = mac("00:11:22:33:44:55");
        let ip: Ipv4Addr = "10.0.0.5".parse().unwrap();
        let other: Ipv4Addr = "10.0.0.9".parse().unwrap();
        let zero = Ipv4Addr::UNSPECIFIED;
        let reply = arp_packet(2, them, ip, ours, zero);
        assert_eq!(
            arp_conflict(&reply, ip, ours),
            Some(them),
            "a reply to our probe"
        );
        let announce = crate::announce::announcement(them, ip);
        assert_eq!(arp_conflict(&announce, ip, ours), Some(them));
        let probing = probe_packet(them, ip);
        assert_eq!(
            arp_conflict(&probing, ip, ours),
            Some(them),
            "a competing probe"
        );
        // A twin: another holder of the address with our MAC (the 02:42 rule) answers.
        assert_eq!(
            arp_conflict(&arp_packet(2, ours, ip, ours, zero), ip, ours),
            Some(ours)
        );
        // Not conflicts: our own frames, traffic about other addresses, someone asking for ip.
        assert_eq!(arp_conflict(&probe_packet(ours, ip), ip, ours), None);
        assert_eq!(
            arp_conflict(&arp_packet(2, them, other, ours, zero), ip, ours),
            None
        );
        let asking = arp_packet(1, them, other, MacAddr([0; 6]), ip);
        assert_eq!(
            arp_conflict(&asking, ip, ours),
            None,
            "a resolver, not a holder"
        );
        assert_eq!(arp_conflict(&reply[..20], ip, ours), None, "truncated");
        let mut not_ipv4 = reply;
        not_ipv4[3] = 0x06;
        assert_eq!(arp_conflict(&not_ipv4, ip, ours), None);
    }

    fn icmpv6(kind: u8, src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
        let mut p = vec![0u8; 64];
        p[0] = 0x60;
        p[6] = ICMPV6;
        p[7] = 255;
        p[8..24].copy_from_slice(&src.octets());
        p[40] = kind;
        p[48..64].copy_from_slice(&target.octets());
        p
    }

    #[test]
    fn ndp_conflicts_are_advertisements_and_competing_dad() {
        let ours = mac("02:00:00:00:00:01");
        let them = mac("00:11:22:33:44:55");
        let ip: Ipv6Addr = "2001:db8::5".parse().unwrap();
        let theirs: Ipv6Addr = "2001:db8::9".parse().unwrap();
        let na = icmpv6(NEIGHBOR_ADVERTISEMENT, theirs, ip);
        assert_eq!(ndp_conflict(&na, ip, them, ours), Some(them));
        let dad = icmpv6(NEIGHBOR_SOLICITATION, Ipv6Addr::UNSPECIFIED, ip);
        assert_eq!(ndp_conflict(&dad, ip, them, ours), Some(them));
        let resolve = icmpv6(NEIGHBOR_SOLICITATION, theirs, ip);
        assert_eq!(
            ndp_conflict(&resolve, ip, them, ours),
            None,
            "address resolution"
        );
        assert_eq!(ndp_conflict(&na, ip, ours, ours), None, "our own");
        assert_eq!(
            ndp_conflict(&na, theirs, them, ours),
            None,
            "another target"
        );
        let mut udp = na.clone();
        udp[6] = 17;
        assert_eq!(ndp_conflict(&udp, ip, them, ours), None);
    }
}
