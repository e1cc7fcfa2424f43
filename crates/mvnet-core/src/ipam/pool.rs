use std::net::IpAddr;

use ipnet::IpNet;

use super::{ip_to_u128, u128_to_ip};
use crate::{invalid, Result};

/// One subnet of a network with what may be handed out of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub subnet: IpNet,
    pub gateway: Option<IpAddr>,
    /// `--ip-range`: only addresses inside it are handed out automatically.
    pub range: Option<IpNet>,
    /// `--aux-address` values: never handed out.
    pub aux: Vec<IpAddr>,
    /// CNI host-local style `rangeStart` / `rangeEnd` (inclusive), on top of `range`.
    pub start: Option<IpAddr>,
    pub end: Option<IpAddr>,
}

impl Pool {
    /// The first and last address handed out automatically, when the pool is limited to
    /// less than its subnet (`--ip-range`, `rangeStart`, `rangeEnd`).
    pub fn handed_out_bounds(&self) -> Option<(u128, u128)> {
        if self.range.is_none() && self.start.is_none() && self.end.is_none() {
            return None;
        }
        let span = self.range.unwrap_or(self.subnet);
        let lo = self
            .start
            .map(ip_to_u128)
            .unwrap_or(0)
            .max(ip_to_u128(span.network()));
        let hi = self
            .end
            .map(ip_to_u128)
            .unwrap_or(u128::MAX)
            .min(ip_to_u128(span.broadcast()));
        Some((lo, hi))
    }

    /// Validates a subnet with its gateway, range and aux addresses, with messages that say
    /// how to fix each mistake.
    pub fn new(
        subnet: IpNet,
        gateway: Option<IpAddr>,
        range: Option<IpNet>,
        aux: Vec<IpAddr>,
    ) -> Result<Pool> {
        check_prefix(&subnet)?;
        if subnet.trunc() != subnet {
            return Err(invalid!(
                "invalid subnet {subnet}: host bits are set; did you mean --subnet={}?",
                subnet.trunc()
            ));
        }
        let pool = Pool {
            subnet,
            gateway,
            range,
            aux,
            start: None,
            end: None,
        };
        if let Some(gw) = gateway {
            if !subnet.contains(&gw) {
                return Err(invalid!(
                    "gateway {gw} is outside subnet {subnet}; pass a --gateway inside it (for example {})",
                    u128_to_ip(ip_to_u128(subnet.network()) + 1, subnet.network().is_ipv6())
                ));
            }
            if !pool.is_host_address(gw) {
                return Err(invalid!(
                    "gateway {gw} is the network or broadcast address of {subnet}; pick a host address"
                ));
            }
        }
        if let Some(r) = range {
            if r.trunc() != r {
                return Err(invalid!(
                    "invalid --ip-range {r}: host bits are set; did you mean {}?",
                    r.trunc()
                ));
            }
            if !subnet.contains(&r) {
                return Err(invalid!(
                    "--ip-range {r} is outside subnet {subnet}; give a range inside the subnet"
                ));
            }
        }
        for a in &pool.aux {
            if !subnet.contains(a) {
                return Err(invalid!(
                    "--aux-address {a} is outside subnet {subnet}; reserve addresses inside the subnet"
                ));
            }
        }
        if pool.first_last().is_none() {
            return Err(invalid!(
                "subnet {subnet} with range {} leaves no address to hand out; widen --ip-range",
                range.map(|r| r.to_string()).unwrap_or_default()
            ));
        }
        Ok(pool)
    }

    /// Limits automatic allocation to `start..=end` (CNI's rangeStart/rangeEnd).
    pub fn with_bounds(mut self, start: Option<IpAddr>, end: Option<IpAddr>) -> Result<Pool> {
        for (what, ip) in [("rangeStart", start), ("rangeEnd", end)] {
            if let Some(ip) = ip {
                if !self.subnet.contains(&ip) {
                    return Err(invalid!(
                        "{what} {ip} is outside subnet {}; give an address inside it",
                        self.subnet
                    ));
                }
            }
        }
        self.start = start;
        self.end = end;
        if self.first_last().is_none() {
            return Err(invalid!(
                "rangeStart/rangeEnd leave no address to hand out in {}; check their order",
                self.subnet
            ));
        }
        Ok(self)
    }

    pub fn is_v6(&self) -> bool {
        self.subnet.network().is_ipv6()
    }

