//! One lease, for its whole life, in a process of its own (`mvnet-dhcp --lease`, a child of
//! the agent) that has entered the container's network namespace: mozim's DHCP client
//! then opens its raw and UDP sockets there, on the container's interface, so it renews by
//! unicast from the leased address at T1 (a client on the host's parent cannot: it does not
//! own that address) and rebinds by broadcast at T2. Every renewal is written to the
//! endpoint's row; a new address (the server changed its mind) is put on the interface in
//! place of the old one.
//!
//! A process rather than a thread of the agent: every socket a DHCP client opened in the
//! container's namespace keeps that namespace (and so the container's MAC on the parent)
//! alive until it is closed, and a process that exits closes them all, whatever the DHCP
//! library keeps. It also ends with the agent (its stdin, the agent's pipe, closes), so a
//! restarted agent is the only one renewing.
//!
//! The agent and its lease process speak one JSON line at a time: the spec on stdin, then
//! `release` (send DHCPRELEASE, then exit) or `decline` (send DHCPDECLINE: the conflict
//! probe found the address in use; then exit); the process answers on stdout with the
//! lease (`{"lease": ...}`) or an error (`{"error": "..."}`), and `{"released": true}` or
//! `{"declined": true}`.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mozim::{DhcpV4Client, DhcpV4Config, DhcpV4Lease, DhcpV4State};
use mvnet_core::engine::Engine;
use mvnet_core::model::Lease;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;

/// What a lease process is for (its first line on stdin).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    pub key: String,
    pub root: std::path::PathBuf,
    pub netns: String,
    pub ifname: String,
    pub client_id: Vec<u8>,
    pub hostname: String,
    pub timeout_secs: u32,
    /// A recorded lease to resume (INIT-REBOOT) instead of a new DORA.
    pub resume: Option<Lease>,
    /// `netns`/`ifname` are not the endpoint's recorded place (the runtime moved the
    /// link): every recorded renewal says where the lease lives.
    #[serde(default)]
    pub moved: bool,
    /// Lease from the parent's side (ipvlan; see `mvnet_core::dhcp::Proxy`) until the
    /// agent moves the lease into the container.
    #[serde(default)]
    pub proxy: Option<mvnet_core::dhcp::Proxy>,
}

impl Spec {
    /// The container id and network id in the key (`container/network`).
    fn owner(&self) -> (&str, &str) {
        self.key.split_once('/').unwrap_or((&self.key, ""))
    }
}

/// One line to the agent.
fn say(v: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// The lease process: reads its spec from stdin, enters the namespace, runs the lease
/// until `release` arrives or stdin closes (the agent is gone).
pub fn run_process() -> i32 {
    // This process ends when its stdin closes, which happens when the agent dies (even by
    // kill -9: the kernel closes the pipe), so only one process ever renews a lease.
    // (Not PR_SET_PDEATHSIG: it fires when the agent's *thread* that started this one
    // ends, and those are short-lived.)
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err() {
        return 1;
    }
    let spec: Spec = match serde_json::from_str(&line) {
        Ok(s) => s,
        Err(e) => {
            say(serde_json::json!({"error": format!("bad lease spec: {e}")}));
            return 1;
        }
    };
    let netns = spec.proxy.as_ref().map_or(&spec.netns, |p| &p.netns);
    if let Err(e) = enter(netns) {
        log(&spec.key, &e);
        say(serde_json::json!({"error": e}));
        return 1;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say(serde_json::json!({"error": format!("cannot start a runtime: {e}")}));
            return 1;
        }
    };
    rt.block_on(renew_forever(spec))
}

/// This process (one thread), into the container's network namespace for good.
fn enter(netns: &str) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(netns).map_err(|e| format!("cannot open {netns}: {e}"))?;
    // SAFETY: setns(2) on an open namespace fd; it changes only this thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "cannot enter {netns}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

