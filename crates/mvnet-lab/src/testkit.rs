//! Helpers the real-kernel tests of several crates share: what the running kernel can do,
//! and a packet socket that watches a lab machine's interface.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::Command;

/// Whether the running kernel can create a link of `kind` ("vlan", "ipvlan", ...), checked
/// with iproute2 in a throw-away namespace: independent of mvnet's own probe.
pub fn kernel_has(kind: &str) -> bool {
    let ns = format!("kp-{}", &mvnet_core::ids::new_id()[..10]);
    let ip = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    assert!(ip(&["netns", "add", &ns]), "ip netns add");
    let ok = ip(&[
        "-n", &ns, "link", "add", "p0", "type", "veth", "peer", "name", "p1",
    ]) && match kind {
        "vlan" => ip(&[
            "-n", &ns, "link", "add", "link", "p0", "name", "p0.5", "type", "vlan", "id", "5",
        ]),
        other => ip(&[
            "-n", &ns, "link", "add", "link", "p0", "name", "x0", "type", other,
        ]),
    };
    ip(&["netns", "del", &ns]);
    ok
}

/// For tests that need a kernel feature this machine may lack (802.1Q, ipvlan): true when
/// present. When absent, a developer's `cargo test` skips with one line saying why; with
/// MVNET_REQUIRE_FULL_KERNEL=1 (set by scripts/vm-tests.sh inside the full-kernel VM) the
/// test fails instead, so CI can never skip it silently.
pub fn full_kernel_or_skip(kind: &str, test: &str) -> bool {
    if kernel_has(kind) {
        return true;
    }
    if std::env::var("MVNET_REQUIRE_FULL_KERNEL").as_deref() == Ok("1") {
        panic!("{test}: this kernel lacks {kind}, but MVNET_REQUIRE_FULL_KERNEL=1");
    }
    // Straight to fd 2: libtest captures eprintln! of passing tests, and this line must show.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr().lock(),
        "skipped {test}: this kernel lacks {kind}; scripts/vm-tests.sh runs it under Debian's full kernel"
    );
    false
}

/// A packet socket on one interface of one namespace, receiving frames of one ethertype
/// (`ETH_P_ALL` for all) without their Ethernet header, with a 100 ms receive timeout so a
/// watcher can check its stop flag.
pub struct Sniffer {
    fd: OwnedFd,
}

impl Sniffer {
    pub fn open(netns: &Path, ifname: &str, ethertype: u16) -> Sniffer {
        let ns = mvnet_core::netns::Netns::open(netns).expect("open the namespace");
        let ifindex = mvnet_core::netlink::Netlink::in_netns(&ns)
            .expect("netlink")
            .link_by_name(ifname)
            .expect("look up the interface")
            .expect("the interface exists")
            .index;
        let proto = ethertype.to_be();
        // SAFETY: socket(2) takes no pointers; the fd is checked and owned below.
        let fd = mvnet_core::netns::run_in(&ns, || unsafe {
            libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, proto as i32)
        })
        .expect("enter the namespace");
        assert!(
            fd >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fd was just opened and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: a plain C struct, for which all-zero bytes are a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: the address is a live, fully initialised struct of the size given.
        let bound = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: the option value is a live timeval and its size is given.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        Sniffer { fd }
    }

    /// The next frame (payload length, with the sender's link address and ethertype in the
    /// `sockaddr_ll`), or `None` after the timeout.
    pub fn recv(&self, buf: &mut [u8]) -> Option<(usize, libc::sockaddr_ll)> {
        // SAFETY: a plain C struct, for which all-zero bytes are a valid value.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        // SAFETY: buf and from are live for the call, and their sizes are given.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
                &mut from as *mut _ as *mut libc::sockaddr,
                &mut len,
            )
        };
        (n > 0).then_some((n as usize, from))
    }
}

/// An etcd cluster on a lab's LAN (Debian's etcd-server): member `i` (1-based) runs in
/// its own machine `etcd{i}` at 10.103.19.(30+i), with its data on tmpfs. Started and
/// stopped by the test that needs it; every member is killed (and its data removed) on drop,
/// even when the test fails.
pub struct EtcdCluster {
    lab: crate::Lab,
    members: Vec<Option<std::process::Child>>,
    data: std::path::PathBuf,
}

impl EtcdCluster {
    pub fn member_ip(i: usize) -> String {
        format!("10.103.19.{}", 30 + i)
    }

