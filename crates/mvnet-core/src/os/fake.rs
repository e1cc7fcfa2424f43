//! An in-memory kernel for unit tests (no root): namespaces holding links, addresses and
//! routes, with the kernel's rules that mvnet relies on (unique names per namespace, unique
//! macvlan MACs per parent, EEXIST, ENODEV). It records every call and can be told to fail
//! the Nth one, so a test can break an attach at each of its steps and check that nothing
//! is left behind.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::Duration;

use ipnet::IpNet;

use super::{Announcing, EnterRequest, Inside, Os, ProbeListener, Rtnl};
use crate::announce::Announce;
use crate::error::KernelContext;
use crate::model::MacAddr;
use crate::netlink::{IpvlanLink, Link, MacvlanLink, Route};
use crate::netns::Netns;
use crate::{Error, Result};

/// The name of mvnet's own namespace in the fake.
pub const HOST: &str = "host";

#[derive(Debug, Clone)]
pub struct FakeLink {
    pub link: Link,
    pub addresses: Vec<(IpAddr, u8)>,
}

#[derive(Debug, Clone, Default)]
pub struct FakeNs {
    pub links: Vec<FakeLink>,
    pub routes: Vec<(Option<IpNet>, Option<IpAddr>, u32)>,
}

/// The fake kernel's state, shared by every handle onto it.
#[derive(Debug, Default)]
pub struct FakeKernel {
    pub namespaces: BTreeMap<String, FakeNs>,
    next_index: u32,
    /// Every call, in order: "ns op detail".
    pub calls: Vec<String>,
    /// Fail the call with this number (1-based) with EIO.
    pub fail_at: Option<usize>,
    /// How many times `set_up_announcing` answers EADDRINUSE first (a MAC still held by a
    /// namespace being torn down).
    pub busy_mac_answers: usize,
    /// Like kernels before 6.x: creating a link straight into another namespace checks the
    /// name in the caller's namespace too.
    pub checks_name_in_caller: bool,
    /// Addresses a device on the LAN answers for, with its MAC (probe and DAD).
    pub lan: BTreeMap<IpAddr, MacAddr>,
    /// Announcements sent: (ifindex, mac).
    pub announced: Vec<(u32, MacAddr)>,
}

impl FakeKernel {
    fn call(&mut self, ns: &str, what: String) -> io::Result<()> {
        self.calls.push(format!("{ns} {what}"));
        if self.fail_at == Some(self.calls.len()) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }

    fn ns(&mut self, name: &str) -> io::Result<&mut FakeNs> {
        self.namespaces
            .get_mut(name)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
    }

    fn find(&self, ns: &str, index: u32) -> Option<&FakeLink> {
        self.namespaces
            .get(ns)?
            .links
            .iter()
            .find(|l| l.link.index == index)
    }

    fn link_mut(&mut self, ns: &str, index: u32) -> io::Result<&mut FakeLink> {
        self.ns(ns)?
            .links
            .iter_mut()
            .find(|l| l.link.index == index)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))
    }

    /// Adds a plain link (a NIC) to `ns`; returns its index.
    pub fn add_nic(&mut self, ns: &str, name: &str, mac: MacAddr, up: bool) -> u32 {
        self.next_index += 1;
        let index = self.next_index;
        self.namespaces
            .entry(ns.to_string())
            .or_default()
            .links
            .push(FakeLink {
                link: Link {
                    index,
                    name: name.to_string(),
                    kind: String::new(),
                    mtu: 1500,
                    max_mtu: None,
                    up,
                    loopback: name == "lo",
                    carrier: up,
                    mac: Some(mac),
                    parent_index: None,
                    master_index: None,
                    macvlan_mode: None,
                    ipvlan_mode: None,
                },
                addresses: Vec::new(),
            });
        index
    }

    #[allow(clippy::too_many_arguments)]
    fn new_sub_link(
        &mut self,
        caller: &str,
        target: &str,
        name: &str,
        kind: &str,
        parent_index: u32,
        mac: Option<MacAddr>,
        mtu: Option<u32>,
    ) -> io::Result<()> {
        let parent = self
            .find(caller, parent_index)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))?
            .link
            .clone();
        let taken = |k: &FakeKernel, ns: &str| {
            k.namespaces
                .get(ns)
                .is_some_and(|n| n.links.iter().any(|l| l.link.name == name))
        };
        if taken(self, target) || (self.checks_name_in_caller && taken(self, caller)) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        let mac = if kind == "ipvlan" { parent.mac } else { mac };
        if kind == "macvlan" {
            // The kernel keeps one MAC per macvlan port of a parent.
            let clash = self.namespaces.values().flat_map(|n| &n.links).any(|l| {
                l.link.kind == "macvlan"
                    && l.link.parent_index == Some(parent_index)
                    && l.link.mac == mac
            });
            if clash {
                return Err(io::Error::from_raw_os_error(libc::EADDRINUSE));
            }
        }
        self.next_index += 1;
        let index = self.next_index;
        let link = Link {
            index,
            name: name.to_string(),
            kind: kind.to_string(),
            mtu: mtu.unwrap_or(parent.mtu),
            max_mtu: None,
            up: false,
            loopback: false,
            carrier: parent.carrier,
            mac,
            parent_index: Some(parent_index),
            master_index: None,
            macvlan_mode: None,
            ipvlan_mode: None,
        };
        self.ns(target)?.links.push(FakeLink {
            link,
            addresses: Vec::new(),
        });
        Ok(())
    }

    /// The links of `ns` other than those listed in `except`, by name.
    pub fn link_names(&self, ns: &str) -> Vec<String> {
        self.namespaces
            .get(ns)
            .map(|n| n.links.iter().map(|l| l.link.name.clone()).collect())
            .unwrap_or_default()
    }
}

