//! dnsmasq as the lab LAN's DHCP server (Debian's dnsmasq-base), on the lab's gateway,
//! with its own lease file and log; and the lease agent of the lab's state root.

use super::TestLab;

/// dnsmasq serving 10.103.19.100-150 on the lab's LAN (`mvnet_lab::testkit::Dnsmasq`),
/// stopped, with the lease agent of the lab's state root, on drop.
pub struct Dhcpd<'a> {
    lab: &'a TestLab,
    server: mvnet_lab::testkit::Dnsmasq,
}

impl<'a> Dhcpd<'a> {
    pub fn start(lab: &'a TestLab, lease: &str) -> Dhcpd<'a> {
        Dhcpd::start_range(lab, lease, "10.103.19.100,10.103.19.150")
    }

    pub fn start_range(lab: &'a TestLab, lease: &str, range: &str) -> Dhcpd<'a> {
        Dhcpd {
            lab,
            server: mvnet_lab::testkit::Dnsmasq::start(&lab.guard.lab, range, lease),
        }
    }

    pub fn log(&self) -> String {
        self.server.log()
    }

    pub fn leases(&self) -> String {
        self.server.leases()
    }
}

impl Drop for Dhcpd<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let agent =
                std::fs::read_to_string(self.lab.root().join("dhcp/agent.log")).unwrap_or_default();
            eprintln!(
                "--- lease agent log:\n{}",
                mvnet_lab::testkit::tail(&agent, 40)
            );
        }
        stop_agent(self.lab);
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
