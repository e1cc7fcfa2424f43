//! dnsmasq as the lab LAN's DHCP server (Debian's dnsmasq-base), on the lab's gateway,
//! with its own lease file and log; and the lease agent of the lab's state root.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::TestLab;

/// dnsmasq serving 10.103.19.100-150 on the lab's LAN, stopped (and the lease agent of
/// the lab's state root with it) on drop.
pub struct Dhcpd<'a> {
    lab: &'a TestLab,
    child: Child,
    dir: std::path::PathBuf,
}

impl<'a> Dhcpd<'a> {
    pub fn start(lab: &'a TestLab, lease: &str) -> Dhcpd<'a> {
        Dhcpd::start_range(lab, lease, "10.103.19.100,10.103.19.150")
    }

    pub fn start_range(lab: &'a TestLab, lease: &str, range: &str) -> Dhcpd<'a> {
        let dir = std::env::temp_dir().join(format!("mvnet-dnsmasq-{}", lab.name()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let arg = |k: &str, p: &str| format!("--{k}={}", dir.join(p).display());
        let mut c = mvnet_core::netns::command_in(&lab.guard.lab.netns_path("gw"), "dnsmasq")
            .expect("dnsmasq (install dnsmasq-base)");
        c.args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=0",
            "--interface=eth0",
            "--bind-interfaces",
            "--dhcp-authoritative",
            "--log-dhcp",
            // dnsmasq pings each address before offering it, for 3 s, one client at a
            // time: 20 clients at once would wait a minute.
            "--no-ping",
            &format!("--dhcp-range={range},255.255.255.0,{lease}"),
            "--dhcp-option=option:router,10.103.19.1",
            "--dhcp-option=option:dns-server,10.103.19.1",
        ])
        .arg(arg("dhcp-leasefile", "leases"))
        .arg(arg("pid-file", "pid"))
        .arg(arg("log-facility", "log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let child = c.spawn().expect("start dnsmasq");
        let d = Dhcpd { lab, child, dir };
        let started = Instant::now();
        while !d.log().contains("DHCP, IP range") {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "dnsmasq did not start: {}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(50));
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

impl Drop for Dhcpd<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let tail = |s: String| {
                s.lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            eprintln!("--- dnsmasq log:\n{}", tail(self.log()));
            let agent =
                std::fs::read_to_string(self.lab.root().join("dhcp/agent.log")).unwrap_or_default();
            eprintln!("--- lease agent log:\n{}", tail(agent));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        stop_agent(self.lab);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The lease agent of the lab's state root (it outlives the CLI that started it).
pub fn agent_pid(lab: &TestLab) -> Option<i32> {
    let lock = lab.root().join("dhcp/agent.lock");
    let pid: i32 = std::fs::read_to_string(lock).ok()?.trim().parse().ok()?;
    std::path::Path::new(&format!("/proc/{pid}"))
        .exists()
        .then_some(pid)
}

pub fn stop_agent(lab: &TestLab) {
    if let Some(pid) = agent_pid(lab) {
        // SAFETY: kill(2) only sends a signal.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}