/// A handle onto the fake kernel, the way mvnet holds an rtnetlink socket of one namespace.
pub struct FakeRtnl {
    kernel: Rc<RefCell<FakeKernel>>,
    ns: String,
}

impl FakeRtnl {
    fn with<T>(
        &self,
        what: String,
        f: impl FnOnce(&mut FakeKernel, &str) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut k = self.kernel.borrow_mut();
        k.call(&self.ns, what)?;
        f(&mut k, &self.ns)
    }
}

impl Rtnl for FakeRtnl {
    fn link_by_name(&mut self, name: &str) -> io::Result<Option<Link>> {
        self.with(format!("link_by_name {name}"), |k, ns| {
            Ok(k.ns(ns)?
                .links
                .iter()
                .find(|l| l.link.name == name)
                .map(|l| l.link.clone()))
        })
    }
    fn link_by_index(&mut self, index: u32) -> io::Result<Option<Link>> {
        self.with(format!("link_by_index {index}"), |k, ns| {
            Ok(k.find(ns, index).map(|l| l.link.clone()))
        })
    }
    fn links(&mut self) -> io::Result<Vec<Link>> {
        self.with("links".into(), |k, ns| {
            Ok(k.ns(ns)?.links.iter().map(|l| l.link.clone()).collect())
        })
    }
    fn routes(&mut self, v6: bool) -> io::Result<Vec<Route>> {
        self.with(format!("routes v6={v6}"), |k, ns| {
            Ok(k.ns(ns)?
                .routes
                .iter()
                .filter(|(d, g, _)| {
                    d.map(|d| d.addr().is_ipv6())
                        .or(g.map(|g| g.is_ipv6()))
                        .unwrap_or(false)
                        == v6
                })
                .map(|(d, g, oif)| Route {
                    destination: d.filter(|d| d.prefix_len() != 0),
                    gateway: *g,
                    oif: Some(*oif),
                })
                .collect())
        })
    }
    fn addresses(&mut self, index: Option<u32>) -> io::Result<Vec<(u32, IpAddr, u8)>> {
        self.with("addresses".into(), |k, ns| {
            Ok(k.ns(ns)?
                .links
                .iter()
                .filter(|l| index.is_none_or(|i| i == l.link.index))
                .flat_map(|l| l.addresses.iter().map(|(ip, p)| (l.link.index, *ip, *p)))
                .collect())
        })
    }
    fn create_macvlan(&mut self, spec: &MacvlanLink) -> io::Result<()> {
        let target = spec.netns.map(|n| n.path().display().to_string());
        self.with(format!("create_macvlan {}", spec.name), |k, ns| {
            let target = target.unwrap_or_else(|| ns.to_string());
            k.new_sub_link(
                ns,
                &target,
                spec.name,
                "macvlan",
                spec.parent_index,
                spec.mac,
                spec.mtu,
            )
        })
    }
    fn create_ipvlan(&mut self, spec: &IpvlanLink) -> io::Result<()> {
        let target = spec.netns.map(|n| n.path().display().to_string());
        self.with(format!("create_ipvlan {}", spec.name), |k, ns| {
            let target = target.unwrap_or_else(|| ns.to_string());
            k.new_sub_link(
                ns,
                &target,
                spec.name,
                "ipvlan",
                spec.parent_index,
                None,
                spec.mtu,
            )
        })
    }
    fn create_vlan(&mut self, name: &str, base_index: u32, vid: u16) -> io::Result<()> {
        self.with(format!("create_vlan {name} {vid}"), |k, ns| {
            k.new_sub_link(
                ns,
                ns,
                name,
                "vlan",
                base_index,
                Some(MacAddr([2, 0, 0, 0, 0, 9])),
                None,
            )
        })
    }
    fn set_up(&mut self, index: u32, up: bool) -> io::Result<()> {
        self.with(format!("set_up {index} {up}"), |k, ns| {
            k.link_mut(ns, index)?.link.up = up;
            Ok(())
        })
    }
    fn set_up_announcing(&mut self, index: u32, mac: Option<MacAddr>) -> io::Result<()> {
        let with_mac = mac.map(|m| format!(" mac {m}")).unwrap_or_default();
        self.with(format!("set_up_announcing {index}{with_mac}"), |k, ns| {
            if k.busy_mac_answers > 0 {
                k.busy_mac_answers -= 1;
                return Err(io::Error::from_raw_os_error(libc::EADDRINUSE));
            }
            let link = &mut k.link_mut(ns, index)?.link;
            link.up = true;
            if mac.is_some() {
                link.mac = mac;
            }
            Ok(())
        })
    }
    fn set_name(&mut self, index: u32, name: &str) -> io::Result<()> {
        self.with(format!("set_name {index} {name}"), |k, ns| {
            if k.ns(ns)?.links.iter().any(|l| l.link.name == name) {
                return Err(io::Error::from_raw_os_error(libc::EEXIST));
            }
            k.link_mut(ns, index)?.link.name = name.to_string();
            Ok(())
        })
    }
    fn set_mac(&mut self, index: u32, mac: MacAddr) -> io::Result<()> {
        self.with(format!("set_mac {index} {mac}"), |k, ns| {
            k.link_mut(ns, index)?.link.mac = Some(mac);
            Ok(())
        })
    }
    fn delete_link(&mut self, index: u32) -> io::Result<()> {
        self.with(format!("delete_link {index}"), |k, ns| {
            let n = k.ns(ns)?;
            let before = n.links.len();
            n.links.retain(|l| l.link.index != index);
            n.routes.retain(|(_, _, oif)| *oif != index);
            if n.links.len() == before {
                return Err(io::Error::from_raw_os_error(libc::ENODEV));
            }
            Ok(())
        })
    }
    fn delete_link_by_name(&mut self, name: &str) -> io::Result<bool> {
        self.with(format!("delete_link_by_name {name}"), |k, ns| {
            let n = k.ns(ns)?;
            let Some(index) = n
                .links
                .iter()
                .find(|l| l.link.name == name)
                .map(|l| l.link.index)
            else {
                return Ok(false);
            };
            n.links.retain(|l| l.link.index != index);
            n.routes.retain(|(_, _, oif)| *oif != index);
            Ok(true)
        })
    }
    fn add_address(&mut self, index: u32, ip: IpAddr, prefix: u8) -> io::Result<()> {
        self.add_address_dad(index, ip, prefix, false)
    }
    fn add_address_dad(&mut self, index: u32, ip: IpAddr, prefix: u8, dad: bool) -> io::Result<()> {
        self.with(
            format!("add_address {index} {ip}/{prefix} dad={dad}"),
            |k, ns| {
                let l = k.link_mut(ns, index)?;
                if l.addresses.iter().any(|(a, _)| *a == ip) {
                    return Err(io::Error::from_raw_os_error(libc::EEXIST));
                }
                l.addresses.push((ip, prefix));
                Ok(())
            },
        )
    }
    fn del_address(&mut self, index: u32, ip: IpAddr, prefix: u8) -> io::Result<()> {
        self.with(format!("del_address {index} {ip}/{prefix}"), |k, ns| {
            k.link_mut(ns, index)?.addresses.retain(|(a, _)| *a != ip);
            Ok(())
        })
    }
    fn add_route(
        &mut self,
        dst: Option<IpNet>,
        gateway: Option<IpAddr>,
        oif: u32,
    ) -> io::Result<()> {
        self.with(
            format!("add_route {dst:?} via {gateway:?} dev {oif}"),
            |k, ns| {
                if dst.is_none() && gateway.is_none() {
                    return Err(io::Error::from_raw_os_error(libc::EINVAL));
                }
                let n = k.ns(ns)?;
                if n.routes.iter().any(|r| r.0 == dst && r.2 == oif) {
                    return Err(io::Error::from_raw_os_error(libc::EEXIST));
                }
                n.routes.push((dst, gateway, oif));
                Ok(())
            },
        )
    }
    fn del_route(&mut self, dst: IpNet, oif: u32) -> io::Result<()> {
        self.with(format!("del_route {dst} dev {oif}"), |k, ns| {
            k.ns(ns)?
                .routes
                .retain(|r| !(r.0 == Some(dst) && r.2 == oif));
            Ok(())
        })
    }
    fn dad_state(&mut self, index: u32) -> io::Result<(Vec<IpAddr>, Vec<IpAddr>)> {
        self.with(format!("dad_state {index}"), |k, ns| {
            let lan = k.lan.clone();
            let l = k.link_mut(ns, index)?;
            let failed = l
                .addresses
                .iter()
                .map(|(a, _)| *a)
                .filter(|a| a.is_ipv6() && lan.contains_key(a))
                .collect();
            Ok((Vec::new(), failed))
        })
    }
}

