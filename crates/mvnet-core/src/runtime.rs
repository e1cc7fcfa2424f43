//! mvnet containers: a named netns + a UTS namespace + an optional process. `run -d` hands
//! the process to a small monitor (a re-exec of mvnet) that records its exit, like conmon.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::engine::{AttachOptions, AttachTarget, Engine};
use crate::model::{network::check_name, Container, ContainerStatus, MacAddr};
use crate::netns;
use crate::{conflict, invalid, Error, Result};

/// Where persistent UTS namespaces are bind-mounted (netns go to /run/netns).
pub const UTS_DIR: &str = "/run/mvnet/uts";

#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    pub name: Option<String>,
    pub network: String,
    pub ipv4: Option<IpAddr>,
    pub ipv6: Option<IpAddr>,
    pub mac: Option<MacAddr>,
    /// Use `ipv4`/`ipv6` even when a device on the LAN answers for them.
    pub force: bool,
    /// The container's interface name (default eth0).
    pub ifname: Option<String>,
    pub hostname: Option<String>,
    pub command: Vec<String>,
    pub auto_remove: bool,
    /// `--label KEY=VALUE`.
    pub labels: Vec<String>,
}

/// Creates the container: store row, namespaces, network attachment. All or nothing.
pub fn create(engine: &mut Engine, req: &RunRequest) -> Result<Container> {
    if req.command.is_empty() {
        return Err(invalid!(
            "mvnet run needs a command after --, e.g. mvnet run -d --network my-net -- sleep 3600"
        ));
    }
    // Validate everything cheap before touching the kernel.
    let net = engine.network(&req.network)?;
    resolve_command(&req.command[0])?;
    if let Some(n) = &req.name {
        check_name(n, "container")?;
    }
    if let Some(i) = &req.ifname {
        crate::model::network::check_ifname(i, "--ifname")?;
    }
    if let Some(h) = &req.hostname {
        if h.is_empty()
            || h.len() > 64
            || !h
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(invalid!(
                "invalid --hostname '{h}': use letters, digits, '-' and '.' (at most 64)"
            ));
        }
    }
    let labels = crate::model::network::parse_labels(&req.labels)?;
    clean_up_abandoned(engine);
    let id = crate::ids::new_id();
    let short = crate::ids::short(&id).to_string();
    let name = req.name.clone().unwrap_or_else(|| short.clone());
    let paths = OwnPaths::of(engine.root(), &id)?;
    let me = std::process::id();
    let c = Container {
        id: id.clone(),
        name: name.clone(),
        hostname: req.hostname.clone().unwrap_or_else(|| short.clone()),
        netns: paths.netns.display().to_string(),
        uts: paths.uts.display().to_string(),
        created: crate::model::time::now_rfc3339(),
        command: req.command.clone(),
        status: ContainerStatus::Created,
        pid: 0,
        pid_start: 0,
        exit_code: None,
        started_at: None,
        finished_at: None,
        auto_remove: req.auto_remove,
        log_path: Some(paths.log.display().to_string()),
        creator_pid: me,
        creator_start: process_start_time(me).unwrap_or(0),
        labels,
    };
    engine.store().create_container(&c)?;
    let built = (|| -> Result<()> {
        netns::create_named(&format!("mvnet-{short}"))?;
        netns::create_uts(Path::new(UTS_DIR), &short, &c.hostname)?;
        let target = AttachTarget {
            container_id: c.id.clone(),
            container_name: c.name.clone(),
            netns: c.netns.clone(),
            owned: true,
        };
        let opts = AttachOptions {
            ipv4: req.ipv4,
            ipv6: req.ipv6,
            mac: req.mac,
            ifname: req.ifname.clone(),
            force: req.force,
            ..Default::default()
        };
        engine.connect(&net, &target, &opts)?;
        Ok(())
    })();
    if let Err(e) = built {
        let _ = destroy(engine, &c);
        return Err(e);
    }
    Ok(c)
}

