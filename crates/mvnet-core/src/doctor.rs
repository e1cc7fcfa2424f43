//! `mvnet doctor`: can mvnet work on this host, and if not, why and how to fix it.
//! Each check is data (status, what, fix) so front ends can print it or emit JSON.

use std::net::IpAddr;
use std::path::Path;

use serde::Serialize;

use crate::kernel::FEATURES;
use crate::netlink::{Link, Netlink};
use crate::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Status {
    #[serde(rename = "OK")]
    Ok,
    #[serde(rename = "WARN")]
    Warn,
    #[serde(rename = "FAIL")]
    Fail,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub check: String,
    pub status: Status,
    pub detail: String,
    /// What to do about it; empty when nothing needs doing.
    pub fix: String,
}

fn check(check: &str, status: Status, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        check: check.into(),
        status,
        detail: detail.into(),
        fix: fix.into(),
    }
}

/// Effective capabilities of this process (CapEff in /proc/self/status).
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// A hypervisor name from DMI, or "a hypervisor" when only the CPU flag says so.
pub fn detect_hypervisor() -> Option<String> {
    let dmi = [
        "/sys/class/dmi/id/sys_vendor",
        "/sys/class/dmi/id/product_name",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .collect::<Vec<_>>()
    .join(" ");
    for (needle, name) in [
        ("QEMU", "QEMU/KVM"),
        ("KVM", "KVM"),
        ("VMware", "VMware"),
        ("VirtualBox", "VirtualBox"),
        ("Microsoft", "Hyper-V"),
        ("Xen", "Xen"),
        ("Amazon EC2", "Amazon EC2"),
        ("Google", "Google Compute Engine"),
        ("Firecracker", "Firecracker"),
    ] {
        if dmi.contains(needle) {
            return Some(name.into());
        }
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpu.lines()
        .any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "hypervisor"))
        .then(|| "a hypervisor".into())
}

/// Runs every check. `parent` defaults to the interface holding the default route;
/// `networks` are the configured networks (for MTU and subnet checks).
pub fn run(parent: Option<&str>, networks: &[crate::model::Network]) -> Result<Vec<Check>> {
    let mut out = Vec::new();
    let caps = effective_caps();
    let net_admin = caps & (1 << 12) != 0;
    let sys_admin = caps & (1 << 21) != 0;
    out.push(if net_admin && sys_admin {
        check(
            "privileges",
            Status::Ok,
            "CAP_NET_ADMIN and CAP_SYS_ADMIN: may create namespaces and links",
            "",
        )
    } else {
        check(
            "privileges",
            Status::Fail,
            format!(
                "missing {}",
                [
                    (!net_admin).then_some("CAP_NET_ADMIN"),
                    (!sys_admin).then_some("CAP_SYS_ADMIN")
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" and ")
            ),
            "run mvnet as root (sudo mvnet ...)",
        )
    });
    if !(net_admin && sys_admin) {
        return Ok(out);
    }

    match crate::kernel::probe() {
        Ok(support) => {
            for (f, ok) in FEATURES.iter().zip(support) {
                out.push(if ok {
                    check(&format!("kernel: {}", f.name), Status::Ok, "supported", "")
                } else {
                    // macvlan is essential; the others are needed only for their features.
                    let status = if f.module == "macvlan" {
                        Status::Fail
                    } else {
                        Status::Warn
                    };
                    check(
                        &format!("kernel: {}", f.name),
                        status,
                        format!("not supported by this kernel ({})", f.config),
                        format!(
                            "modprobe {} (or use a kernel built with {})",
                            f.module, f.config
                        ),
                    )
                });
            }
        }
        Err(e) => out.push(check(
            "kernel",
            Status::Fail,
            format!("cannot probe: {e}"),
            "run mvnet as root",
        )),
    }

    let mut nl = Netlink::new()?;
    let links = nl
        .links()
        .map_err(|e| crate::Error::kernel("list links", e))?;
    let parent_name = match parent {
        Some(p) => Some(p.to_string()),
        None => {
            let routes = nl
                .routes(false)
                .map_err(|e| crate::Error::kernel("read routes", e))?;
            routes
                .iter()
                .find(|r| r.destination.is_none())
                .and_then(|r| r.oif)
                .and_then(|i| links.iter().find(|l| l.index == i))
                .map(|l| l.name.clone())
        }
    };
    let Some(parent_name) = parent_name else {
        out.push(check(
            "parent",
            Status::Warn,
            "no --parent given and no default route to pick one",
            "pass --parent IF",
        ));
        return Ok(out);
    };
    if !links.iter().any(|l| l.name == parent_name) {
        if let Ok(Some((base, vid))) = crate::model::network::parse_vlan_parent(&parent_name) {
            if links.iter().any(|l| l.name == base) {
                let vlan = crate::kernel::supports(crate::netlink::ProbeKind::Vlan)?;
                let f = crate::kernel::feature(crate::netlink::ProbeKind::Vlan);
                out.push(if vlan {
                    check(
                        &format!("parent {parent_name}"),
                        Status::Ok,
                        format!("VLAN {vid} of {base}: mvnet creates it on first use"),
                        "",
                    )
                } else {
                    check(
                        &format!("parent {parent_name}"),
                        Status::Fail,
                        format!(
                            "VLAN {vid} of {base} cannot be created: no 802.1Q support ({})",
                            f.config
                        ),
                        format!(
                            "modprobe {} (or use a kernel built with {})",
                            f.module, f.config
                        ),
                    )
                });
                return Ok(out);
            }
        }
    }
    let Some(link) = links.iter().find(|l| l.name == parent_name) else {
        let names: Vec<&str> = links
            .iter()
            .filter(|l| !l.loopback)
            .map(|l| l.name.as_str())
            .collect();
        out.push(check(
            &format!("parent {parent_name}"),
            Status::Fail,
            "does not exist",
            format!("pick one of: {}", names.join(", ")),
        ));
        return Ok(out);
    };
    out.extend(parent_checks(link, &links, &mut nl, networks)?);
    Ok(out)
}

