//! DHCP for networks made with `--ipam-driver dhcp`: the front ends' side of the lease
//! agent (`mvnet-dhcp`, one per state root), and the pure rules for a stable identity.
//!
//! The agent runs each lease's DHCP client inside the container's own network namespace,
//! on the container's interface: renewals then go out as RFC 2131 wants (unicast from the
//! leased address at T1, broadcast at T2), which a client on the host's parent cannot do
//! (it does not own the leased address). The agent keeps renewing after the attach that
//! asked for the lease has returned, and records every lease on its endpoint in the store,
//! so a restarted agent resumes them (INIT-REBOOT, no new DORA).
//!
//! Front ends talk to it over `<root>/dhcp/agent.sock`, one JSON object per line; the
//! agent is started on demand.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::model::{Lease, MacAddr};
use crate::{Error, Result};

/// What a front end asks the agent for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// Lease an address for the interface `ifname` in `netns` (it exists and is up) and
    /// keep renewing it until released.
    Acquire {
        key: String,
        netns: String,
        ifname: String,
        client_id: String,
        hostname: String,
        timeout_secs: u32,
        /// Lease from the parent's side instead (see [`Proxy`]); the caller then moves the
        /// lease into the container once the address is on its interface.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        proxy: Option<Proxy>,
    },
    /// Send DHCPRELEASE and stop renewing.
    Release { key: String },
    /// The conflict probe found the leased address in use on the LAN: send DHCPDECLINE
    /// (RFC 2131 3.1.5) and stop, without a release.
    Decline { key: String },
    /// The runtime moved the interface (Docker's `Join` moves the link it was leased on
    /// into the container): go on renewing `lease` from `netns`/`ifname` under `new_key`,
    /// without a new DORA. The lease process of `key`, if any, stops without a release.
    Move {
        key: String,
        new_key: String,
        netns: String,
        ifname: String,
        hostname: String,
        lease: Lease,
        timeout_secs: u32,
    },
    /// Whether the agent answers.
    Ping,
}

/// Where an ipvlan endpoint's first DHCP exchange runs. An ipvlan port shares its parent's
/// MAC and gets unicast frames by destination IP, so a server's OFFER (sent to the MAC,
/// for an address no port has yet) reaches the parent, never the port. Without a
/// broadcast flag to ask for (mozim sends none), the exchange runs on the parent itself,
/// in its namespace (mozim's proxy mode), with the endpoint's own client identifier. Once
/// the address is on the port, replies to it reach the port, so renewals run inside the
/// container as for macvlan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proxy {
    /// The parent's network namespace (a path), its name there, and its MAC.
    pub netns: String,
    pub parent: String,
    pub mac: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The key of an endpoint's lease at the agent: its container and network.
pub fn lease_key(container_id: &str, network_id: &str) -> String {
    format!("{container_id}/{network_id}")
}

/// The client identifier (option 61, type 0) for a container on a network: from the
/// network's and the container's *names*, so a container re-created under the same name
/// asks for, and gets, the same address.
pub fn client_id(network: &str, container_name: &str) -> Vec<u8> {
    let mut id = vec![0u8];
    id.extend_from_slice(format!("mvnet/{network}/{container_name}").as_bytes());
    id
}

/// The client identifier (option 61, type 1 = Ethernet) of an endpoint whose container
/// has no name yet when it leases (Docker names none before the address is fixed): the
/// MAC, so a container started again with the same `--mac-address` gets the same address.
pub fn client_id_of_mac(mac: MacAddr) -> Vec<u8> {
    let mut id = vec![1u8];
    id.extend_from_slice(&mac.0);
    id
}

