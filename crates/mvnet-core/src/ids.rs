//! Docker-style identifiers: 64 lowercase hex characters, shown shortened to 12.

use std::io::Read;

/// A fresh random 256-bit id as 64 hex characters.
pub fn new_id() -> String {
    let mut bytes = [0u8; 32];
    random_bytes(&mut bytes);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(64);
    for b in bytes {
        id.push(HEX[(b >> 4) as usize] as char);
        id.push(HEX[(b & 15) as usize] as char);
    }
    id
}

/// The 12-character form shown in tables (`NETWORK ID`, `CONTAINER ID`).
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Fills `buf` from the kernel's CSPRNG: getrandom(2), one system call (it never blocks
/// after boot), falling back to /dev/urandom where the call is missing or filtered.
pub fn random_bytes(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: getrandom(2) writes at most the given length into the live buffer.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        match n {
            n if n > 0 => filled += n as usize,
            _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => {}
            _ => {
                std::fs::File::open("/dev/urandom")
                    .and_then(|mut f| f.read_exact(&mut buf[filled..]))
                    .expect("/dev/urandom must be readable");
                return;
            }
        }
    }
}

/// Whether `s` looks like an id prefix (hex only), so lookups can accept both names and ids.
pub fn is_hex_prefix(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// FNV-1a, 64 bits: a small hash that is the same on every build and platform (std's
/// hasher makes no such promise), for identities derived from names.
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex_and_unique() {
        let a = new_id();
        let b = new_id();
        assert_eq!(a.len(), 64);
        assert!(is_hex_prefix(&a));
        assert_ne!(a, b);
        assert_eq!(short(&a).len(), 12);
    }
}