fn parent_checks(
    link: &Link,
    links: &[Link],
    nl: &mut Netlink,
    networks: &[crate::model::Network],
) -> Result<Vec<Check>> {
    let name = &link.name;
    let what = format!("parent {name}");
    let mut out = Vec::new();
    out.push(if link.loopback {
        check(
            &what,
            Status::Fail,
            "is the loopback interface",
            "use a LAN interface such as eth0",
        )
    } else if !link.up {
        check(
            &what,
            Status::Warn,
            "exists but is down",
            format!("bring it up: ip link set {name} up (mvnet does this for VLAN trunks it uses)"),
        )
    } else if !link.carrier {
        check(
            &what,
            Status::Warn,
            "is up but has no carrier (no cable or link partner)",
            "check the cable or the switch port",
        )
    } else {
        check(
            &what,
            Status::Ok,
            format!("exists, up, carrier, MTU {}", link.mtu),
            "",
        )
    });
    let sys = Path::new("/sys/class/net").join(name);
    if sys.join("wireless").exists() || sys.join("phy80211").exists() {
        out.push(check(
            &format!("{name} type"),
            Status::Warn,
            "is a Wi-Fi interface: access points accept only the station's own MAC, so macvlan containers get no traffic",
            "use the ipvlan driver (-d ipvlan), which shares the parent's MAC",
        ));
    }
    if let Some(m) = link
        .master_index
        .and_then(|i| links.iter().find(|l| l.index == i))
    {
        let role = if m.kind == "bond" {
            "a bond slave"
        } else if m.kind == "bridge" {
            "a bridge port"
        } else {
            "enslaved"
        };
        out.push(check(
            &format!("{name} role"),
            Status::Warn,
            format!("is {role} of {}: traffic is taken by {}", m.name, m.name),
            format!("use -o parent={} instead", m.name),
        ));
    }
    match link.kind.as_str() {
        "macvlan" | "ipvlan" | "macvtap" => out.push(check(
            &format!("{name} kind"),
            Status::Warn,
            format!("is itself a {} sub-interface", link.kind),
            "use the physical NIC (or a VLAN of it) as the parent",
        )),
        "vlan" => out.push(check(
            &format!("{name} kind"),
            Status::Ok,
            "an 802.1Q VLAN sub-interface",
            "",
        )),
        _ => {}
    }
    for net in networks.iter().filter(|n| &n.options.parent == name) {
        if let Some(mtu) = net.options.mtu.filter(|m| *m > link.mtu) {
            out.push(check(
                &format!("MTU of network {}", net.name),
                Status::Fail,
                format!("-o mtu={mtu} exceeds the parent's MTU {}", link.mtu),
                format!(
                    "recreate it with -o mtu={} or less, or raise {name}'s MTU",
                    link.mtu
                ),
            ));
        }
    }
    // The host's own address on a container subnet means it expects to talk to containers,
    // which macvlan forbids without a host-side shim.
    let addrs = nl
        .addresses(Some(link.index))
        .map_err(|e| crate::Error::kernel("read addresses", e))?;
    for net in networks.iter().filter(|n| &n.options.parent == name) {
        for (_, ip, prefix) in &addrs {
            if net.pools.iter().any(|p| p.subnet.contains(ip)) {
                out.push(check(
                    &format!("host access to {}", net.name),
                    Status::Warn,
                    format!("this host has {ip}/{prefix} on {name}, in the network's subnet, yet the kernel never delivers traffic between a parent and its macvlan containers"),
                    "reach containers from another machine, or give the host its own macvlan interface on the parent (a host-side shim)",
                ));
            }
        }
    }
    if networks.iter().all(|n| &n.options.parent != name) {
        let v4: Vec<String> = addrs
            .iter()
            .filter(|(_, ip, _)| matches!(ip, IpAddr::V4(_)))
            .map(|(_, ip, p)| format!("{ip}/{p}"))
            .collect();
        if !v4.is_empty() {
            out.push(check(
                "host access",
                Status::Warn,
                format!("this host has {} on {name}: it will not reach macvlan containers on that subnet", v4.join(", ")),
                "reach containers from another machine, or give the host its own macvlan interface (a shim)",
            ));
        }
    }
    if let Some(hv) = detect_hypervisor() {
        out.push(check(
            "virtual machine",
            Status::Warn,
            format!("running under {hv}: its virtual switch may drop frames from MACs it did not assign"),
            "allow promiscuous mode / MAC spoofing / forged transmits on this VM's port group or NIC, or use ipvlan",
        ));
    }
    Ok(out)
}

/// Exit status rule: 0 unless something FAILs.
pub fn passed(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Fail)
}
