//! IP address management, as pure logic: no kernel, no store. The store feeds it the
//! "is this address taken?" answers inside its own transaction.
//!
//! Allocation is round-robin from the last address handed out (like CNI host-local), so a
//! just-released address is not reused until the range wraps and LAN ARP caches stay right.
//! It is O(1) amortised: after the cursor, the next candidate is almost always free.

mod pool;

pub use pool::{check_overlap, Pool};

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Addresses as integers make range arithmetic uniform across IPv4 and IPv6.
pub fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

pub fn u128_to_ip(v: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(v))
    } else {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    }
}

/// The store key for an address: 16 big-endian bytes, so byte order is numeric order for
/// both families (IPv4 is mapped into the low 32 bits, with a distinct marker byte).
pub fn ip_key(ip: IpAddr) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = if ip.is_ipv6() { 6 } else { 4 };
    k[1..].copy_from_slice(&ip_to_u128(ip).to_be_bytes());
    k
}
