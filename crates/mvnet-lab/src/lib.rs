//! The sandbox lab: a private LAN made only of network namespaces, so mvnet (and its tests
//! and demo) can run the seed's scenario without touching this machine's real interfaces.
//!
//! ```text
//!   {lab}-out  198.51.100.10 ── {lab}-gw 198.51.100.1 / 10.103.19.1 ──┐
//!                                                                      │ switch: bridge br0
//!   {lab}-host eth0 10.103.19.10 (the "docker host", default via .1) ──┤ in {lab}-sw
//!   {lab}-peer eth0 10.103.19.20 (another LAN host)                  ──┘
//! ```
//!
//! `up_with_hosts(n)` adds docker hosts `host2`.. at 10.103.19.11.. (each with its own
//! mvnet state root), and `add_machine` any other machine on the LAN (an etcd member, say).
//!
//! Where the kernel has 802.1Q, a second switch (br1) carries a trunk, as in the seed:
//! the host's `ens19` (left down, like a fresh trunk port), the gateway's `ens19` with
//! VLAN 1317 (10.103.17.1) and 1318 (10.103.18.1), and the peer's `ens19` with VLAN 1317
//! (10.103.17.20 and, to prove L2 separation, 10.103.18.99) plus untagged 10.103.18.98.

pub mod testkit;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use mvnet_core::error::KernelContext;
use mvnet_core::netlink::{Netlink, VethEnd};
use mvnet_core::netns::{self, Netns};
use mvnet_core::{Error, Result};

pub const DEFAULT_LAB: &str = "mvlab";
pub const LAN_SUBNET: &str = "10.103.19.0/24";
pub const GATEWAY: &str = "10.103.19.1";
pub const HOST_IP: &str = "10.103.19.10";
pub const PEER_IP: &str = "10.103.19.20";
pub const OUTSIDE_IP: &str = "198.51.100.10";
/// The trunk's VLANs and their gateways (seed: 10.103.[17-18].0/24).
pub const TRUNK_VLANS: [(u16, &str); 2] = [(1317, "10.103.17.1"), (1318, "10.103.18.1")];

/// Parts of a lab, by namespace suffix.
const PARTS: [&str; 5] = ["sw", "host", "gw", "out", "peer"];

/// Names and paths of one lab instance. Every name derives from `name`, so parallel tests
/// with unique names never collide.
#[derive(Debug, Clone)]
pub struct Lab {
    pub name: String,
}

impl Lab {
    pub fn new(name: &str) -> Result<Lab> {
        mvnet_core::model::network::check_name(name, "lab")?;
        if name.len() > 24 {
            return Err(mvnet_core::invalid!(
                "lab name '{name}' is too long; use at most 24 characters"
            ));
        }
        Ok(Lab {
            name: name.to_string(),
        })
    }

    pub fn netns_name(&self, part: &str) -> String {
        format!("{}-{part}", self.name)
    }

    pub fn netns_path(&self, part: &str) -> PathBuf {
        netns::named_path(&self.netns_name(part))
    }

    /// The simulated Docker host, where `lab exec` runs commands.
    pub fn host_netns(&self) -> PathBuf {
        self.netns_path("host")
    }

    /// State of the mvnet running *inside* the lab host: separate from the real host's.
    pub fn state_root(&self) -> PathBuf {
        Path::new("/run/mvnet/lab").join(&self.name)
    }

    /// The namespace of docker host `n` (1 is `host`; more with `up_with_hosts`).
    pub fn host_part(n: usize) -> String {
        if n <= 1 {
            "host".into()
        } else {
            format!("host{n}")
        }
    }

    /// The state root of docker host `n`: each host of a multi-host lab is a machine of
    /// its own, with its own mvnet state (host 1 keeps the lab's root).
    pub fn host_state_root(&self, n: usize) -> PathBuf {
        if n <= 1 {
            self.state_root()
        } else {
            self.state_root().join("hosts").join(Lab::host_part(n))
        }
    }

    /// The address of docker host `n` on the LAN: 10.103.19.10, .11, ...
    pub fn host_ip(n: usize) -> IpAddr {
        let last = 9 + n.max(1) as u8;
        IpAddr::from([10, 103, 19, last])
    }

    /// Builds the lab with `hosts` docker hosts on the LAN (host, host2, host3, ...), each
    /// with its own state root.
    pub fn up_with_hosts(&self, hosts: usize) -> Result<()> {
        if !(1..=9).contains(&hosts) {
            return Err(mvnet_core::invalid!(
                "a lab has 1 to 9 docker hosts, not {hosts}"
            ));
        }
        self.up()?;
        let added = (2..=hosts).try_for_each(|n| {
            self.add_machine(&Lab::host_part(n), Lab::host_ip(n))?;
            mvnet_core::store::root::prepare(&self.state_root().join("hosts"))?;
            mvnet_core::store::root::prepare(&self.host_state_root(n))
        });
        if added.is_err() {
            let _ = self.down();
        }
        added
    }