    /// `members` members on `lab`'s LAN; returns once the cluster answers.
    pub fn start(lab: &crate::Lab, members: usize) -> EtcdCluster {
        let data = std::path::PathBuf::from(format!("/dev/shm/mvnet-etcd-{}", lab.name));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).expect("etcd data directory");
        for i in 1..=members {
            lab.add_machine(
                &format!("etcd{i}"),
                EtcdCluster::member_ip(i).parse().unwrap(),
            )
            .expect("an etcd machine on the lab LAN");
        }
        let mut c = EtcdCluster {
            lab: lab.clone(),
            members: (0..members).map(|_| None).collect(),
            data,
        };
        for i in 1..=members {
            c.start_member(i);
        }
        c.wait_healthy(std::time::Duration::from_secs(30));
        c
    }

    /// The client URLs, comma-separated (for `--ipam-opt etcd=`).
    pub fn endpoints(&self) -> String {
        (1..=self.members.len())
            .map(|i| format!("http://{}:2379", EtcdCluster::member_ip(i)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts member `i` (again: with its data, it rejoins).
    pub fn start_member(&mut self, i: usize) {
        let n = self.members.len();
        let cluster: Vec<String> = (1..=n)
            .map(|j| format!("m{j}=http://{}:2380", EtcdCluster::member_ip(j)))
            .collect();
        let ip = EtcdCluster::member_ip(i);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.join(format!("m{i}.log")))
            .expect("etcd log");
        let mut cmd =
            mvnet_core::netns::command_in(&self.lab.netns_path(&format!("etcd{i}")), "etcd")
                .expect("etcd (install etcd-server)");
        cmd.args([
            "--name",
            &format!("m{i}"),
            "--data-dir",
            &self.data.join(format!("m{i}")).display().to_string(),
            "--listen-client-urls",
            &format!("http://{ip}:2379"),
            "--advertise-client-urls",
            &format!("http://{ip}:2379"),
            "--listen-peer-urls",
            &format!("http://{ip}:2380"),
            "--initial-advertise-peer-urls",
            &format!("http://{ip}:2380"),
            "--initial-cluster",
            &cluster.join(","),
            "--initial-cluster-token",
            &self.lab.name,
            "--initial-cluster-state",
            "new",
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log);
        self.members[i - 1] = Some(cmd.spawn().expect("start etcd"));
    }

    /// Kills member `i` (SIGKILL, as a crash).
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut c) = self.members[i - 1].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `etcdctl ARGS` against the cluster, from the lab's first docker host.
    pub fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = mvnet_core::netns::command_in(&self.lab.host_netns(), "etcdctl")
            .expect("etcdctl (install etcd-client)");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints()))
            .arg("--dial-timeout=2s")
            .arg("--command-timeout=3s")
            .args(args);
        cmd.output().expect("run etcdctl")
    }

    /// Waits until a write goes through (a leader and a quorum).
    pub fn wait_healthy(&self, limit: std::time::Duration) {
        let started = std::time::Instant::now();
        loop {
            let o = self.etcdctl(&["put", "/mvnet-test/health", "ok"]);
            if o.status.success() {
                return;
            }
            assert!(
                started.elapsed() < limit,
                "etcd did not come up: {} {}",
                String::from_utf8_lossy(&o.stderr),
                std::fs::read_to_string(self.data.join("m1.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 1..=self.members.len() {
            self.kill_member(i);
        }
        if std::env::var_os("MVNET_KEEP_TEST_DIR").is_none() {
            let _ = std::fs::remove_dir_all(&self.data);
        }
    }
}

/// dnsmasq (Debian's dnsmasq-base) as the DHCP server of a lab's LAN, on its gateway, with
/// its own lease file and log under a private directory; killed on drop (with the log's
/// tail printed when a test is failing). `--no-ping`: dnsmasq would otherwise ping each
/// address for 3 s before offering it, one client at a time.
pub struct Dnsmasq {
    child: std::process::Child,
    pub dir: std::path::PathBuf,
}

impl Dnsmasq {
    /// Serving `range` ("FIRST,LAST") with leases of `lease` ("2m": dnsmasq's minimum).
    pub fn start(lab: &crate::Lab, range: &str, lease: &str) -> Dnsmasq {
        let dir = std::env::temp_dir().join(format!("mvnet-dnsmasq-{}", lab.name));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dnsmasq's directory");
        let arg = |k: &str, p: &str| format!("--{k}={}", dir.join(p).display());
        let mut c = mvnet_core::netns::command_in(&lab.netns_path("gw"), "dnsmasq")
            .expect("dnsmasq (install dnsmasq-base)");
        c.args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=0",
            "--interface=eth0",
            "--bind-interfaces",
            "--dhcp-authoritative",
            "--log-dhcp",
            "--no-ping",
            &format!("--dhcp-range={range},255.255.255.0,{lease}"),
            "--dhcp-option=option:router,10.103.19.1",
            "--dhcp-option=option:dns-server,10.103.19.1",
        ])
        .arg(arg("dhcp-leasefile", "leases"))
        .arg(arg("pid-file", "pid"))
        .arg(arg("log-facility", "log"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        let d = Dnsmasq {
            child: c.spawn().expect("start dnsmasq"),
            dir,
        };
        let started = std::time::Instant::now();
        while !d.log().contains("DHCP, IP range") {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "dnsmasq did not start: {}",
                d.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        d
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    pub fn leases(&self) -> String {
        std::fs::read_to_string(self.dir.join("leases")).unwrap_or_default()
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- dnsmasq log:\n{}", tail(&self.log(), 40));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