    /// Whether `ip` is neither the network address nor (IPv4) the broadcast address.
    /// A /31 has no such addresses (RFC 3021).
    fn is_host_address(&self, ip: IpAddr) -> bool {
        let v = ip_to_u128(ip);
        let net = ip_to_u128(self.subnet.network());
        let bc = ip_to_u128(self.subnet.broadcast());
        match self.subnet {
            IpNet::V4(n) if n.prefix_len() == 31 => true,
            IpNet::V4(_) => v != net && v != bc,
            IpNet::V6(_) => v != net,
        }
    }

    /// First and last addresses that automatic allocation may use.
    pub fn first_last(&self) -> Option<(u128, u128)> {
        let span = self.range.unwrap_or(self.subnet);
        let mut first = ip_to_u128(span.network());
        let mut last = ip_to_u128(span.broadcast());
        if !self.is_host_address(u128_to_ip(first, self.is_v6())) {
            first += 1;
        }
        if !self.is_host_address(u128_to_ip(last, self.is_v6())) {
            last -= 1;
        }
        if let Some(s) = self.start {
            first = first.max(ip_to_u128(s));
        }
        if let Some(e) = self.end {
            last = last.min(ip_to_u128(e));
        }
        (first <= last).then_some((first, last))
    }

    /// Number of addresses in the automatic range (before removing gateway and aux).
    pub fn size(&self) -> u128 {
        self.first_last().map(|(f, l)| l - f + 1).unwrap_or(0)
    }

    fn is_reserved(&self, ip: IpAddr) -> bool {
        self.gateway == Some(ip) || self.aux.contains(&ip)
    }

    /// Whether a *static* request may take `ip`: anywhere in the subnet (even outside
    /// `--ip-range`, as Docker allows), except the reserved addresses.
    pub fn check_static(&self, ip: IpAddr) -> Result<()> {
        if !self.subnet.contains(&ip) {
            return Err(invalid!(
                "requested address {ip} is outside subnet {}; pick an address inside it",
                self.subnet
            ));
        }
        if !self.is_host_address(ip) {
            return Err(invalid!(
                "requested address {ip} is the network or broadcast address of {}",
                self.subnet
            ));
        }
        if self.gateway == Some(ip) {
            return Err(invalid!(
                "requested address {ip} is the gateway of {}; pick another",
                self.subnet
            ));
        }
        if self.aux.contains(&ip) {
            return Err(invalid!(
                "requested address {ip} is reserved by --aux-address; pick another"
            ));
        }
        Ok(())
    }

    /// Round-robin allocation. `cursor` is the last address handed out from this pool;
    /// `taken_upper_bound` is at least the number of addresses already allocated here, which
    /// bounds the search so that a full pool is detected without walking a /64.
    /// `is_taken` answers from the caller's store, inside the caller's transaction.
    pub fn allocate<E>(
        &self,
        cursor: Option<IpAddr>,
        taken_upper_bound: u128,
        mut is_taken: impl FnMut(IpAddr) -> Result<bool, E>,
    ) -> Result<Option<IpAddr>, E> {
        let Some((first, last)) = self.first_last() else {
            return Ok(None);
        };
        let size = last - first + 1;
        let start = match cursor.map(ip_to_u128) {
            Some(c) if c >= first && c < last => c + 1,
            _ => first,
        };
        // Among `taken + reserved + 1` distinct candidates at least one is free, unless the
        // range is smaller than that: then we try every address once.
        let reserved = 1 + self.aux.len() as u128;
        let tries = size.min(taken_upper_bound.saturating_add(reserved).saturating_add(1));
        let v6 = self.is_v6();
        let mut cand = start;
        for _ in 0..tries {
            let ip = u128_to_ip(cand, v6);
            if !self.is_reserved(ip) && !is_taken(ip)? {
                return Ok(Some(ip));
            }
            cand = if cand == last { first } else { cand + 1 };
        }
        Ok(None)
    }
}

fn check_prefix(subnet: &IpNet) -> Result<()> {
    let p = subnet.prefix_len();
    let ok = match subnet {
        IpNet::V4(_) => (8..=31).contains(&p),
        IpNet::V6(_) => (64..=127).contains(&p),
    };
    if ok {
        Ok(())
    } else {
        Err(invalid!(
            "invalid subnet {subnet}: the prefix must be /8 to /31 for IPv4 or /64 to /127 for IPv6"
        ))
    }
}