    /// How many docker hosts the lab has.
    pub fn host_count(&self) -> usize {
        1 + (2..=9)
            .take_while(|&n| self.netns_path(&Lab::host_part(n)).exists())
            .count()
    }

    /// Adds a machine to the LAN: namespace `{lab}-{part}` with `eth0` at `ip`/24 (default
    /// route via the gateway), plugged into the switch. `lab down` removes it with the rest.
    pub fn add_machine(&self, part: &str, ip: IpAddr) -> Result<()> {
        if PARTS.contains(&part) || part.len() > 12 {
            return Err(mvnet_core::invalid!(
                "a lab machine needs a new name of at most 12 characters, not {part}"
            ));
        }
        mvnet_core::store::root::prepare(&self.state_root())?;
        self.record_machine(part)?;
        let machine = netns::create_named(&self.netns_name(part))?;
        let sw_ns = Netns::open(self.netns_path("sw"))?;
        let mut sw = Netlink::in_netns(&sw_ns)?;
        let br = sw
            .link_by_name("br0")
            .kernel("find br0")?
            .ok_or_else(|| Error::Internal("the lab switch has no br0".into()))?;
        plug(&mut sw, br.index, &format!("p-{part}"), &machine, "eth0")?;
        configure(
            &mut Netlink::in_netns(&machine)?,
            "eth0",
            ip,
            24,
            Some(GATEWAY.parse().unwrap()),
        )?;
        let mut lo = Netlink::in_netns(&machine)?;
        up_link(&mut lo, "lo")?;
        Ok(())
    }

    fn machines_file(&self) -> PathBuf {
        Path::new("/run/mvnet/lab").join(format!("{}.machines", self.name))
    }

