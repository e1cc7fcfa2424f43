//! `mvnet-dhcp`: the lease agent of one mvnet state root. Front ends (the CLI, the CNI
//! plugin, the Docker plugin) start it on demand and ask it, over `<root>/dhcp/agent.sock`
//! (one JSON object per line, see `mvnet_core::dhcp`), to lease, and later release, the
//! address of a container's interface. It keeps every lease renewed, records each renewal
//! on the endpoint in mvnet's store, and on start resumes every recorded lease without a
//! new DORA. `systemctl enable --now mvnet-dhcp` (contrib/systemd) keeps it up across
//! reboots; without the unit, the first DHCP attach starts it.
//!
//! - `lease.rs`: one lease's life (a child process inside the container's namespace,
//!   mozim);
//! - this file: the socket, the lock that keeps one agent per root, the lease processes,
//!   resuming.

mod lease;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use mvnet_core::dhcp::{Reply, Request};
use mvnet_core::engine::Engine;
use mvnet_core::model::Lease;

/// mvnet's DHCP lease agent.
#[derive(Parser, Debug)]
#[command(name = "mvnet-dhcp", version)]
struct Args {
    /// mvnet's state directory (the one the front ends use).
    #[arg(long, env = "MVNET_ROOT", default_value = mvnet_core::engine::DEFAULT_ROOT)]
    root: PathBuf,
    /// Internal: run one lease (the agent starts this; its spec comes on stdin).
    #[arg(long, hide = true)]
    lease: bool,
}

/// A running lease process: its stdin (for `release`) and what it says.
struct Running {
    child: Child,
    stdin: ChildStdin,
    /// Shared so a caller can wait on it without holding the map's lock.
    said: Arc<Mutex<mpsc::Receiver<serde_json::Value>>>,
}

/// The running leases, by key (`container/network`).
type Leases = Arc<Mutex<BTreeMap<String, Running>>>;

fn main() {
    let args = Args::parse();
    if args.lease {
        std::process::exit(lease::run_process());
    }
    if let Err(e) = run(&args.root) {
        eprintln!("mvnet-dhcp: error: {e}");
        std::process::exit(1);
    }
}

fn run(root: &Path) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("mvnet-dhcp must run as root (it enters containers' namespaces)".into());
    }
    // The command that started this agent made the root and its store. A root removed
    // since (a lab torn down while its containers' leases were released) stays removed.
    match Engine::open_existing(root) {
        Ok(_) => {}
        Err(mvnet_core::Error::NotFound(_)) => {
            eprintln!("mvnet-dhcp: {} is gone; leaving", root.display());
            return Ok(());
        }
        Err(e) => return Err(e.to_string()),
    }
    let dir = mvnet_core::dhcp::agent_dir(root);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let held_lock = match lock(&dir.join("agent.lock"))? {
        Some(l) => l,
        None => {
            eprintln!(
                "mvnet-dhcp: another agent serves {}; leaving",
                root.display()
            );
            return Ok(());
        }
    };
    let sock = mvnet_core::dhcp::agent_socket(root);
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock)
        .map_err(|e| format!("cannot listen on {}: {e}", sock.display()))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600));
    let leases: Leases = Arc::new(Mutex::new(BTreeMap::new()));
    resume(root, &leases);
    leave_when_replaced(dir.join("agent.lock"), &held_lock, root);
    eprintln!("mvnet-dhcp: listening on {}", sock.display());
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let (root, leases) = (root.to_path_buf(), leases.clone());
        std::thread::spawn(move || serve(conn, &root, &leases));
    }
    Ok(())
}

/// How often the agent checks that its state root is still there.
const ROOT_CHECK: Duration = Duration::from_secs(2);

