//! After attach, the LAN hears RFC 5227 announcements for the new address, spaced out
//! (root; a raw ARP listener in the lab's peer namespace).

mod common;
use common::TestLab;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// One ARP request as seen: (time, sender MAC, sender IP, target IP).
type Seen = (Instant, [u8; 6], [u8; 4], [u8; 4]);

/// Collects the ARP requests seen on the peer's eth0.
fn listen(lab: &TestLab, for_how_long: Duration) -> Vec<Seen> {
    let ns = mvnet_core::netns::Netns::open(lab.guard.lab.netns_path("peer")).unwrap();
    let ifindex = mvnet_core::netlink::Netlink::in_netns(&ns)
        .unwrap()
        .link_by_name("eth0")
        .unwrap()
        .unwrap()
        .index;
    let fd = mvnet_core::netns::run_in(&ns, || unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM,
            (0x0806u16.to_be()) as i32,
        )
    })
    .unwrap();
    assert!(fd >= 0);
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = 0x0806u16.to_be();
    sll.sll_ifindex = ifindex as i32;
    assert_eq!(
        unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        },
        0
    );
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    let end = Instant::now() + for_how_long;
    let mut seen = Vec::new();
    let mut buf = [0u8; 64];
    while Instant::now() < end {
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        if n >= 28 && buf[7] == 1 {
            seen.push((
                Instant::now(),
                buf[8..14].try_into().unwrap(),
                buf[14..18].try_into().unwrap(),
                buf[24..28].try_into().unwrap(),
            ));
        }
    }
    seen
}

#[test]
fn attach_is_announced_three_times_spaced_out() {
    let lab = TestLab::new();
    lab.seed_network("n", &[]);
    let listener = std::thread::scope(|s| {
        let h = s.spawn(|| listen(&lab, Duration::from_millis(3500)));
        std::thread::sleep(Duration::from_millis(200));
        lab.container("c", "n", &["--ip", "10.103.19.66"]);
        h.join().unwrap()
    });
    let mac = [0x02, 0x42, 10, 103, 19, 66];
    let ours: Vec<_> = listener
        .iter()
        .filter(|(_, sha, spa, tpa)| {
            *sha == mac && *spa == [10, 103, 19, 66] && *tpa == [10, 103, 19, 66]
        })
        .collect();
    assert!(
        ours.len() >= 3,
        "announcements seen by the peer: {}",
        ours.len()
    );
    let spread = ours.last().unwrap().0 - ours.first().unwrap().0;
    assert!(
        spread >= Duration::from_millis(1500),
        "spaced out, not a burst: {spread:?}"
    );
}