/// Opens one of the container's namespaces: its bind mount, or, when that is not visible
/// here (it was made from another mount namespace, such as `ip netns exec` or systemd's
/// PrivateMounts), the same namespace through the container's running process.
fn open_container_ns(c: &Container, path: &str, kind: &str) -> Result<File> {
    let what = format!("{kind} namespace");
    match netns::open_nsfs(Path::new(path), &what) {
        Ok(f) => Ok(f),
        Err(first) => {
            if process_alive(c) {
                if let Ok(f) =
                    netns::open_nsfs(Path::new(&format!("/proc/{}/ns/{kind}", c.pid)), &what)
                {
                    return Ok(f);
                }
            }
            Err(crate::invalid!(
                "the {what} of container {} is not visible from here ({first}); run mvnet from the mount namespace that created it, or re-create the container (mvnet rm -f {} and mvnet run)",
                c.name,
                c.name
            ))
        }
    }
}

/// A command that will run inside the container's namespaces.
fn container_command(c: &Container) -> Result<Command> {
    let net = open_container_ns(c, &c.netns, "net")?;
    let uts = open_container_ns(c, &c.uts, "uts")?;
    let mut cmd = Command::new(&c.command[0]);
    cmd.args(&c.command[1..]);
    cmd.env("HOSTNAME", &c.hostname);
    crate::process::close_inherited_fds(&mut cmd);
    netns::spawn_inside(&mut cmd, net, Some(uts));
    Ok(cmd)
}

/// Fails early, before anything is created, when the command cannot be found. Containers run
/// the host's binaries, so the host's PATH is the one that counts.
fn resolve_command(cmd: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let found = if cmd.contains('/') {
        runnable(Path::new(cmd))
    } else {
        std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).any(|d| runnable(&d.join(cmd))))
            .unwrap_or(false)
    };
    if found {
        Ok(())
    } else {
        Err(invalid!("command not found: {cmd} (the container runs host binaries; give a full path or one on PATH)"))
    }
}

fn spawn_error(c: &Container, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        invalid!("command not found: {} (the container runs host binaries; give a full path or one on PATH)", c.command[0])
    } else {
        Error::io(format!("cannot start {}", c.command[0]), e)
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

fn mark_running(engine: &mut Engine, c: &mut Container, pid: u32) -> Result<()> {
    c.status = ContainerStatus::Running;
    c.pid = pid;
    c.pid_start = process_start_time(pid).unwrap_or(0);
    c.started_at = Some(crate::model::time::now_rfc3339());
    engine.store().update_container(c)
}

fn mark_exited(engine: &mut Engine, c: &mut Container, code: i32) -> Result<()> {
    c.status = ContainerStatus::Exited;
    c.exit_code = Some(code);
    c.finished_at = Some(crate::model::time::now_rfc3339());
    engine.store().update_container(c)
}

/// Runs the command in the foreground with the terminal's stdio; returns its exit code.
pub fn run_foreground(engine: &mut Engine, mut c: Container) -> Result<i32> {
    let spawned =
        container_command(&c).and_then(|mut cmd| cmd.spawn().map_err(|e| spawn_error(&c, e)));
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) => {
            // The command never ran: leave nothing behind, --rm or not.
            let _ = destroy(engine, &c);
            return Err(err);
        }
    };
    mark_running(engine, &mut c, child.id())?;
    // Ctrl-C goes to the command; we stay to record its exit and clean up.
    // SAFETY: sets a signal disposition before any thread exists; no handler code is involved.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
    let status = child
        .wait()
        .map_err(|e| Error::io("wait for container command", e))?;
    let code = exit_code(status);
    if c.auto_remove {
        destroy(engine, &c)?;
    } else {
        mark_exited(engine, &mut c, code)?;
    }
    Ok(code)
}