/// Ends the agent once its lock file is no longer the one it holds: the state root was
/// removed (a lab torn down, the directory deleted), or removed and made again, where a
/// new agent may already serve it. Nobody could reach this agent any more, and without
/// it the lease processes end too (their stdin closes). Without this, such an agent
/// stayed forever.
fn leave_when_replaced(lock_path: PathBuf, held: &std::fs::File, root: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(ours) = held.metadata().map(|m| (m.dev(), m.ino())) else {
        return;
    };
    let root = root.to_path_buf();
    std::thread::spawn(move || loop {
        std::thread::sleep(ROOT_CHECK);
        let now = std::fs::metadata(&lock_path).map(|m| (m.dev(), m.ino()));
        if now.ok() != Some(ours) {
            eprintln!("mvnet-dhcp: {} is gone; leaving", root.display());
            std::process::exit(0);
        }
    });
}

/// The agent's lock: held for its whole life, so a second agent (two front ends starting
/// one at once) leaves. `None` when another process holds it.
fn lock(path: &Path) -> Result<Option<std::fs::File>, String> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Ok(None);
    }
    // Who holds it, for people and tests.
    let mut f = f;
    let _ = f.set_len(0);
    let _ = writeln!(f, "{}", std::process::id());
    Ok(Some(f))
}

/// Starts a thread for every lease recorded in the store whose container still exists.
fn resume(root: &Path, leases: &Leases) {
    let Ok(mut engine) = Engine::open_existing(root) else {
        return;
    };
    for net in engine
        .networks()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.dhcp)
    {
        for ep in engine.endpoints_of_network(&net.id).unwrap_or_default() {
            let Some(recorded) = ep.lease.clone() else {
                continue;
            };
            // A lease the runtime moved (Docker) lives where its record says.
            let moved = recorded.netns.is_some();
            let netns = recorded.netns.clone().unwrap_or_else(|| ep.netns.clone());
            if !Path::new(&netns).exists() {
                continue;
            }
            let spec = lease::Spec {
                key: mvnet_core::dhcp::lease_key(&ep.container_id, &net.id),
                root: root.to_path_buf(),
                netns,
                ifname: recorded.ifname.clone().unwrap_or_else(|| ep.ifname.clone()),
                moved,
                proxy: None,
                client_id: mvnet_core::dhcp::unhex(&recorded.client_id).unwrap_or_default(),
                hostname: recorded.hostname.clone(),
                timeout_secs: net.options.dhcp_wait().as_secs() as u32,
                resume: Some(recorded),
            };
            if let Err(e) = start(spec, leases) {
                eprintln!(
                    "mvnet-dhcp: cannot resume the lease of {}: {e}",
                    ep.container_name
                );
            }
        }
    }
}

/// Starts a lease process for `spec`; returns the receiver of what it says.
fn start(spec: lease::Spec, leases: &Leases) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--lease")
        .arg("--root")
        .arg(&spec.root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    mvnet_core::process::close_inherited_fds(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start a lease process: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let line = serde_json::to_string(&spec).expect("specs serialize");
    writeln!(stdin, "{line}").map_err(|e| format!("cannot talk to the lease process: {e}"))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str(&line) {
                if tx.send(v).is_err() {
                    break;
                }
            }
        }
    });
    let running = Running {
        child,
        stdin,
        said: Arc::new(Mutex::new(rx)),
    };
    if let Some(mut old) = leases.lock().unwrap().insert(spec.key.clone(), running) {
        stop(&mut old);
    }
    Ok(())
}

/// Ends a lease process without a release (it is being replaced, or its start failed).
fn stop(r: &mut Running) {
    let _ = r.child.kill();
    let _ = r.child.wait();
}

/// Reaps lease processes that ended by themselves (a failed acquisition).
fn reap(leases: &Leases) {
    leases
        .lock()
        .unwrap()
        .retain(|_, r| !matches!(r.child.try_wait(), Ok(Some(_))));
}