async fn renew_forever(spec: Spec) -> i32 {
    let mut config = match &spec.proxy {
        None => DhcpV4Config::new(&spec.ifname),
        Some(p) => match DhcpV4Config::new_proxy(&p.parent, &p.mac) {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("DHCP client on {}: {e}", p.parent);
                say(serde_json::json!({"error": msg}));
                return 1;
            }
        },
    };
    if !spec.hostname.is_empty() {
        config.set_host_name(&spec.hostname);
    }
    if let Some((kind, id)) = spec.client_id.split_first() {
        config.set_client_id(*kind, id);
    }
    // Bounds the first acquisition; later, a renewal that gets no answer this long
    // ends in a timeout, after which the client starts over (the address stays meanwhile).
    // The first acquisition runs in attempts of a few seconds each until the network's
    // timeout: an exchange can stall for good (two clients offered one address at once,
    // the loser NAKed), and a fresh DISCOVER gets past that. Later, a renewal that gets no
    // answer this long ends in a timeout, after which the client starts over (the address
    // stays meanwhile).
    let deadline = std::time::Instant::now() + Duration::from_secs(spec.timeout_secs.max(1) as u64);
    config.set_timeout_sec(spec.timeout_secs.clamp(1, 4));
    let resume = spec.resume.clone();
    let mut first = resume.is_none();
    let mut current = resume.clone();
    let mut client = match DhcpV4Client::init(config.clone(), resume.as_ref().map(to_mozim)).await {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("DHCP client on {}: {e}", spec.ifname);
            log(&spec.key, &msg);
            say(serde_json::json!({"error": msg}));
            return 1;
        }
    };
    if resume.is_some() {
        log(
            &spec.key,
            "resumed; verifying the recorded lease (INIT-REBOOT)",
        );
    }
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = stdin.next_line() => {
                match line {
                    Ok(Some(l)) if l.trim() == "release" => {
                        if let Some(l) = current.as_ref() {
                            match client.release(&to_mozim(l)).await {
                                Ok(()) => log(&spec.key, &format!("released {}", l.ip)),
                                Err(e) => log(&spec.key, &format!("release of {} failed: {e}", l.ip)),
                            }
                        }
                        say(serde_json::json!({"released": true}));
                        return 0;
                    }
                    Ok(Some(l)) if l.trim() == "decline" => {
                        if let Some(l) = current.as_ref() {
                            match decline(&spec, l) {
                                Ok(()) => log(&spec.key, &format!("declined {} (in use on the LAN)", l.ip)),
                                Err(e) => log(&spec.key, &format!("cannot decline {}: {e}", l.ip)),
                            }
                        }
                        say(serde_json::json!({"declined": true}));
                        return 0;
                    }
                    Ok(Some(other)) => log(&spec.key, &format!("unknown order {other:?}")),
                    // The agent is gone (or replaced this process): stop, without a release.
                    other => {
                        log(&spec.key, &format!("the agent hung up ({other:?}); stopping"));
                        return 0;
                    }
                }
            }
            state = client.run() => match state {
                Ok(DhcpV4State::Done(l)) => {
                    let lease = from_mozim(&l, &spec);
                    if first {
                        first = false;
                        log(&spec.key, &format!("leased {}/{} from {} for {} s", lease.ip, lease.prefix, lease.server, lease.lease_secs));
                        say(serde_json::json!({"lease": lease}));
                    } else {
                        let moved = current.as_ref().is_some_and(|c| c.ip != lease.ip);
                        if moved {
                            let old = current.as_ref().map(|c| (c.ip, c.prefix));
                            if let Err(e) = readdress(&spec, old, &lease) {
                                log(&spec.key, &format!("cannot move to {}: {e}", lease.ip));
                            }
                        }
                        log(&spec.key, &format!("renewed {} for {} s (next at T1 = {} s)", lease.ip, lease.lease_secs, lease.t1_secs));
                        record(&spec, &lease);
                    }
                    current = Some(lease);
                }
                Ok(_) => {}
                Err(e) => {
                    if first && std::time::Instant::now() + Duration::from_secs(1) < deadline {
                        log(&spec.key, &format!("{e}; asking again"));
                        let left = deadline.saturating_duration_since(std::time::Instant::now());
                        let mut again = config.clone();
                        again.set_timeout_sec((left.as_secs() as u32).clamp(1, 4));
                        match DhcpV4Client::init(again, None).await {
                            Ok(c) => {
                                client = c;
                                continue;
                            }
                            Err(e) => log(&spec.key, &format!("cannot start over: {e}")),
                        }
                    }
                    if first {
                        let msg = format!(
                            "no DHCP server answered on {} in {} s ({e}); check that the LAN has one (or raise -o dhcp_timeout)",
                            spec.ifname, spec.timeout_secs
                        );
                        log(&spec.key, &msg);
                        say(serde_json::json!({"error": msg}));
                        return 1;
                    }
                    // Renewal and rebinding got no answer (or a NAK): start over, keep
                    // the address until a server says otherwise.
                    log(&spec.key, &format!("{e}; starting over"));
                    client.clean_up();
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    }
}