/// Starts the command under a detached monitor process and returns once it runs.
pub fn run_detached(engine: &mut Engine, c: &Container) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| Error::io("find the mvnet executable", e))?;
    let mut monitor = Command::new(exe);
    monitor
        .arg("--root")
        .arg(engine.root())
        .arg("__monitor")
        .arg(&c.id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe. A new session keeps the monitor alive after the
    // terminal that ran `mvnet run -d` goes away.
    unsafe {
        monitor.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    crate::process::close_inherited_fds(&mut monitor);
    let mut child = monitor
        .spawn()
        .map_err(|e| Error::io("start the container monitor", e))?;
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line);
    if line.starts_with("started") {
        Ok(())
    } else {
        let _ = child.wait();
        let msg = line
            .trim()
            .strip_prefix("error: ")
            .unwrap_or(line.trim())
            .to_string();
        let _ = destroy(engine, c);
        Err(if msg.is_empty() {
            Error::Internal("the container monitor exited before starting the command".into())
        } else {
            invalid!("{msg}")
        })
    }
}

/// The monitor's body (`mvnet __monitor ID`): start the command with output to the log,
/// report "started" on stdout, wait, record the exit, remove if `--rm`.
pub fn monitor(engine: &mut Engine, id: &str) -> Result<()> {
    let mut c = engine.store().container(id)?;
    let log = OwnPaths::of(engine.root(), &c.id)?.log;
    let report = |msg: &str| {
        // stdout is the pipe to `run -d`; after it closes, nothing else is printed.
        println!("{msg}");
    };
    let started = (|| -> Result<std::process::Child> {
        let dir = log.parent().unwrap_or(Path::new("/"));
        crate::store::root::private_dir(dir.parent().unwrap_or(Path::new("/")))?;
        crate::store::root::private_dir(dir)?;
        let out = crate::store::root::create_private_file(&log)?;
        let err = out.try_clone().map_err(|e| Error::io("dup log file", e))?;
        let mut cmd = container_command(&c)?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        cmd.spawn().map_err(|e| spawn_error(&c, e))
    })();
    let mut child = match started {
        Ok(ch) => ch,
        Err(e) => {
            report(&format!("error: {e}"));
            return Err(e);
        }
    };
    mark_running(engine, &mut c, child.id())?;
    report(&format!("started {}", child.id()));
    // Close our end of the pipe so `run -d` returns now.
    // SAFETY: fd 1 is our end of the pipe to `mvnet run -d`; nothing writes to stdout after this.
    unsafe {
        libc::close(1);
    }
    let status = child
        .wait()
        .map_err(|e| Error::io("wait for container command", e))?;
    // Re-read: the container may have been removed meanwhile (rm -f).
    let Ok(mut c) = engine.store().container(id) else {
        return Ok(());
    };
    if c.auto_remove {
        destroy(engine, &c)
    } else {
        mark_exited(engine, &mut c, exit_code(status))
    }
}

/// Where the container's output is kept (only containers run with -d have one).
pub fn log_path(engine: &Engine, c: &Container) -> Result<PathBuf> {
    Ok(OwnPaths::of(engine.root(), &c.id)?.log)
}

/// Replaces this process with `command` inside the container's namespaces.
pub fn exec(
    engine: &mut Engine,
    name: &str,
    command: &[String],
) -> Result<std::convert::Infallible> {
    if command.is_empty() {
        return Err(invalid!(
            "mvnet exec needs a command after --, e.g. mvnet exec {name} -- ip addr"
        ));
    }
    let found = engine.store().container(name)?;
    let c = refresh(engine, found)?;
    if c.status != ContainerStatus::Running {
        return Err(conflict!(
            "container {} is not running (status: {}); start a long-running command with mvnet run -d",
            c.name,
            c.status
        ));
    }
    let mut cmd = container_command(&Container {
        command: command.to_vec(),
        ..c.clone()
    })?;
    let err = cmd.exec();
    Err(spawn_error(
        &Container {
            command: command.to_vec(),
            ..c
        },
        err,
    ))
}

/// Reads the start time of `pid` (field 22 of /proc/PID/stat).
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// Whether `pid` is still the process that started at `start` (a recorded start time of 0
/// matches nothing: a pid alone may have been recycled by any other process).
fn same_process(pid: u32, start: u64) -> bool {
    pid != 0 && start != 0 && process_start_time(pid) == Some(start)
}

