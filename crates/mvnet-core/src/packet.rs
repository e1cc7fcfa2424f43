//! Raw sockets, written once for the conflict probe (`probe`) and the announcements
//! (`announce`): opening one, and sending a frame or a datagram to a typed address.

use std::os::fd::{FromRawFd, OwnedFd};

use crate::{Error, Result};

pub(crate) const ETH_P_ARP: u16 = 0x0806;

/// A socket with close-on-exec set; `what` names it in errors.
pub(crate) fn socket(domain: i32, kind: i32, protocol: i32, what: &str) -> Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; the returned fd is checked and owned below.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(Error::kernel(
            format!("open {what} socket"),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: the fd was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// sendto(2) with a typed socket address.
pub(crate) fn send_to<A>(fd: i32, packet: &[u8], to: &A) -> isize {
    // SAFETY: the packet pointer and length describe a live slice, and the address is a live struct of the size given.
    unsafe {
        libc::sendto(
            fd,
            packet.as_ptr() as *const libc::c_void,
            packet.len(),
            0,
            to as *const A as *const libc::sockaddr,
            std::mem::size_of::<A>() as u32,
        )
    }
}

/// Broadcasts one ARP packet on the interface.
pub(crate) fn send_arp_broadcast(fd: i32, ifindex: u32, packet: &[u8; 28]) -> isize {
    // SAFETY: a plain C struct, for which all-zero bytes are a valid value.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = ETH_P_ARP.to_be();
    to.sll_ifindex = ifindex as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    send_to(fd, packet, &to)
}