    fn record_machine(&self, part: &str) -> Result<()> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.machines_file())
            .map_err(|e| Error::io("record a lab machine", e))?;
        writeln!(f, "{part}").map_err(|e| Error::io("record a lab machine", e))
    }

    /// The machines `add_machine` added.
    fn machines(&self) -> Vec<String> {
        std::fs::read_to_string(self.machines_file())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn exists(&self) -> bool {
        self.host_netns().exists()
    }

    /// Builds the lab. On failure, whatever was built is removed again.
    pub fn up(&self) -> Result<()> {
        if self.exists() {
            return Err(mvnet_core::conflict!(
                "lab {} is already up; use it (mvnet lab exec) or remove it (mvnet lab down)",
                self.name
            ));
        }
        let built = self.build();
        if built.is_err() {
            let _ = self.down();
        }
        built
    }

    fn build(&self) -> Result<()> {
        let mut ns = std::collections::HashMap::new();
        for part in PARTS {
            ns.insert(part, netns::create_named(&self.netns_name(part))?);
        }
        let k = |op: &'static str| move |e: std::io::Error| Error::kernel(op, e);
        // The switch: one bridge, one port per machine on the LAN.
        let mut sw = Netlink::in_netns(&ns["sw"])?;
        sw.create_bridge("br0").map_err(k("create lab bridge"))?;
        let br = sw
            .link_by_name("br0")
            .map_err(k("find br0"))?
            .expect("br0 just created");
        sw.set_up(br.index, true).map_err(k("set br0 up"))?;
        for (port, part) in [("p-host", "host"), ("p-gw", "gw"), ("p-peer", "peer")] {
            plug(&mut sw, br.index, port, &ns[part], "eth0")?;
        }
        // The gateway's second leg, to the "outside" network.
        let mut gw = Netlink::in_netns(&ns["gw"])?;
        gw.create_veth(
            VethEnd {
                name: "eth1",
                netns: None,
            },
            VethEnd {
                name: "eth0",
                netns: Some(&ns["out"]),
            },
        )
        .map_err(k("create gateway uplink"))?;
        let lan: IpAddr = GATEWAY.parse().unwrap();
        configure(&mut gw, "eth0", lan, 24, None)?;
        configure(&mut gw, "eth1", "198.51.100.1".parse().unwrap(), 24, None)?;
        netns::run_in(&ns["gw"], || {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        })?
        .map_err(|e| Error::io("enable forwarding on the lab gateway", e))?;
        let gw_out: IpAddr = "198.51.100.1".parse().unwrap();
        configure(
            &mut Netlink::in_netns(&ns["out"])?,
            "eth0",
            OUTSIDE_IP.parse().unwrap(),
            24,
            Some(gw_out),
        )?;
        configure(
            &mut Netlink::in_netns(&ns["host"])?,
            "eth0",
            HOST_IP.parse().unwrap(),
            24,
            Some(lan),
        )?;
        configure(
            &mut Netlink::in_netns(&ns["peer"])?,
            "eth0",
            PEER_IP.parse().unwrap(),
            24,
            Some(lan),
        )?;
        if mvnet_core::kernel::supports(mvnet_core::netlink::ProbeKind::Vlan)? {
            self.build_trunk(&mut sw, &ns)?;
        }
        Ok(())
    }

    /// Whether this lab has the 802.1Q trunk (the kernel supports it).
    pub fn has_trunk(&self) -> bool {
        Netns::open(self.netns_path("gw"))
            .and_then(|ns| Netlink::in_netns(&ns))
            .and_then(|mut nl| nl.link_by_name("ens19").kernel("look up trunk"))
            .is_ok_and(|l| l.is_some())
    }

    fn build_trunk(
        &self,
        sw: &mut Netlink,
        ns: &std::collections::HashMap<&str, Netns>,
    ) -> Result<()> {
        let k = |op: &'static str| move |e: std::io::Error| Error::kernel(op, e);
        sw.create_bridge("br1").map_err(k("create trunk switch"))?;
        let br = sw
            .link_by_name("br1")
            .map_err(k("find br1"))?
            .expect("br1 just created");
        sw.set_up(br.index, true).map_err(k("set br1 up"))?;
        for (port, part) in [("t-host", "host"), ("t-gw", "gw"), ("t-peer", "peer")] {
            plug(sw, br.index, port, &ns[part], "ens19")?;
        }
        let mut gw = Netlink::in_netns(&ns["gw"])?;
        let trunk = up_link(&mut gw, "ens19")?;
        for (vid, gw_ip) in TRUNK_VLANS {
            let name = format!("ens19.{vid}");
            gw.create_vlan(&name, trunk, vid, None)
                .map_err(k("create gateway VLAN"))?;
            configure(&mut gw, &name, gw_ip.parse().unwrap(), 24, None)?;
        }
        let mut peer = Netlink::in_netns(&ns["peer"])?;
        let trunk = up_link(&mut peer, "ens19")?;
        peer.add_address(trunk, "10.103.18.98".parse().unwrap(), 24)
            .map_err(k("address peer trunk"))?;
        peer.create_vlan("ens19.1317", trunk, 1317, None)
            .map_err(k("create peer VLAN"))?;
        configure(
            &mut peer,
            "ens19.1317",
            "10.103.17.20".parse().unwrap(),
            24,
            None,
        )?;
        let v = peer
            .link_by_name("ens19.1317")
            .map_err(k("find peer VLAN"))?
            .expect("just created");
        peer.add_address(v.index, "10.103.18.99".parse().unwrap(), 24)
            .map_err(k("address peer VLAN"))?;
        // The docker host's ens19 stays down: mvnet brings a trunk up when it needs it.
        Ok(())
    }

    /// Removes the lab and every container namespace the lab host's mvnet made. Safe to run
    /// after a crash, twice, or on a lab that never fully came up.
    pub fn down(&self) -> Result<()> {
        let root = self.state_root();
        let machines = self.machines();
        let roots = std::iter::once(root.clone()).chain(
            machines
                .iter()
                .filter_map(|m| m.strip_prefix("host")?.parse::<usize>().ok())
                .map(|n| self.host_state_root(n)),
        );
        for r in roots {
            mvnet_core::fleet::keeper::stop(&r);
            if r.join("mvnet.db").exists() {
                if let Ok(mut engine) = mvnet_core::engine::Engine::open_local(&r) {
                    for c in engine.containers().unwrap_or_default() {
                        let _ = mvnet_core::runtime::remove(&mut engine, &c.id, true);
                    }
                }
            }
        }
        let mut first_err = None;
        for part in PARTS
            .iter()
            .copied()
            .chain(machines.iter().map(String::as_str))
        {
            if let Err(e) = netns::remove_persistent(&self.netns_path(part)) {
                first_err.get_or_insert(e);
            }
        }
        let _ = std::fs::remove_file(self.machines_file());
        if root.exists() {
            if let Err(e) = std::fs::remove_dir_all(&root) {
                first_err.get_or_insert(Error::io(format!("remove {}", root.display()), e));
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Labs that exist (by their host namespace), for `lab ls` and cleanup.
    pub fn list() -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(netns::NETNS_RUN_DIR) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().to_string();
                if let Some(lab) = n.strip_suffix("-host") {
                    if netns::named_path(&format!("{lab}-sw")).exists() {
                        out.push(lab.to_string());
                    }
                }
            }
        }
        out.sort();
        out
    }
}