/// Whether the container's recorded process is still the one we started.
pub fn process_alive(c: &Container) -> bool {
    same_process(c.pid, c.pid_start)
}

/// Fixes up a status the store believes but the machine contradicts (monitor killed, reboot).
/// Writing the fix is best effort: a read-only command (ps, inspect) must work on a full
/// disk, and shows the corrected status either way.
pub fn refresh(engine: &mut Engine, mut c: Container) -> Result<Container> {
    if c.status == ContainerStatus::Running && !process_alive(&c) {
        c.status = ContainerStatus::Exited;
        c.finished_at
            .get_or_insert_with(crate::model::time::now_rfc3339);
        if let Err(e) = engine.store().update_container(&c) {
            tracing::warn!(container = %c.name, error = %e, "cannot record that the container exited");
        }
    }
    Ok(c)
}

/// The paths mvnet itself gives a container, derived from its id (never taken from the
/// stored row, which is only data: a crafted row must not make `rm` delete other files).
struct OwnPaths {
    netns: PathBuf,
    uts: PathBuf,
    log: PathBuf,
}

impl OwnPaths {
    fn of(root: &Path, id: &str) -> Result<OwnPaths> {
        if id.len() < 12 || !crate::ids::is_hex_prefix(id) {
            return Err(crate::invalid!(
                "container id {} is not an mvnet id; remove its row with mvnet rm -f",
                crate::quote(id)
            ));
        }
        let short = crate::ids::short(id);
        Ok(OwnPaths {
            netns: netns::named_path(&format!("mvnet-{short}")),
            uts: Path::new(UTS_DIR).join(short),
            log: root.join("containers").join(id).join("log"),
        })
    }
}

/// The identity (device, inode) of the container's network namespace: from its file, or,
/// when that is not visible here, through its running process.
fn netns_identity(c: &Container) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let paths = OwnPaths::of(Path::new("/"), &c.id).ok()?;
    let md = match netns::open_nsfs(&paths.netns, "network namespace") {
        Ok(f) => f.metadata().ok(),
        Err(_) if process_alive(c) => std::fs::metadata(format!("/proc/{}/ns/net", c.pid)).ok(),
        Err(_) => None,
    }?;
    Some((md.dev(), md.ino()))
}

/// The processes in any of the namespaces `wanted`, in one pass over /proc: the
/// containers' commands, their children (also those that left the process group), `mvnet
/// exec` sessions and the announcers.
fn processes_in(wanted: &[(u64, u64)]) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let identity = |path: String| std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    let own_exe = identity("/proc/self/exe".into());
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            identity(format!("/proc/{pid}/ns/net")).is_some_and(|ns| wanted.contains(&ns))
        })
        // Another mvnet command that is only visiting the namespace for a moment (a
        // concurrent `rm -f`, or the monitor of a `--rm` container removing it): not the
        // container's. Killing it killed that command mid-way, silently (CI saw `rm -f`
        // die so). Its announcers are the container's, and are named so.
        .filter(|pid| {
            own_exe.is_none()
                || identity(format!("/proc/{pid}/exe")) != own_exe
                || std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim_end() == crate::announce::ANNOUNCER_NAME)
        })
        .collect()
}