/// Docker's rule for networks sharing a parent (and so one LAN): overlapping subnets are
/// refused unless both limit what they hand out (`--ip-range`, or CNI's `rangeStart` /
/// `rangeEnd`) to disjoint ranges.
pub fn check_overlap(new: &Pool, other: &Pool, other_network: &str) -> Result<()> {
    if !nets_overlap(&new.subnet, &other.subnet) {
        return Ok(());
    }
    if let (Some(a), Some(b)) = (new.handed_out_bounds(), other.handed_out_bounds()) {
        if a.1 < b.0 || b.1 < a.0 {
            return Ok(());
        }
    }
    Err(crate::conflict!(
        "subnet {} overlaps subnet {} of network {other_network} on the same parent; use a different subnet, or give both networks disjoint --ip-range values",
        new.subnet,
        other.subnet
    ))
}

fn nets_overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::convert::Infallible;

    use super::*;

    fn pool(subnet: &str, gw: Option<&str>, range: Option<&str>, aux: &[&str]) -> Result<Pool> {
        Pool::new(
            subnet.parse().unwrap(),
            gw.map(|g| g.parse().unwrap()),
            range.map(|r| r.parse().unwrap()),
            aux.iter().map(|a| a.parse().unwrap()).collect(),
        )
    }

    /// Allocates like the store does, from a set.
    fn alloc(p: &Pool, cursor: &mut Option<IpAddr>, taken: &mut HashSet<IpAddr>) -> Option<IpAddr> {
        let ip = p
            .allocate::<Infallible>(*cursor, taken.len() as u128, |ip| Ok(taken.contains(&ip)))
            .unwrap()?;
        taken.insert(ip);
        *cursor = Some(ip);
        Some(ip)
    }

    #[test]
    fn seed_first_address_is_dot_two_then_three() {
        let p = pool("10.103.19.0/24", Some("10.103.19.1"), None, &[]).unwrap();
        let (mut c, mut t) = (None, HashSet::new());
        assert_eq!(
            alloc(&p, &mut c, &mut t).unwrap().to_string(),
            "10.103.19.2"
        );
        assert_eq!(
            alloc(&p, &mut c, &mut t).unwrap().to_string(),
            "10.103.19.3"
        );
    }

    #[test]
    fn released_address_not_reused_until_wrap() {
        let p = pool("10.0.0.0/29", Some("10.0.0.1"), None, &[]).unwrap(); // .2-.6 usable
        let (mut c, mut t) = (None, HashSet::new());
        let a = alloc(&p, &mut c, &mut t).unwrap(); // .2
        t.remove(&a);
        let got: Vec<String> = (0..5)
            .map(|_| alloc(&p, &mut c, &mut t).unwrap().to_string())
            .collect();
        assert_eq!(
            got,
            ["10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.2"]
        );
        assert_eq!(
            alloc(&p, &mut c, &mut t),
            None,
            "full pool must report exhaustion"
        );
    }

    #[test]
    fn never_hands_out_network_broadcast_gateway_aux() {
        let p = pool(
            "192.168.1.0/28",
            Some("192.168.1.5"),
            None,
            &["192.168.1.9"],
        )
        .unwrap();
        let (mut c, mut t) = (None, HashSet::new());
        let mut got = Vec::new();
        while let Some(ip) = alloc(&p, &mut c, &mut t) {
            got.push(ip.to_string());
        }
        assert_eq!(got.len(), 14 - 2);
        for bad in ["192.168.1.0", "192.168.1.15", "192.168.1.5", "192.168.1.9"] {
            assert!(!got.contains(&bad.to_string()), "{bad} handed out");
        }
    }

    #[test]
    fn ip_range_limits_allocation() {
        let p = pool("10.1.0.0/16", Some("10.1.0.1"), Some("10.1.5.0/30"), &[]).unwrap();
        let (mut c, mut t) = (None, HashSet::new());
        let mut got = Vec::new();
        while let Some(ip) = alloc(&p, &mut c, &mut t) {
            got.push(ip.to_string());
        }
        // A range is a slice of the subnet: its own first/last are usable hosts of the subnet.
        assert_eq!(got, ["10.1.5.0", "10.1.5.1", "10.1.5.2", "10.1.5.3"]);
    }

    #[test]
    fn slash_31_and_ipv6() {
        let p = pool("10.9.9.0/31", None, None, &[]).unwrap();
        assert_eq!(p.size(), 2);
        let p = pool("2001:db8::/64", Some("2001:db8::1"), None, &[]).unwrap();
        let (mut c, mut t) = (None, HashSet::new());
        assert_eq!(
            alloc(&p, &mut c, &mut t).unwrap().to_string(),
            "2001:db8::2"
        );
        let p = pool("2001:db8::/127", None, None, &[]).unwrap();
        assert_eq!(p.size(), 1);
    }

    #[test]
    fn bad_pools_are_refused_with_hints() {
        let e = pool("10.0.0.5/24", None, None, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("10.0.0.0/24"), "{e}");
        let e = pool("10.0.0.0/24", Some("10.0.1.1"), None, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside subnet"), "{e}");
        let e = pool("10.0.0.0/24", None, Some("10.0.1.0/28"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside subnet"), "{e}");
        assert!(pool("10.0.0.0/32", None, None, &[]).is_err());
        assert!(pool("10.0.0.0/7", None, None, &[]).is_err());
        assert!(pool("2001:db8::/48", None, None, &[]).is_err());
        assert!(pool("10.0.0.0/24", Some("10.0.0.255"), None, &[]).is_err());
        assert!(pool("10.0.0.0/24", None, None, &["10.0.9.9"]).is_err());
    }

    #[test]
    fn range_start_and_end_bound_allocation() {
        let p = pool("10.1.2.0/24", Some("10.1.2.1"), None, &[])
            .unwrap()
            .with_bounds(
                Some("10.1.2.100".parse().unwrap()),
                Some("10.1.2.101".parse().unwrap()),
            )
            .unwrap();
        let (mut c, mut t) = (None, HashSet::new());
        let got: Vec<_> = std::iter::from_fn(|| alloc(&p, &mut c, &mut t))
            .map(|i| i.to_string())
            .collect();
        assert_eq!(got, ["10.1.2.100", "10.1.2.101"]);
        let p = pool("10.1.2.0/24", None, None, &[]).unwrap();
        assert!(p
            .clone()
            .with_bounds(Some("10.9.0.1".parse().unwrap()), None)
            .is_err());
        assert!(p
            .with_bounds(
                Some("10.1.2.9".parse().unwrap()),
                Some("10.1.2.3".parse().unwrap())
            )
            .is_err());
    }

    #[test]
    fn static_requests() {
        let p = pool(
            "10.0.0.0/24",
            Some("10.0.0.1"),
            Some("10.0.0.128/25"),
            &["10.0.0.7"],
        )
        .unwrap();
        assert!(
            p.check_static("10.0.0.50".parse().unwrap()).is_ok(),
            "outside range is fine"
        );
        assert!(p.check_static("10.0.0.1".parse().unwrap()).is_err());
        assert!(p.check_static("10.0.0.7".parse().unwrap()).is_err());
        assert!(p.check_static("10.0.0.255".parse().unwrap()).is_err());
        assert!(p.check_static("10.0.1.5".parse().unwrap()).is_err());
    }

    #[test]
    fn overlap_rules() {
        let a = pool("10.0.0.0/24", None, None, &[]).unwrap();
        let b = pool("10.0.0.0/16", None, None, &[]).unwrap();
        assert!(check_overlap(&a, &b, "b")
            .unwrap_err()
            .to_string()
            .contains("network b"));
        let a = pool("10.0.0.0/24", None, Some("10.0.0.0/25"), &[]).unwrap();
        let b = pool("10.0.0.0/24", None, Some("10.0.0.128/25"), &[]).unwrap();
        assert!(check_overlap(&a, &b, "b").is_ok());
        let c = pool("10.0.1.0/24", None, None, &[]).unwrap();
        assert!(check_overlap(&a, &c, "c").is_ok());
    }

    #[test]
    fn dense_pool_allocation_stays_bounded() {
        // Fill a /16 completely, then free one address far behind the cursor: the search
        // must still find it (exhaustion is never reported while an address is free).
        let p = pool("10.2.0.0/16", Some("10.2.0.1"), None, &[]).unwrap();
        let (mut c, mut t) = (None, HashSet::new());
        while alloc(&p, &mut c, &mut t).is_some() {}
        assert_eq!(t.len(), 65534 - 1);
        let freed: IpAddr = "10.2.3.4".parse().unwrap();
        t.remove(&freed);
        assert_eq!(alloc(&p, &mut c, &mut t), Some(freed));
    }
}