/// A veth from the switch bridge to a machine: `port` on the bridge, `ifname` in `machine`.
fn plug(sw: &mut Netlink, bridge: u32, port: &str, machine: &Netns, ifname: &str) -> Result<()> {
    let k = |op: &'static str| move |e: std::io::Error| Error::kernel(op, e);
    sw.create_veth(
        VethEnd {
            name: port,
            netns: None,
        },
        VethEnd {
            name: ifname,
            netns: Some(machine),
        },
    )
    .map_err(k("create lab cable"))?;
    let p = sw
        .link_by_name(port)
        .map_err(k("find lab port"))?
        .expect("port just created");
    sw.set_master(p.index, bridge)
        .map_err(k("plug port into lab switch"))?;
    sw.set_up(p.index, true).map_err(k("set lab port up"))
}

fn up_link(nl: &mut Netlink, name: &str) -> Result<u32> {
    let l = nl
        .link_by_name(name)
        .kernel("find lab link")?
        .ok_or_else(|| Error::Internal(format!("lab link {name} missing")))?;
    nl.set_up(l.index, true).kernel("set lab link up")?;
    Ok(l.index)
}

fn configure(
    nl: &mut Netlink,
    ifname: &str,
    ip: IpAddr,
    prefix: u8,
    default_via: Option<IpAddr>,
) -> Result<()> {
    let k = |op: &'static str| move |e: std::io::Error| Error::kernel(op, e);
    let l = nl
        .link_by_name(ifname)
        .map_err(k("find lab interface"))?
        .expect("lab interface exists");
    nl.add_address(l.index, ip, prefix)
        .map_err(k("address lab interface"))?;
    nl.set_up(l.index, true)
        .map_err(k("set lab interface up"))?;
    if let Some(gw) = default_via {
        nl.add_route(None, Some(gw), l.index)
            .map_err(k("add lab default route"))?;
    }
    Ok(())
}

/// Brings a lab up and tears it down when dropped, even on panic: for tests and the demo.
pub struct LabGuard {
    pub lab: Lab,
}

impl LabGuard {
    pub fn up(name: &str) -> Result<LabGuard> {
        LabGuard::up_with_hosts(name, 1)
    }

    /// A lab with `hosts` docker hosts (see [`Lab::up_with_hosts`]).
    pub fn up_with_hosts(name: &str, hosts: usize) -> Result<LabGuard> {
        let lab = Lab::new(name)?;
        // A previous crashed run may have left it behind.
        let _ = lab.down();
        lab.up_with_hosts(hosts)?;
        Ok(LabGuard { lab })
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        if let Err(e) = self.lab.down() {
            eprintln!("mvnet: lab {} cleanup: {e}", self.lab.name);
        }
    }
}

/// A command that runs on the lab's docker host: inside its netns, with the lab's own mvnet
/// state, and with this mvnet first on PATH.
pub fn lab_command(lab: &Lab, argv: &[String]) -> Result<std::process::Command> {
    lab_command_on(lab, 1, argv)
}

/// [`lab_command`] on docker host `host` (1, 2, ...) of a multi-host lab.
pub fn lab_command_on(lab: &Lab, host: usize, argv: &[String]) -> Result<std::process::Command> {
    if !lab.exists() {
        return Err(mvnet_core::not_found!(
            "lab {} is not up; start it with: mvnet lab up",
            lab.name
        ));
    }
    if host > lab.host_count() {
        return Err(mvnet_core::not_found!(
            "lab {} has {} docker host(s), not {host}; start it with: mvnet lab up --hosts {host}",
            lab.name,
            lab.host_count()
        ));
    }
    let mut cmd = mvnet_core::netns::command_in(&lab.netns_path(&Lab::host_part(host)), &argv[0])?;
    cmd.args(&argv[1..]);
    cmd.env("MVNET_ROOT", lab.host_state_root(host));
    // Each lab host is a machine of its own: its own name in the fleet.
    if host > 1 {
        cmd.env(
            "MVNET_HOST_NAME",
            format!("{}-{}", lab.name, Lab::host_part(host)),
        );
    } else {
        cmd.env("MVNET_HOST_NAME", format!("{}-host", lab.name));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            let path = std::env::var("PATH").unwrap_or_default();
            cmd.env("PATH", format!("{}:{path}", dir.display()));
        }
    }
    Ok(cmd)
}