/// The recorded form of a lease mozim handed over.
fn from_mozim(l: &DhcpV4Lease, spec: &Spec) -> Lease {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let at = |secs: u64| mvnet_core::model::time::format_rfc3339(secs as i64, 0);
    Lease {
        ip: l.yiaddr,
        prefix: l.prefix_length(),
        gateway: l.gateways.as_ref().and_then(|g| g.first().copied()),
        dns: l.dns_srvs.clone().unwrap_or_default(),
        server: l.srv_id,
        lease_secs: l.lease_time_sec,
        t1_secs: l.t1_sec,
        t2_secs: l.t2_sec,
        obtained: at(now.as_secs()),
        expires: at(now.as_secs() + l.lease_time_sec as u64),
        client_id: mvnet_core::dhcp::hex(&spec.client_id),
        hostname: spec.hostname.clone(),
        netns: spec.moved.then(|| spec.netns.clone()),
        ifname: spec.moved.then(|| spec.ifname.clone()),
    }
}

/// Sends DHCPDECLINE for `lease` on this namespace's `ifname` (a packet socket: the
/// message goes from 0.0.0.0, and the interface has no address).
fn decline(spec: &Spec, lease: &Lease) -> Result<(), String> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let mut nl = mvnet_core::netlink::Netlink::new().map_err(|e| e.to_string())?;
    let link = nl
        .link_by_name(&spec.ifname)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{} is gone", spec.ifname))?;
    let mac = link.mac.ok_or("the interface has no MAC")?;
    let xid = std::process::id()
        ^ (SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos());
    let packet =
        mvnet_core::dhcp::decline_packet(mac, &spec.client_id, lease.ip, lease.server, xid);
    let eth_p_ip = (libc::ETH_P_IP as u16).to_be();
    // SAFETY: a new socket, owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            eth_p_ip as i32,
        )
    };
    if fd < 0 {
        return Err(format!(
            "packet socket: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: fd is a new, valid descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; zero is a valid start.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = eth_p_ip;
    to.sll_ifindex = link.index as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    // SAFETY: packet and address are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&to as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if sent < 0 {
        return Err(format!("send: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// A recorded lease, rebuilt for mozim (to verify it after a restart, or release it).
fn to_mozim(l: &Lease) -> DhcpV4Lease {
    let mut m = DhcpV4Lease::default();
    m.yiaddr = l.ip;
    m.srv_id = l.server;
    m.siaddr = l.server;
    m.subnet_mask = prefix_mask(l.prefix);
    m.lease_time_sec = l.lease_secs;
    m.t1_sec = l.t1_secs;
    m.t2_sec = l.t2_secs;
    m.gateways = l.gateway.map(|g| vec![g]);
    m.dns_srvs = (!l.dns.is_empty()).then(|| l.dns.clone());
    m
}

fn prefix_mask(prefix: u8) -> Ipv4Addr {
    let bits = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix.min(32) as u32)
    };
    Ipv4Addr::from(bits)
}

/// Writes a renewed lease onto its endpoint's row (and a new address into the LAN's
/// address book).
fn record(spec: &Spec, lease: &Lease) {
    let (container, network) = spec.owner();
    let done = Engine::open_existing(&spec.root)
        .and_then(|mut e| e.record_lease(container, network, lease));
    if let Err(e) = done {
        log(&spec.key, &format!("cannot record the renewal: {e}"));
    }
}

/// The server gave another address: put it on the interface in place of the old one,
/// with the default route through the lease's gateway, and announce it. (This thread is in the
/// container's namespace, so its netlink socket is too.)
fn readdress(spec: &Spec, old: Option<(Ipv4Addr, u8)>, lease: &Lease) -> Result<(), String> {
    let mut nl = mvnet_core::netlink::Netlink::new().map_err(|e| e.to_string())?;
    let link = nl
        .link_by_name(&spec.ifname)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{} is gone", spec.ifname))?;
    // The old one first: deleting a primary address takes the secondaries of its subnet
    // with it, and the new one would be one of them.
    if let Some((old, prefix)) = old {
        let _ = nl.del_address(link.index, IpAddr::V4(old), prefix);
    }
    nl.add_address(link.index, IpAddr::V4(lease.ip), lease.prefix)
        .map_err(|e| e.to_string())?;
    if let Some(gw) = lease.gateway {
        let _ = nl.add_route(None, Some(IpAddr::V4(gw)), link.index);
    }
    // Tell the LAN where the new address lives, as after every attach (3 gratuitous ARPs).
    if let Some(mac) = link.mac {
        let sent = mvnet_core::announce::Announcer::open_here(true, false).and_then(|a| {
            a.announce(
                &mvnet_core::announce::Announce {
                    ifindex: link.index,
                    mac,
                    ipv4: Some(lease.ip),
                    ipv6: None,
                    count: 3,
                    interval: Duration::from_secs(1),
                },
                None,
            )
        });
        if let Err(e) = sent {
            log(&spec.key, &format!("cannot announce {}: {e}", lease.ip));
        }
    }
    Ok(())
}

pub fn log(key: &str, msg: &str) {
    let short: String = key.chars().take(12).collect();
    eprintln!("mvnet-dhcp: {short}: {msg}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_recorded_leases_round_trip() {
        assert_eq!(prefix_mask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(prefix_mask(0), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(prefix_mask(32), Ipv4Addr::new(255, 255, 255, 255));
        let spec = Spec {
            key: "c/n".into(),
            root: "/tmp".into(),
            netns: String::new(),
            ifname: "eth0".into(),
            client_id: vec![0, b'x'],
            hostname: "web".into(),
            timeout_secs: 10,
            resume: None,
            moved: false,
            proxy: None,
        };
        let l = Lease {
            ip: Ipv4Addr::new(10, 103, 19, 120),
            prefix: 24,
            gateway: Some(Ipv4Addr::new(10, 103, 19, 1)),
            dns: vec![],
            server: Ipv4Addr::new(10, 103, 19, 1),
            lease_secs: 120,
            t1_secs: 60,
            t2_secs: 105,
            obtained: String::new(),
            expires: String::new(),
            client_id: "0078".into(),
            hostname: "web".into(),
            netns: None,
            ifname: None,
        };
        let m = to_mozim(&l);
        assert_eq!(m.prefix_length(), 24);
        let back = from_mozim(&m, &spec);
        assert_eq!((back.ip, back.prefix, back.gateway), (l.ip, 24, l.gateway));
        assert_eq!(
            (back.t1_secs, back.t2_secs, back.lease_secs),
            (60, 105, 120)
        );
        assert_eq!(back.client_id, "0078");
        assert_eq!(spec.owner(), ("c", "n"));
    }
}