/// The probe listener of the fake: the LAN answers for `FakeKernel::lan`.
struct FakeListener {
    kernel: Rc<RefCell<FakeKernel>>,
}

impl ProbeListener for FakeListener {
    fn bind(&mut self, ifindex: u32) -> Result<()> {
        self.kernel
            .borrow_mut()
            .call("-", format!("listen {ifindex}"))
            .kernel("bind the probe socket")
    }
    fn probe_v4(
        &mut self,
        ifindex: u32,
        _mac: MacAddr,
        ip: Ipv4Addr,
        _window: Duration,
    ) -> Result<Option<MacAddr>> {
        let mut k = self.kernel.borrow_mut();
        k.call("-", format!("probe {ifindex} {ip}"))
            .kernel("probe")?;
        Ok(k.lan.get(&IpAddr::V4(ip)).copied())
    }
    fn ndp_holder(&mut self, ip: Ipv6Addr, _ours: MacAddr) -> Option<MacAddr> {
        self.kernel.borrow().lan.get(&IpAddr::V6(ip)).copied()
    }
    fn into_fd(self: Box<Self>) -> Option<OwnedFd> {
        None
    }
}

struct FakeAnnouncer {
    kernel: Rc<RefCell<FakeKernel>>,
}

impl Announcing for FakeAnnouncer {
    fn announce(self: Box<Self>, what: &Announce, _hand_over: Option<OwnedFd>) -> Result<()> {
        self.kernel
            .borrow_mut()
            .announced
            .push((what.ifindex, what.mac));
        Ok(())
    }
}