/// SIGKILLs every process of the containers and waits (briefly) until they are gone, so
/// nothing keeps their namespaces, links or addresses alive. One scan of /proc serves all
/// of them (`rm -f` of many containers).
pub fn kill_processes(containers: &[Container]) {
    let wanted: Vec<(u64, u64)> = containers.iter().filter_map(netns_identity).collect();
    if wanted.is_empty() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut killed: Vec<i32> = Vec::new();
    loop {
        let pids = processes_in(&wanted);
        // A killed process leaves its namespaces early in its exit, before it is done:
        // wait until the ones we killed have really ended (gone or a zombie), too.
        killed.retain(|&pid| still_running(pid));
        if (pids.is_empty() && killed.is_empty()) || Instant::now() >= deadline {
            return;
        }
        for pid in pids {
            // SAFETY: kill(2) has no memory effects; the pid was just seen in one of the
            // containers' namespaces.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            if !killed.contains(&pid) {
                killed.push(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether `pid` exists and has not finished exiting (a zombie has).
fn still_running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// `kill_processes` for one container.
pub fn kill_process(c: &Container) {
    kill_processes(std::slice::from_ref(c));
}

/// Containers left `Created` by an `mvnet run` that was killed before it finished: nobody
/// will ever start or remove them, and they hold addresses and links. Best effort.
fn clean_up_abandoned(engine: &mut Engine) {
    let Ok(all) = engine.store().containers() else {
        return;
    };
    for c in all {
        let orphan = c.status == ContainerStatus::Created
            && c.creator_pid != 0
            && !same_process(c.creator_pid, c.creator_start);
        if orphan {
            tracing::warn!(container = %c.name, "removing a container whose mvnet run was killed");
            let _ = destroy(engine, &c);
        }
    }
}

/// `mvnet stop`: SIGTERM, then SIGKILL after `timeout`.
pub fn stop(engine: &mut Engine, name: &str, timeout: Duration) -> Result<Container> {
    let found = engine.store().container(name)?;
    let c = refresh(engine, found)?;
    if c.status == ContainerStatus::Running {
        // SAFETY: kill(2) only sends a signal; no memory is involved.
        unsafe {
            libc::kill(c.pid as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        while process_alive(&c) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        kill_process(&c);
        let deadline = Instant::now() + Duration::from_secs(5);
        while process_alive(&c) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // The monitor records the exit code; wait briefly for it, else record it ourselves.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let now = match engine.store().container(&c.id) {
            Ok(now) => now,
            // A --rm container is removed by its monitor as soon as the command exits.
            Err(Error::NotFound(_)) => return Ok(c),
            Err(e) => return Err(e),
        };
        if now.status != ContainerStatus::Running || Instant::now() >= deadline {
            return refresh(engine, now);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `mvnet rm` of several containers: one pass kills the processes of all of them, then each
/// is taken apart. Returns each name's outcome, in order.
pub fn remove_many(engine: &mut Engine, names: &[String], force: bool) -> Vec<Result<Container>> {
    let mut found: Vec<Result<Container>> = Vec::new();
    for name in names {
        let one = match engine.store().container(name) {
            Ok(c) => refresh(engine, c).and_then(|c| {
                if c.status == ContainerStatus::Running && !force {
                    Err(conflict!(
                        "cannot remove running container {}: stop it first (mvnet stop {}) or use mvnet rm -f",
                        c.name,
                        c.name
                    ))
                } else {
                    Ok(c)
                }
            }),
            // Unreadable rows and the like: the single-container path knows what to do.
            Err(_) => remove(engine, name, force),
        };
        found.push(one);
    }
    let doomed: Vec<Container> = found
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .filter(|c| !c.id.is_empty())
        .cloned()
        .collect();
    let dhcp = dhcp_in_use(engine);
    for c in &doomed {
        release_leases(engine, c, dhcp);
    }
    kill_processes(&doomed);
    found
        .into_iter()
        .map(|r| {
            let c = r?;
            if !c.id.is_empty() {
                destroy_killed(engine, &c)?;
            }
            Ok(c)
        })
        .collect()
}

/// `mvnet rm`: refuses a running container unless `force`.
pub fn remove(engine: &mut Engine, name: &str, force: bool) -> Result<Container> {
    let found = match engine.store().container(name) {
        Ok(c) => c,
        Err(e) => {
            // A row that cannot be read: remove it as it is, so it never blocks the user.
            if force && engine.store().remove_unreadable_container(name)? {
                crate::warn_user(&format!(
                    "removed container {}, whose stored record was corrupt",
                    crate::quote(name)
                ));
                return Ok(Container {
                    id: String::new(),
                    name: name.to_string(),
                    hostname: String::new(),
                    netns: String::new(),
                    uts: String::new(),
                    created: String::new(),
                    command: Vec::new(),
                    status: ContainerStatus::Exited,
                    pid: 0,
                    pid_start: 0,
                    exit_code: None,
                    started_at: None,
                    finished_at: None,
                    auto_remove: false,
                    log_path: None,
                    creator_pid: 0,
                    creator_start: 0,
                    labels: Default::default(),
                });
            }
            return Err(e);
        }
    };
    let c = refresh(engine, found)?;
    if c.status == ContainerStatus::Running && !force {
        return Err(conflict!(
            "cannot remove running container {}: stop it first (mvnet stop {}) or use mvnet rm -f",
            c.name,
            c.name
        ));
    }
    destroy(engine, &c)?;
    Ok(c)
}

/// Tears down everything a container has. Idempotent; tolerates namespaces removed behind
/// our back. Deleting the netns deletes its macvlan links with it, in the kernel's own
/// batched cleanup, which is far cheaper than one RTM_DELLINK each.
fn destroy(engine: &mut Engine, c: &Container) -> Result<()> {
    let dhcp = dhcp_in_use(engine);
    release_leases(engine, c, dhcp);
    kill_process(c);
    destroy_killed(engine, c)
}

/// Releases the container's DHCP leases (DHCPRELEASE from its address), before its
/// processes are killed: the lease agent's client for it lives in its namespace too.
/// Without a DHCP network (`dhcp_in_use` false) this costs nothing.
fn release_leases(engine: &mut Engine, c: &Container, dhcp_in_use: bool) {
    if !dhcp_in_use {
        return;
    }
    for ep in engine.endpoints_of_container(&c.id).unwrap_or_default() {
        engine.release_lease(&ep);
    }
}

/// Whether any network leases from a DHCP server: one look at the networks per `rm`,
/// instead of one endpoint query per container removed.
fn dhcp_in_use(engine: &mut Engine) -> bool {
    engine
        .networks()
        .map(|nets| nets.iter().any(|n| n.dhcp))
        .unwrap_or(true)
}

/// `destroy` once the container's processes are gone.
fn destroy_killed(engine: &mut Engine, c: &Container) -> Result<()> {
    let paths = OwnPaths::of(engine.root(), &c.id)?;
    for ep in engine.store().endpoints_of_container(&c.id)? {
        // Before the namespace goes: when `rm` returns, the addresses must be off the LAN,
        // even while the kernel tears the namespace down in the background. Taking the
        // addresses away is enough for that and costs no RCU wait (deleting the link would,
        // about 20 ms per container); the link goes with the namespace. The announcer
        // lived in the namespace and was killed with the container's processes.
        let path = paths.netns.display().to_string();
        if let Err(e) = engine.take_addresses_down(&path, &ep.ifname) {
            tracing::warn!(container = %c.name, error = %e, "cannot take the container's addresses down");
        }
        engine.release_endpoint(&ep)?;
    }
    netns::remove_persistent(&paths.netns)?;
    netns::remove_persistent(&paths.uts)?;
    if let Some(dir) = paths.log.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    engine.store().remove_container(&c.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_start_time_of_zero_matches_no_process() {
        let me = std::process::id();
        let start = process_start_time(me).unwrap();
        assert!(same_process(me, start));
        assert!(
            !same_process(me, 0),
            "pid_start 0 must not match any live pid"
        );
        assert!(!same_process(0, start));
        assert!(!same_process(me, start + 1));
    }

    #[test]
    fn own_paths_come_from_the_id_only() {
        let id = "0123456789abcdef0123456789abcdef";
        let p = OwnPaths::of(Path::new("/var/lib/mvnet"), id).unwrap();
        assert_eq!(p.netns, Path::new("/run/netns/mvnet-0123456789ab"));
        assert_eq!(p.uts, Path::new("/run/mvnet/uts/0123456789ab"));
        assert_eq!(
            p.log,
            Path::new("/var/lib/mvnet/containers").join(id).join("log")
        );
        assert!(OwnPaths::of(Path::new("/"), "../../etc/passwd").is_err());
        assert!(OwnPaths::of(Path::new("/"), "0123").is_err());
    }
}