/// What the lease process of `key` says first: its lease, or why there is none.
fn first_answer(key: &str, timeout_secs: u32, leases: &Leases) -> Reply {
    let said = leases.lock().unwrap().get(key).map(|r| r.said.clone());
    let said = said.map(|rx| {
        rx.lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(timeout_secs as u64 + 3))
    });
    let failed = |msg: String| {
        if let Some(mut r) = leases.lock().unwrap().remove(key) {
            stop(&mut r);
        }
        Reply {
            lease: None,
            error: Some(msg),
        }
    };
    match said {
        Some(Ok(v)) => match serde_json::from_value::<Lease>(v["lease"].clone()) {
            Ok(l) => Reply {
                lease: Some(l),
                error: None,
            },
            Err(_) => failed(
                v["error"]
                    .as_str()
                    .unwrap_or("the lease process failed")
                    .to_string(),
            ),
        },
        _ => failed(format!(
            "no DHCP lease in {timeout_secs} s; check that the LAN has a DHCP server"
        )),
    }
}

fn serve(conn: UnixStream, root: &Path, leases: &Leases) {
    let mut line = String::new();
    if BufReader::new(&conn).read_line(&mut line).is_err() {
        return;
    }
    let reply = match serde_json::from_str::<Request>(&line) {
        Err(e) => Reply {
            lease: None,
            error: Some(format!("cannot read the request: {e}")),
        },
        Ok(Request::Ping) => Reply {
            lease: None,
            error: None,
        },
        Ok(Request::Acquire {
            key,
            netns,
            ifname,
            client_id,
            hostname,
            timeout_secs,
            proxy,
        }) => {
            reap(leases);
            let spec = lease::Spec {
                key: key.clone(),
                root: root.to_path_buf(),
                netns,
                ifname,
                client_id: mvnet_core::dhcp::unhex(&client_id).unwrap_or_default(),
                hostname,
                timeout_secs,
                resume: None,
                moved: false,
                proxy,
            };
            match start(spec, leases) {
                Err(e) => Reply {
                    lease: None,
                    error: Some(e),
                },
                Ok(()) => first_answer(&key, timeout_secs, leases),
            }
        }
        Ok(Request::Move {
            key,
            new_key,
            netns,
            ifname,
            hostname,
            lease,
            timeout_secs,
        }) => {
            if let Some(mut old) = leases.lock().unwrap().remove(&key) {
                stop(&mut old);
            }
            let spec = lease::Spec {
                key: new_key.clone(),
                root: root.to_path_buf(),
                netns,
                ifname,
                client_id: mvnet_core::dhcp::unhex(&lease.client_id).unwrap_or_default(),
                hostname,
                timeout_secs,
                // Recorded as moved only when the lease now lives away from the
                // endpoint's own interface (Docker); an ipvlan lease moves *to* it.
                moved: lease.netns.is_some(),
                resume: Some(lease),
                proxy: None,
            };
            match start(spec, leases) {
                Err(e) => Reply {
                    lease: None,
                    error: Some(e),
                },
                Ok(()) => {
                    lease::log(&new_key, "moved with its interface");
                    Reply {
                        lease: None,
                        error: None,
                    }
                }
            }
        }
        Ok(Request::Release { key }) => {
            finish(&key, "release", leases);
            Reply {
                lease: None,
                error: None,
            }
        }
        Ok(Request::Decline { key }) => {
            finish(&key, "decline", leases);
            Reply {
                lease: None,
                error: None,
            }
        }
    };
    let mut out = serde_json::to_string(&reply).expect("replies serialize");
    out.push('\n');
    let _ = (&conn).write_all(out.as_bytes());
}

/// Ends the lease process of `key` with `order` (`release` or `decline`): it sends the
/// message from the container's namespace, says so, and exits; a stuck one is killed
/// after 5 s.
fn finish(key: &str, order: &str, leases: &Leases) {
    let running = leases.lock().unwrap().remove(key);
    if let Some(mut r) = running {
        match writeln!(r.stdin, "{order}") {
            Ok(()) => {
                let answer = r.said.lock().unwrap().recv_timeout(Duration::from_secs(5));
                if answer.is_err() {
                    lease::log(
                        key,
                        &format!("the lease process did not confirm the {order}"),
                    );
                }
            }
            Err(e) => lease::log(key, &format!("cannot order the {order}: {e}")),
        }
        stop(&mut r);
    }
}