/// The fake OS. Its kernel is shared (`Rc`) with the test that inspects it.
pub struct FakeOs {
    pub kernel: Rc<RefCell<FakeKernel>>,
    host: FakeRtnl,
}

impl FakeOs {
    /// A host namespace with `lo` and `eth0` (up), and one container namespace (with `lo`)
    /// per name.
    pub fn new(containers: &[&str]) -> FakeOs {
        let mut k = FakeKernel::default();
        k.add_nic(HOST, "lo", MacAddr([0; 6]), true);
        k.add_nic(HOST, "eth0", MacAddr([0x02, 0xfc, 0, 0, 0, 1]), true);
        for c in containers {
            k.add_nic(c, "lo", MacAddr([0; 6]), true);
        }
        let kernel = Rc::new(RefCell::new(k));
        FakeOs {
            host: FakeRtnl {
                kernel: kernel.clone(),
                ns: HOST.to_string(),
            },
            kernel,
        }
    }

    fn rtnl(&self, ns: &str) -> FakeRtnl {
        FakeRtnl {
            kernel: self.kernel.clone(),
            ns: ns.to_string(),
        }
    }
}

impl Os for FakeOs {
    fn host(&mut self) -> Result<&mut dyn Rtnl> {
        Ok(&mut self.host)
    }
    fn open_netns(&mut self, path: &str) -> Result<Netns> {
        if self.kernel.borrow().namespaces.contains_key(path) {
            Ok(Netns::fake(path))
        } else {
            Err(Error::io(
                format!("cannot open network namespace {path}"),
                io::Error::from_raw_os_error(libc::ENOENT),
            ))
        }
    }
    fn is_own_netns(&mut self, ns: &Netns) -> Result<bool> {
        Ok(ns.path().to_str() == Some(HOST))
    }
    fn rtnl_in(&mut self, ns: &Netns) -> Result<Box<dyn Rtnl>> {
        Ok(Box::new(self.rtnl(&ns.path().display().to_string())))
    }
    fn enter(&mut self, ns: &Netns, req: &EnterRequest) -> Result<Inside> {
        let path = ns.path().display().to_string();
        self.kernel
            .borrow_mut()
            .call(&path, format!("enter {}", req.ifname))
            .kernel("enter the namespace")?;
        let kernel = self.kernel.clone();
        Ok(Inside {
            rtnl: Box::new(self.rtnl(&path)),
            listener: req.listen.then(|| {
                Box::new(FakeListener {
                    kernel: kernel.clone(),
                }) as Box<dyn ProbeListener>
            }),
            announcer: (req.announce_v4 || req.announce_v6).then(|| {
                Box::new(FakeAnnouncer {
                    kernel: kernel.clone(),
                }) as Box<dyn Announcing>
            }),
            restore_after_dad: req
                .fast_dad
                .map(|_| Box::new(|| Ok(())) as Box<dyn FnOnce() -> Result<()>>),
        })
    }
    fn host_listener(&mut self) -> Result<Box<dyn ProbeListener>> {
        Ok(Box::new(FakeListener {
            kernel: self.kernel.clone(),
        }))
    }
}
