//! What the running kernel can do, found by trying: modules may be built in and there may be
//! no /proc/modules, so the only reliable test is to create a throw-away link in a
//! throw-away network namespace.

use std::sync::OnceLock;

use nix::sched::{unshare, CloneFlags};

use crate::error::KernelContext;
use crate::netlink::{Netlink, ProbeKind, VethEnd};
use crate::{Error, Result};

/// A kernel feature mvnet may need, with how to get it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feature {
    pub kind: ProbeKind,
    pub name: &'static str,
    pub module: &'static str,
    pub config: &'static str,
}

pub const FEATURES: [Feature; 4] = [
    Feature {
        kind: ProbeKind::Macvlan,
        name: "macvlan",
        module: "macvlan",
        config: "CONFIG_MACVLAN",
    },
    Feature {
        kind: ProbeKind::Vlan,
        name: "802.1Q VLAN (8021q)",
        module: "8021q",
        config: "CONFIG_VLAN_8021Q",
    },
    Feature {
        kind: ProbeKind::Ipvlan,
        name: "ipvlan",
        module: "ipvlan",
        config: "CONFIG_IPVLAN",
    },
    Feature {
        kind: ProbeKind::Macvtap,
        name: "macvtap",
        module: "macvtap",
        config: "CONFIG_MACVTAP",
    },
];

pub fn feature(kind: ProbeKind) -> Feature {
    *FEATURES
        .iter()
        .find(|f| f.kind == kind)
        .expect("every kind is listed")
}

impl Feature {
    /// The error for a missing feature: names it and says how to get it.
    pub fn missing_error(&self, what: &str) -> Error {
        Error::KernelFeature(format!(
            "{what} needs kernel support for {}, which this kernel lacks: load it with 'modprobe {}' or use a kernel built with {}",
            self.name, self.module, self.config
        ))
    }
}

/// Support for each feature in FEATURES order, probed once per process.
pub fn probe() -> Result<[bool; 4]> {
    static CACHE: OnceLock<[bool; 4]> = OnceLock::new();
    if let Some(c) = CACHE.get() {
        return Ok(*c);
    }
    // A scoped thread gets a private, unnamed namespace that dies with it.
    let r = std::thread::scope(|s| {
        s.spawn(|| -> Result<[bool; 4]> {
            unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::kernel("unshare a probe namespace", e.into()))?;
            let mut nl = Netlink::new()?;
            let mut out = [false; 4];
            for (i, f) in FEATURES.iter().enumerate() {
                // One lower device per probe: macvlan and ipvlan refuse to share one.
                let (a, b) = (format!("probe{i}a"), format!("probe{i}b"));
                nl.create_veth(
                    VethEnd {
                        name: &a,
                        netns: None,
                    },
                    VethEnd {
                        name: &b,
                        netns: None,
                    },
                )
                .kernel("create a probe veth")?;
                let lower = nl
                    .link_by_name(&a)
                    .kernel("find probe veth")?
                    .ok_or_else(|| Error::Internal("probe veth vanished".into()))?;
                out[i] = nl
                    .create_probe_link(&format!("probe{i}x"), lower.index, f.kind)
                    .is_ok();
            }
            Ok(out)
        })
        .join()
        .unwrap_or_else(|_| Err(Error::Internal("probe thread panicked".into())))
    })?;
    let _ = CACHE.set(r);
    Ok(r)
}

pub fn supports(kind: ProbeKind) -> Result<bool> {
    let i = FEATURES
        .iter()
        .position(|f| f.kind == kind)
        .expect("listed");
    Ok(probe()?[i])
}

/// Fails first thing, with the reason, when this process lacks what every mvnet command
/// needs (links are CAP_NET_ADMIN, namespaces and mounts CAP_SYS_ADMIN), instead of a
/// "Permission denied" on some file later.
/// This thread's effective capability set, from capget(2): one system call, where reading
/// /proc/self/status had the kernel format the whole file (every command pays this).
fn effective_capabilities() -> u64 {
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget(2) with a version-3 header and the two data structs that version
    // fills; both are live for the call.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if rc != 0 {
        return 0;
    }
    data[0].effective as u64 | (data[1].effective as u64) << 32
}

pub fn require_privileges() -> Result<()> {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    let eff = effective_capabilities();
    let has = |cap: u32| eff & (1 << cap) != 0;
    if has(CAP_NET_ADMIN) && has(CAP_SYS_ADMIN) {
        Ok(())
    } else {
        Err(Error::Invalid(
            "mvnet needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN): run it as root, e.g. with sudo"
                .into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn capget_reads_the_same_effective_set_as_proc_status() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let from_proc = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .expect("CapEff in /proc/self/status");
        assert_eq!(super::effective_capabilities(), from_proc);
    }
}