/// A DHCPDECLINE (message type 4) as an IPv4 packet, broadcast from 0.0.0.0 as RFC 2131
/// 4.4.4 wants: the address (option 50), the server (option 54) and the client identifier
/// (option 61). For a packet socket of type `SOCK_DGRAM` (the kernel adds the Ethernet
/// header, from the interface's MAC to the broadcast MAC).
pub fn decline_packet(
    mac: MacAddr,
    client_id: &[u8],
    ip: std::net::Ipv4Addr,
    server: std::net::Ipv4Addr,
    xid: u32,
) -> Vec<u8> {
    let mut dhcp = vec![0u8; 236];
    dhcp[0] = 1; // BOOTREQUEST
    dhcp[1] = 1; // Ethernet
    dhcp[2] = 6;
    dhcp[4..8].copy_from_slice(&xid.to_be_bytes());
    dhcp[28..34].copy_from_slice(&mac.0);
    dhcp.extend_from_slice(&[99, 130, 83, 99]); // magic cookie
    dhcp.extend_from_slice(&[53, 1, 4]);
    dhcp.extend_from_slice(&[50, 4]);
    dhcp.extend_from_slice(&ip.octets());
    dhcp.extend_from_slice(&[54, 4]);
    dhcp.extend_from_slice(&server.octets());
    if !client_id.is_empty() && client_id.len() <= 255 {
        dhcp.push(61);
        dhcp.push(client_id.len() as u8);
        dhcp.extend_from_slice(client_id);
    }
    dhcp.push(255);
    let udp_len = 8 + dhcp.len();
    let total = 20 + udp_len;
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&[0, 0, 0, 0]);
    p.extend_from_slice(&[255, 255, 255, 255]);
    let sum = ipv4_checksum(&p[..20]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(&68u16.to_be_bytes());
    p.extend_from_slice(&67u16.to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]); // no UDP checksum (allowed over IPv4)
    p.extend_from_slice(&dhcp);
    p
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A stable MAC for a DHCP endpoint (the 02:42 + IPv4 rule needs the address, which only
/// the server knows): 02:6d (locally administered, apart from 02:42) and four bytes of a
/// hash of the network id and the container name.
pub fn stable_mac(network_id: &str, container_name: &str) -> MacAddr {
    let h = crate::ids::fnv1a(
        network_id
            .bytes()
            .chain(std::iter::once(b'/'))
            .chain(container_name.bytes()),
    );
    let b = h.to_be_bytes();
    MacAddr([0x02, 0x6d, b[0], b[1], b[2], b[3]])
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

pub fn agent_dir(root: &Path) -> PathBuf {
    root.join("dhcp")
}

pub fn agent_socket(root: &Path) -> PathBuf {
    agent_dir(root).join("agent.sock")
}

/// Asks the agent for a lease, starting the agent if none answers. Waits up to the
/// request's timeout (plus a margin for the agent itself).
pub fn acquire(root: &Path, req: &Request) -> Result<Lease> {
    let timeout = match req {
        Request::Acquire { timeout_secs, .. } => Duration::from_secs(*timeout_secs as u64 + 5),
        _ => Duration::from_secs(5),
    };
    let reply = call(root, req, timeout)?;
    match (reply.lease, reply.error) {
        (Some(l), None) => Ok(l),
        (_, Some(e)) => Err(Error::Conflict(e)),
        (None, None) => Err(Error::Internal("the DHCP agent sent an empty reply".into())),
    }
}

/// Releases the lease of `key` (DHCPRELEASE) and stops renewing it. Unknown keys are fine.
pub fn release(root: &Path, key: &str) -> Result<()> {
    if UnixStream::connect(agent_socket(root)).is_err() {
        // No agent, so nothing renews this lease: the server's record runs out by itself
        // (and a started agent would only resume it to release it).
        return Ok(());
    }
    order(
        root,
        &Request::Release {
            key: key.to_string(),
        },
    )
}

/// Declines the lease of `key` (DHCPDECLINE: the address is in use on the LAN) and stops
/// its lease process.
pub fn decline(root: &Path, key: &str) -> Result<()> {
    order(
        root,
        &Request::Decline {
            key: key.to_string(),
        },
    )
}

/// Hands a lease over to the interface's new place (see [`Request::Move`]). Returns once
/// the agent has started renewing it there.
pub fn move_lease(root: &Path, req: &Request) -> Result<()> {
    order(root, req)
}

/// An order to the agent that answers with nothing but a possible error.
fn order(root: &Path, req: &Request) -> Result<()> {
    match call(root, req, Duration::from_secs(10))?.error {
        Some(e) => Err(Error::Conflict(e)),
        None => Ok(()),
    }
}

fn call(root: &Path, req: &Request, timeout: Duration) -> Result<Reply> {
    let mut stream = connect_or_start(root)?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| Error::io("set a timeout on the DHCP agent's socket", e))?;
    let mut line = serde_json::to_string(req).expect("requests serialize");
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .map_err(|e| Error::io("talk to the DHCP agent", e))?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(|e| Error::io("read the DHCP agent's answer", e))?;
    if answer.trim().is_empty() {
        return Err(Error::Internal(format!(
            "the DHCP agent hung up without an answer; see {}",
            agent_dir(root).join("agent.log").display()
        )));
    }
    serde_json::from_str(&answer)
        .map_err(|e| Error::Internal(format!("the DHCP agent's answer does not parse: {e}")))
}

fn connect_or_start(root: &Path) -> Result<UnixStream> {
    let sock = agent_socket(root);
    if let Ok(s) = UnixStream::connect(&sock) {
        return Ok(s);
    }
    let failed = start_agent(root)?;
    let started = Instant::now();
    loop {
        match UnixStream::connect(&sock) {
            Ok(s) => return Ok(s),
            // The agent we started failed (an agent that finds another one running leaves
            // with success, and that one answers): no point in waiting. Otherwise up to
            // 20 s: a loaded machine, or a VM in software emulation, may take several
            // seconds to start it.
            Err(e)
                if failed.load(std::sync::atomic::Ordering::SeqCst)
                    || started.elapsed() > Duration::from_secs(20) =>
            {
                return Err(Error::io(
                    format!(
                        "the DHCP agent did not come up (see {})",
                        agent_dir(root).join("agent.log").display()
                    ),
                    e,
                ))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The agent binary: `MVNET_DHCP_AGENT`, else `mvnet-dhcp` beside this executable, else
/// installed.
fn agent_binary() -> Result<PathBuf> {
    crate::process::find_binary("mvnet-dhcp", "MVNET_DHCP_AGENT")
}

/// Starts the agent for `root`, detached (its own session, output to agent.log). Two
/// starts at once are fine: the second agent finds the first one's lock and leaves. The
/// flag returned turns true if the agent ends with a failure.
pub fn start_agent(root: &Path) -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    use std::os::unix::process::CommandExt;
    let dir = agent_dir(root);
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("agent.log"))
        .map_err(|e| Error::io("open the DHCP agent's log", e))?;
    let err = log
        .try_clone()
        .map_err(|e| Error::io("open the DHCP agent's log", e))?;
    let mut cmd = std::process::Command::new(agent_binary()?);
    cmd.arg("--root")
        .arg(root)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(err);
    // SAFETY: only setsid runs between fork and exec; it is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            crate::os::run_anywhere_in_child();
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io("start the DHCP agent mvnet-dhcp", e))?;
    // Reap it in the background if it leaves early (a second agent does).
    let failed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = failed.clone();
    std::thread::spawn(move || {
        if child.wait().is_ok_and(|s| !s.success()) {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    Ok(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_stable_and_per_name() {
        assert_eq!(stable_mac("net1", "web"), stable_mac("net1", "web"));
        assert_ne!(stable_mac("net1", "web"), stable_mac("net1", "db"));
        assert_ne!(stable_mac("net1", "web"), stable_mac("net2", "web"));
        let m = stable_mac("net1", "web");
        assert_eq!(&m.0[..2], &[0x02, 0x6d]);
        assert_eq!(client_id("lan", "web"), b"\0mvnet/lan/web".to_vec());
        assert_eq!(
            unhex(&hex(&client_id("lan", "web"))).unwrap(),
            client_id("lan", "web")
        );
        assert!(unhex("abc").is_none());
        assert_eq!(lease_key("c", "n"), "c/n");
    }

    #[test]
    fn a_decline_is_a_broadcast_dhcp_message_with_the_address_and_server() {
        let mac = MacAddr([2, 0x6d, 1, 2, 3, 4]);
        let ip = std::net::Ipv4Addr::new(10, 103, 19, 120);
        let server = std::net::Ipv4Addr::new(10, 103, 19, 1);
        let id = client_id_of_mac(mac);
        assert_eq!(id, [1, 2, 0x6d, 1, 2, 3, 4]);
        let p = decline_packet(mac, &id, ip, server, 0xdeadbeef);
        // IPv4: from 0.0.0.0 to the broadcast address, UDP, a valid header checksum.
        assert_eq!(p[0], 0x45);
        assert_eq!(p[9], 17);
        assert_eq!(&p[12..16], &[0, 0, 0, 0]);
        assert_eq!(&p[16..20], &[255; 4]);
        assert_eq!(ipv4_checksum(&p[..20]), 0);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]) as usize, p.len());
        // UDP 68 -> 67.
        assert_eq!(&p[20..24], &[0, 68, 0, 67]);
        assert_eq!(u16::from_be_bytes([p[24], p[25]]) as usize, p.len() - 20);
        let d = &p[28..];
        assert_eq!((d[0], d[1], d[2]), (1, 1, 6));
        assert_eq!(&d[4..8], &0xdeadbeefu32.to_be_bytes());
        assert_eq!(&d[12..16], &[0; 4], "ciaddr must be zero in a DECLINE");
        assert_eq!(&d[28..34], &mac.0);
        assert_eq!(&d[236..240], &[99, 130, 83, 99]);
        let opts = &d[240..];
        assert_eq!(&opts[..3], &[53, 1, 4]);
        assert_eq!(&opts[3..9], &[50, 4, 10, 103, 19, 120]);
        assert_eq!(&opts[9..15], &[54, 4, 10, 103, 19, 1]);
        assert_eq!(&opts[15..17], &[61, 7]);
        assert_eq!(&opts[17..24], &id[..]);
        assert_eq!(opts[24], 255);
    }

    #[test]
    fn requests_are_one_json_object_each() {
        let r = Request::Release { key: "c/n".into() };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"op":"release","key":"c/n"}"#
        );
        let back: Request = serde_json::from_str(r#"{"op":"ping"}"#).unwrap();
        assert!(matches!(back, Request::Ping));
    }
}
