//! MAC addresses and the rule that derives them from IPv4 addresses.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The seed's (and pre-v28 Docker's) rule: `02:42` followed by the four IPv4 bytes.
    /// Stable across restarts, so DHCP reservations and LAN monitors keep working.
    /// `from_ipv4` for an address of either family: None for IPv6.
    pub fn from_ipv4_addr(ip: std::net::IpAddr) -> Option<Self> {
        match ip {
            std::net::IpAddr::V4(v4) => Some(Self::from_ipv4(v4)),
            std::net::IpAddr::V6(_) => None,
        }
    }

    pub fn from_ipv4(ip: Ipv4Addr) -> Self {
        let o = ip.octets();
        MacAddr([0x02, 0x42, o[0], o[1], o[2], o[3]])
    }

    /// A random unicast, locally administered address (for IPv6-only endpoints).
    pub fn random_local() -> Self {
        let mut b = [0u8; 6];
        crate::ids::random_bytes(&mut b);
        b[0] = (b[0] & 0xfe) | 0x02;
        MacAddr(b)
    }

    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            crate::invalid!(
                "invalid MAC address '{s}': expected six hex bytes like 02:42:0a:67:13:02"
            )
        };
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut b = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 {
                return Err(bad());
            }
            b[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        let mac = MacAddr(b);
        if mac.is_multicast() {
            return Err(crate::invalid!(
                "invalid MAC address '{s}': it is a multicast address (lowest bit of the first byte set); use a unicast one such as 02:..."
            ));
        }
        if b == [0; 6] {
            return Err(crate::invalid!("invalid MAC address '{s}': all zeros"));
        }
        Ok(mac)
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_rule_matches_the_seed_transcript() {
        let mac = MacAddr::from_ipv4("10.103.19.2".parse().unwrap());
        assert_eq!(mac.to_string(), "02:42:0a:67:13:02");
        let mac = MacAddr::from_ipv4("10.103.18.2".parse().unwrap());
        assert_eq!(mac.to_string(), "02:42:0a:67:12:02");
    }

    #[test]
    fn parse_round_trip_and_rejects() {
        let m: MacAddr = "C2:11:22:33:44:55".parse().unwrap();
        assert_eq!(m.to_string(), "c2:11:22:33:44:55");
        assert!("01:00:5e:00:00:01".parse::<MacAddr>().is_err());
        assert!("zz:11:22:33:44:55".parse::<MacAddr>().is_err());
        assert!("11:22:33:44:55".parse::<MacAddr>().is_err());
        assert!("00:00:00:00:00:00".parse::<MacAddr>().is_err());
    }

    #[test]
    fn random_is_local_unicast() {
        for _ in 0..100 {
            let m = MacAddr::random_local();
            assert_eq!(m.0[0] & 0x03, 0x02);
        }
    }
}
