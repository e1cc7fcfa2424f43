//! After attach, the LAN hears RFC 5227 announcements for the new IPv4 address and
//! unsolicited neighbour advertisements for the IPv6 one, spaced out (root; a raw listener
//! in the lab's peer namespace).

mod common;
use common::TestLab;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// One frame as seen by the peer: (time, source MAC, ethertype, payload).
type Seen = (Instant, [u8; 6], u16, Vec<u8>);

/// Collects every frame arriving on the peer's eth0 until `stop` is set.
fn listen(lab: &TestLab, stop: &AtomicBool) -> Vec<Seen> {
    let sniffer =
        mvnet_lab::testkit::Sniffer::open(&lab.guard.lab.netns_path("peer"), "eth0", 0x0003);
    let mut seen = Vec::new();
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        if let Some((n, from)) = sniffer.recv(&mut buf) {
            seen.push((
                Instant::now(),
                from.sll_addr[..6].try_into().unwrap(),
                u16::from_be(from.sll_protocol),
                buf[..n].to_vec(),
            ));
        }
    }
    seen
}

/// Asserts at least three, spread over at least 1.5 s (a burst at link-up is not enough).
fn three_spaced_out(what: &str, times: &[Instant]) {
    assert!(times.len() >= 3, "{what} seen by the peer: {}", times.len());
    let spread = *times.last().unwrap() - times[0];
    assert!(
        spread >= Duration::from_millis(1500),
        "{what} spaced out, not a burst: {spread:?}"
    );
}

#[test]
fn attach_is_announced_three_times_spaced_out_on_both_families() {
    let lab = TestLab::new();
    lab.seed_network("n", &["--ipv6", "--subnet", "fd00:66::/64"]);
    let stop = AtomicBool::new(false);
    let seen = std::thread::scope(|s| {
        let h = s.spawn(|| listen(&lab, &stop));
        std::thread::sleep(Duration::from_millis(200));
        lab.container("c", "n", &["--ip", "10.103.19.66", "--ip6", "fd00:66::66"]);
        // The last announcements leave 2 s after the attach returns, however slow the
        // machine (the full-kernel VM is emulated): listen a while past that.
        std::thread::sleep(Duration::from_millis(3500));
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap()
    });
    let mac = [0x02, 0x42, 10, 103, 19, 66];
    let v6: std::net::Ipv6Addr = "fd00:66::66".parse().unwrap();
    let arp: Vec<Instant> = seen
        .iter()
        .filter(|(_, src, proto, p)| {
            *src == mac
                && *proto == 0x0806
                && p.len() >= 28
                && p[6..8] == [0, 1]
                && p[8..14] == mac
                && p[14..18] == [10, 103, 19, 66]
                && p[24..28] == [10, 103, 19, 66]
        })
        .map(|s| s.0)
        .collect();
    three_spaced_out("gratuitous ARP announcements", &arp);
    // ICMPv6 type 136 (NA) with the address as target and the override flag, from our MAC.
    let na: Vec<Instant> = seen
        .iter()
        .filter(|(_, src, proto, p)| {
            *src == mac
                && *proto == 0x86dd
                && p.len() >= 64
                && p[6] == 58
                && p[7] == 255
                && p[40] == 136
                && p[44] & 0x20 != 0
                && p[48..64] == v6.octets()
        })
        .map(|s| s.0)
        .collect();
    three_spaced_out("unsolicited neighbour advertisements", &na);
}
