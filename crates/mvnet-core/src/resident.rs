//! Resident agents: a short-lived front-end process (a CNI plugin run, `mvnet network
//! connect`) forwards its command to a warm process of the same binary, one per state root
//! and front end, which does the same work on a thread that has joined the caller's network
//! namespace, and answers with what the command would have printed and its exit status.
//!
//! Why: each fresh process paid for opening the store (SQLite and its schema), connecting to
//! etcd (a shared pool: gRPC start-up is a millisecond of CPU) and forking a child for the
//! later ARP announcements. An agent keeps its store and etcd connections per worker
//! thread, and sends announcements from one thread (`announce::announce_from_a_thread`).
//!
//! When is an agent used: when the front end says the command may be forwarded, the agent
//! runs the binary that would otherwise do the work (the caller's own; for the CNI plugin's
//! small forwarder, the full plugin beside it; a replaced binary makes the old agent
//! leave), in the
//! same mount namespace, with the same `MVNET_*` environment, and the caller is root.
//! Anything else, or no agent, and the front end does the work itself, then starts an agent
//! for the next command. An agent that ends after taking a request (`kill -9`) makes that
//! command fail (the caller says so); one that ends before is just not used.
//!
//! `MVNET_NO_AGENT=1` turns agents off. An agent leaves after a minute without requests, at
//! once when its state root goes away, and never pins the namespace it was started from.
//! Its pid is in its lock file (`<root>/<name>.lock`).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::Engine;
use crate::store::root::{flock, try_lock_private as try_lock};
use crate::store::Store;

/// Variables that start with this are the agents' own: not compared between caller and
/// agent (tests set `MVNET_AGENT_REQUIRED`).
const OWN_PREFIX: &str = "MVNET_AGENT";
/// An agent leaves after this long without a request.
const IDLE: Duration = Duration::from_secs(60);
/// Worker threads at most (each with its own store connection).
const MAX_WORKERS: usize = 32;
/// A request waits this long for a busy worker before another one is started. Warm workers
/// are what make the agent fast (a new one opens its store first), and the kernel
/// serializes link changes anyway; but a slow request (a probe, a DHCP lease) must not
/// hold up the others for long.
const SPAWN_AFTER: Duration = Duration::from_millis(3);
/// A socket per CPU for at most this many CPUs (the first ones the agent may run on);
/// callers on other CPUs use the shared socket.
const MAX_CPU_DOORS: usize = 16;

/// One front end's agent: its files in the state root and how it serves a command.
pub struct Service {
    /// `cni` or `cli`: the socket is `<root>/<name>-agent.sock`, the lock
    /// `<root>/<name>-agent.lock`.
    pub name: &'static str,
    /// Runs one command, as the front end would in its own process.
    pub handle: fn(&Request) -> Reply,
    /// What a command acts on (a container's interface, say), or None. The agent runs
    /// commands with the same key one at a time, in turn. Why: a caller killed mid-command
    /// (a runtime's timeout) leaves its command running here until it rolls back, where in
    /// the caller's own process it would have died with it. The runtime's next command for
    /// the same container (its DEL, the ADD it retries) must not run beside it: a DEL
    /// would return while that ADD still makes its link, and the ADD's rollback could take
    /// the link of the retried one.
    pub key: fn(&Request) -> Option<String>,
}

impl Service {
    /// The socket the agent of `root` listens on.
    pub fn socket(&self, root: &Path) -> PathBuf {
        root.join(format!("{}-agent.sock", self.name))
    }
    fn lock(&self, root: &Path) -> PathBuf {
        root.join(format!("{}-agent.lock", self.name))
    }
    /// Set in the re-executed binary's environment: serve this state root.
    fn marker(&self) -> String {
        format!("MVNET_AGENT_{}_ROOT", self.name.to_uppercase())
    }
}

use mvnet_forward::{mnt_identity, receive_request, write_chunk};
pub use mvnet_forward::{Forwarded, Reply, Request, OFF_ENV};

/// Hands a command to `root`'s agent of `service`, if one can serve it (an agent of this
/// very binary).
pub fn forward(service: &Service, root: &Path, args: Vec<String>, stdin: &[u8]) -> Forwarded {
    mvnet_forward::forward(&service.socket(root), exe_identity(), args, stdin)
}

/// Starts the agent of `root` unless one holds its lock. Best effort: without an agent,
/// every command is served in its own process, as before.
pub fn start(service: &Service, root: &Path) {
    let Some(probe) = try_lock(&service.lock(root)) else {
        return;
    };
    drop(probe);
    // The re-executed binary runs `run_if_agent`.
    crate::process::start_detached_self(&service.marker(), root);
}

// ---------------------------------------------------------------- identities

/// The running binary (`mvnet_forward::file_identity` of /proc/self/exe).
fn exe_identity() -> Option<String> {
    mvnet_forward::file_identity(Path::new("/proc/self/exe"))
}

/// The MVNET_* environment that must be the same on both sides (the agent's own knobs
/// excepted).
fn compared_env(env: impl Iterator<Item = (String, String)>) -> BTreeMap<String, String> {
    env.filter(|(k, _)| k.starts_with("MVNET_") && !k.starts_with(OWN_PREFIX))
        .collect()
}

// ---------------------------------------------------------------- requests in flight

/// What a GC needs from the agents: a killed plugin's request may still be in an agent
/// (queued, or half done) after the runtime has reaped the plugin and started its GC. Each
/// request holds a shared lock on `<root>/agents-busy.lock` while it runs; a GC holds it
/// exclusively, so it starts once those requests have ended (committed, or rolled back
/// because their caller is gone), and a request taken after it sees its caller gone and
/// does nothing. A second lock, the gate, lets a waiting GC stop new requests from
/// starting, so a stream of ADDs cannot starve it.
struct InFlightLocks {
    gate: std::fs::File,
    busy: std::fs::File,
}

impl InFlightLocks {
    fn open(root: &Path) -> Option<InFlightLocks> {
        Some(InFlightLocks {
            gate: crate::store::root::open_private(&root.join("agents-gate.lock")).ok()?,
            busy: crate::store::root::open_private(&root.join("agents-busy.lock")).ok()?,
        })
    }

    /// A request's share: returns once no GC holds or waits for the locks.
    fn enter_request(&self) -> bool {
        let ok = flock(&self.gate, libc::LOCK_SH) && flock(&self.busy, libc::LOCK_SH);
        flock(&self.gate, libc::LOCK_UN);
        ok
    }

    fn leave_request(&self) {
        flock(&self.busy, libc::LOCK_UN);
    }
}

/// Held by a GC while it runs: no agent request of its root runs meanwhile.
pub struct AgentsQuiet {
    _busy: Option<std::fs::File>,
}

/// Waits until every agent request of `root` has ended, and keeps new ones from starting
/// until the result is dropped. A root without a directory has no agent: nothing to wait
/// for. In an agent itself (whose own request holds a share) it does not wait.
pub fn quiet_agents(root: &Path) -> crate::Result<AgentsQuiet> {
    if RESIDENT.load(Ordering::Relaxed) || !root.is_dir() {
        return Ok(AgentsQuiet { _busy: None });
    }
    let Some(locks) = InFlightLocks::open(root) else {
        return Err(crate::Error::Unavailable(format!(
            "cannot open the agents' lock files in {}: check that it is writable by root",
            root.display()
        )));
    };
    if !(flock(&locks.gate, libc::LOCK_EX) && flock(&locks.busy, libc::LOCK_EX)) {
        return Err(crate::Error::Unavailable(format!(
            "cannot lock the agents' lock files in {}: {}; run the command again",
            root.display(),
            std::io::Error::last_os_error()
        )));
    }
    // The gate only had to hold new requests back until `busy` was ours.
    drop(locks.gate);
    Ok(AgentsQuiet {
        _busy: Some(locks.busy),
    })
}

// ---------------------------------------------------------------- the engine cache

/// Set in the agent: worker threads keep their store between requests.
static RESIDENT: AtomicBool = AtomicBool::new(false);

/// The store a worker opened: its state root, the network namespace its remote
/// connections (etcd) were made in, and the store.
type OpenStore = (PathBuf, u64, Box<dyn Store>);

thread_local! {
    /// The connection of the request this worker thread is serving (-1: none), so that
    /// the engine can ask whether the caller is still there before it commits an attach.
    static CALLER: std::cell::Cell<RawFd> = const { std::cell::Cell::new(-1) };
    /// The store of the request this thread serves (or just served), until `park_store`.
    static CACHED: std::cell::RefCell<Option<OpenStore>> = const { std::cell::RefCell::new(None) };
}

/// The agent's open stores between requests, the most recently used last. Any worker
/// takes the most recent one: idle workers take turns at `accept`, and a connection that
/// another one wrote through since its last use must drop its page cache and read its
/// pages again (measured: a sizeable part of each network look-up).
static PARKED: std::sync::Mutex<Vec<OpenStore>> = std::sync::Mutex::new(Vec::new());

/// Hands this thread's store back to the agent's pool (`PARKED`).
fn park_store() {
    if let Some(open) = CACHED.with(|c| c.borrow_mut().take()) {
        if let Ok(mut parked) = PARKED.lock() {
            parked.push(open);
        }
    }
}

/// The most recently parked store of `root`: one made in namespace `ns` if there is one.
fn unpark_store(root: &Path, ns: u64) -> Option<OpenStore> {
    let mut parked = PARKED.lock().ok()?;
    let at = parked
        .iter()
        .rposition(|(r, n, _)| r == root && *n == ns)
        .or_else(|| parked.iter().rposition(|(r, _, _)| r == root))?;
    Some(parked.remove(at))
}

/// An engine whose store goes back to the worker's cache when the command is done.
pub struct EngineGuard {
    engine: Option<Engine>,
    key: Option<(PathBuf, u64)>,
}

impl std::ops::Deref for EngineGuard {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        self.engine.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for EngineGuard {
    fn deref_mut(&mut self) -> &mut Engine {
        self.engine.as_mut().expect("present until dropped")
    }
}

impl Drop for EngineGuard {
    fn drop(&mut self) {
        if let (Some(key), Some(engine)) = (self.key.take(), self.engine.take()) {
            if !std::thread::panicking() {
                let store = engine.into_store();
                CACHED.with(|c| *c.borrow_mut() = Some((key.0, key.1, store)));
            }
        }
    }
}

/// True when the command runs in an agent for a caller that has ended (killed while it
/// waited for the reply). A command run in its own process has no such caller: false.
///
/// Why it matters: a runtime that kills a plugin mid-ADD counts the attachment as never
/// made, and may run GC right after. An agent that finished that ADD after the GC would
/// leave an endpoint nobody believes in. The caller's socket is closed by the kernel
/// before its parent can reap it, so an attach that checks this after its reservation is
/// committed and before it activates is either seen by that GC or rolled back here.
pub fn caller_gone() -> bool {
    let fd = CALLER.with(|c| c.get());
    fd >= 0 && hung_up(fd)
}

/// True when the other end of the connection `fd` has been closed.
fn hung_up(fd: RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: poll(2) on one live pollfd, without waiting.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

/// The engine of `root`: a fresh one, or in the agent, one over this worker's open store.
/// An etcd connection belongs to the namespace it was made in, so a request from another
/// namespace gets the store without its connections.
pub fn engine(root: &Path) -> crate::Result<EngineGuard> {
    if !RESIDENT.load(Ordering::Relaxed) {
        return Ok(EngineGuard {
            engine: Some(Engine::open(root)?),
            key: None,
        });
    }
    let ns = std::fs::metadata("/proc/thread-self/ns/net")
        .map(|m| m.ino())
        .unwrap_or(0);
    let cached = CACHED
        .with(|c| c.borrow_mut().take())
        .or_else(|| unpark_store(root, ns));
    let store = match cached {
        Some((r, n, store)) if r == root && n == ns => store,
        Some((r, _, mut store)) if r == root => {
            store.drop_connections();
            store
        }
        _ => Engine::open_existing_store(root)?,
    };
    // The socket it keeps holds its namespace alive, so no other one can take that
    // inode meanwhile; 0 (unknown) keeps nothing.
    let os = Box::new(match ns {
        0 => crate::os::RealOs::new(),
        ns => crate::os::RealOs::for_namespace(ns),
    });
    Ok(EngineGuard {
        engine: Some(Engine::with_parts(root, store, os)),
        key: Some((root.to_path_buf(), ns)),
    })
}

// ---------------------------------------------------------------- the agent

/// Called early in `main` by a front end with an agent: in a binary re-executed by `start`,
/// become the agent of its root, and exit.
pub fn run_if_agent(service: &'static Service) {
    let Some(root) = std::env::var_os(service.marker()) else {
        return;
    };
    // Not for the processes the agent starts in turn (a fleet keeper, a container's
    // monitor: the same binary, which would otherwise become an agent too).
    std::env::remove_var(service.marker());
    // SAFETY: fork in a single-threaded process; the parent only exits.
    match unsafe { libc::fork() } {
        0 => {
            serve(service, Path::new(&root));
            std::process::exit(0)
        }
        _ => std::process::exit(0),
    }
}

/// A socket the agent listens on, with its workers. Besides the shared one
/// (`Service::socket`), each CPU the agent may run on gets its own
/// (`mvnet_forward::cpu_socket`), whose workers run only on that CPU. Why: on a virtual
/// machine, waking a thread on another, idle CPU takes 60 to 80 µs before it runs (the
/// vCPU has to be woken by the host). A caller that pins itself to its CPU and knocks on
/// that CPU's door wakes a worker on the CPU it is about to leave idle by waiting, and the
/// answer wakes the caller there too: an ADD about 3% faster in an A/B (scripts/ab-cni.sh,
/// both orders). The worker's helper thread runs on the other CPUs, beside it.
struct Door {
    /// Callers send their requests here, one datagram each (see `mvnet_forward`).
    socket: UnixDatagram,
    /// The CPU its workers run on; None: any.
    cpu: Option<usize>,
    idle_workers: AtomicUsize,
}

/// What the workers and the housekeeping thread share.
struct Shared {
    doors: Vec<Door>,
    workers: AtomicUsize,
    in_flight: AtomicUsize,
    /// When the last request was taken (ms since `started`).
    last_request_ms: std::sync::atomic::AtomicU64,
    started: Instant,
    /// A caller ran another binary: this one is out of date.
    stale: AtomicBool,
    /// Leaving: workers stop taking requests.
    closing: AtomicBool,
    /// The keys of the commands running now (`Service::key`), and a signal when one ends.
    keys_running: std::sync::Mutex<Vec<String>>,
    key_freed: std::sync::Condvar,
}

/// A command's turn on its key: taken when no other command with that key runs, given back
/// when dropped.
struct KeyTurn<'a> {
    shared: &'a Shared,
    key: String,
}

impl<'a> KeyTurn<'a> {
    fn wait(shared: &'a Shared, key: String) -> KeyTurn<'a> {
        let mut running = shared
            .keys_running
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        while running.contains(&key) {
            running = shared
                .key_freed
                .wait(running)
                .unwrap_or_else(|e| e.into_inner());
        }
        running.push(key.clone());
        KeyTurn { shared, key }
    }
}

impl Drop for KeyTurn<'_> {
    fn drop(&mut self) {
        let mut running = self
            .shared
            .keys_running
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        running.retain(|k| *k != self.key);
        self.shared.key_freed.notify_all();
    }
}

fn serve(service: &'static Service, root: &Path) {
    // Our own empty namespace: the one we were started from (a lab's, a container
    // runtime's) must not be kept alive by us. Each request's thread joins its caller's.
    // SAFETY: unshare of this single-threaded process's own namespace.
    unsafe { libc::unshare(libc::CLONE_NEWNET) };
    let _ = std::env::set_current_dir("/");
    let Ok(own_ns) = std::fs::File::open("/proc/thread-self/ns/net") else {
        return;
    };
    let Some(mut lock) = try_lock(&service.lock(root)) else {
        return; // another agent won the race
    };
    // Who serves this root (the benchmark adds our CPU time to the commands we serve).
    let _ = lock.set_len(0);
    let _ = writeln!(lock, "{}", std::process::id());
    let (Some(exe), Some(mnt)) = (exe_identity(), mnt_identity()) else {
        return;
    };
    let my_env = compared_env(std::env::vars());
    let path = service.socket(root);
    let _ = std::fs::remove_file(&path);
    let Ok(listener) = UnixDatagram::bind(&path) else {
        return;
    };
    let Ok(ino) = std::fs::metadata(&path).map(|m| m.ino()) else {
        return;
    };
    let db = db_inode(root);
    crate::announce::announce_from_a_thread();
    RESIDENT.store(true, Ordering::Relaxed);
    let allowed = crate::os::cpus_of_this_thread();
    let mut doors = vec![Door {
        socket: listener,
        cpu: None,
        idle_workers: AtomicUsize::new(0),
    }];
    if allowed.len() > 1 {
        for &cpu in allowed.iter().take(MAX_CPU_DOORS) {
            let at = mvnet_forward::cpu_socket(&path, cpu);
            let _ = std::fs::remove_file(&at);
            if let Ok(socket) = UnixDatagram::bind(&at) {
                doors.push(Door {
                    socket,
                    cpu: Some(cpu),
                    idle_workers: AtomicUsize::new(0),
                });
            }
        }
    }
    let shared = Arc::new(Shared {
        doors,
        workers: AtomicUsize::new(0),
        in_flight: AtomicUsize::new(0),
        last_request_ms: std::sync::atomic::AtomicU64::new(0),
        started: Instant::now(),
        stale: AtomicBool::new(false),
        closing: AtomicBool::new(false),
        keys_running: std::sync::Mutex::new(Vec::new()),
        key_freed: std::sync::Condvar::new(),
    });
    let ctx = Arc::new(WorkerCtx {
        service,
        root: root.to_path_buf(),
        exe,
        mnt,
        env: my_env,
        own_ns: OwnedFd::from(own_ns),
        allowed,
    });
    let spawn_worker = |door: usize| {
        shared.workers.fetch_add(1, Ordering::SeqCst);
        let (s, c) = (shared.clone(), ctx.clone());
        std::thread::spawn(move || worker(&s, &c, door));
    };
    // Two warm workers on the shared socket from the start (a runtime often starts several
    // containers at once), and one on each CPU's. Workers take connections themselves
    // (accept), so a request wakes one thread only; this thread only watches: more workers
    // where callers wait, and when to leave.
    spawn_worker(0);
    spawn_worker(0);
    for door in 1..shared.doors.len() {
        spawn_worker(door);
    }
    let mut waiting_since: Vec<Option<Instant>> = vec![None; shared.doors.len()];
    loop {
        let busy = |d: &Door| d.idle_workers.load(Ordering::SeqCst) == 0;
        if shared.doors.iter().any(busy) {
            std::thread::sleep(Duration::from_millis(1));
        } else {
            std::thread::sleep(Duration::from_millis(200));
        }
        // A caller waiting at a door whose workers are all busy, for SPAWN_AFTER: one more
        // worker there.
        for (i, door) in shared.doors.iter().enumerate() {
            let mut pfd = libc::pollfd {
                fd: door.socket.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one live pollfd; a zero timeout only looks.
            let pending = busy(door) && unsafe { libc::poll(&mut pfd, 1, 0) } > 0;
            match (pending, waiting_since[i]) {
                (false, _) => waiting_since[i] = None,
                (true, None) => waiting_since[i] = Some(Instant::now()),
                (true, Some(t)) => {
                    if t.elapsed() >= SPAWN_AFTER
                        && shared.workers.load(Ordering::SeqCst) < MAX_WORKERS
                    {
                        spawn_worker(i);
                        waiting_since[i] = None;
                    }
                }
            }
        }
        // Gone, or replaced by a newer agent's; or the store replaced under us.
        let ours = std::fs::metadata(&path).is_ok_and(|m| m.ino() == ino) && db_inode(root) == db;
        let last = Duration::from_millis(shared.last_request_ms.load(Ordering::SeqCst));
        let idle = shared.started.elapsed().saturating_sub(last) >= IDLE
            && shared.in_flight.load(Ordering::SeqCst) == 0;
        if !ours || idle || shared.stale.load(Ordering::SeqCst) {
            shared.closing.store(true, Ordering::SeqCst);
            if ours {
                let _ = std::fs::remove_file(&path);
                for cpu in shared.doors.iter().filter_map(|d| d.cpu) {
                    let _ = std::fs::remove_file(mvnet_forward::cpu_socket(&path, cpu));
                }
            }
            // Wake the workers waiting for a request (a receive returns nothing once the
            // socket is shut down).
            for door in &shared.doors {
                // SAFETY: shutdown(2) of our own socket.
                unsafe { libc::shutdown(door.socket.as_raw_fd(), libc::SHUT_RDWR) };
            }
            // Let the requests already taken finish (a caller waits for its answer).
            while shared.in_flight.load(Ordering::SeqCst) > 0 {
                std::thread::sleep(Duration::from_millis(10));
            }
            return;
        }
    }
}

fn db_inode(root: &Path) -> u64 {
    std::fs::metadata(root.join("mvnet.db")).map_or(0, |m| m.ino())
}

struct WorkerCtx {
    service: &'static Service,
    root: PathBuf,
    exe: String,
    mnt: String,
    env: BTreeMap<String, String>,
    own_ns: OwnedFd,
    /// The CPUs the agent may run on.
    allowed: Vec<usize>,
}

fn worker(shared: &Shared, ctx: &WorkerCtx, door: usize) {
    crate::alloc::cache_on_this_thread();
    let door = &shared.doors[door];
    // A CPU's worker runs there; its helper anywhere else.
    let helper_cpus = match door.cpu {
        Some(cpu) => {
            crate::os::run_this_thread_on(&[cpu]);
            ctx.allowed.iter().copied().filter(|c| *c != cpu).collect()
        }
        None => Vec::new(),
    };
    crate::helper::enable_on_this_thread(ctx.own_ns.as_raw_fd(), helper_cpus);
    // Open the store before the first request needs it (the first open of a connection
    // reads the schema: milliseconds, which a waiting request should not pay). Not when
    // the root is gone: opening would create it again, for nobody.
    if ctx.root.join("mvnet.db").exists() {
        let _ = engine(&ctx.root);
        park_store();
    }
    // Each worker has its own open files: flock(2) locks belong to an open file, and one
    // worker's unlock must not end another's share.
    let mut locks: Option<InFlightLocks> = None;
    let mut buf = vec![0u8; mvnet_forward::DATAGRAM_MAX];
    loop {
        door.idle_workers.fetch_add(1, Ordering::SeqCst);
        let got = receive_request(&door.socket, &mut buf);
        door.idle_workers.fetch_sub(1, Ordering::SeqCst);
        if shared.closing.load(Ordering::SeqCst) {
            shared.workers.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        // Not a whole request: dropping its fds closes the caller's reply channel, and
        // its caller does the work itself.
        let Ok(incoming) = got else {
            continue;
        };
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        shared.last_request_ms.store(
            shared.started.elapsed().as_millis() as u64,
            Ordering::SeqCst,
        );
        if locks.is_none() {
            locks = InFlightLocks::open(&ctx.root);
        }
        let healthy = serve_one(incoming, shared, ctx, locks.as_ref());
        shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !healthy {
            // This thread could not return to the agent's namespace: end it.
            shared.workers.fetch_sub(1, Ordering::SeqCst);
            return;
        }
    }
}

/// Serves one connection; false if this thread is no longer fit to serve.
fn serve_one(
    incoming: mvnet_forward::Incoming,
    shared: &Shared,
    ctx: &WorkerCtx,
    locks: Option<&InFlightLocks>,
) -> bool {
    let taken = Instant::now();
    let mvnet_forward::Incoming {
        header,
        netns: caller_ns,
        taken: taken_pipe,
        reply: mut stream,
    } = incoming;
    let decline = |stream: &mut UnixStream, why: &str| {
        let mut out = vec![b'D'];
        write_chunk(&mut out, why.as_bytes());
        let _ = stream.write_all(&out);
    };
    if peer_uid(&stream) != Some(0) {
        decline(&mut stream, "only root is served");
        return true;
    }
    if header.exe != ctx.exe {
        shared.stale.store(true, Ordering::SeqCst);
        decline(&mut stream, "another binary");
        return true;
    }
    if header.mnt != ctx.mnt {
        decline(&mut stream, "another mount namespace");
        return true;
    }
    if !ctx.root.join("mvnet.db").exists() {
        // Removed under us: the caller does it itself (and so creates it, if it means to).
        decline(&mut stream, "the state root is gone");
        return true;
    }
    if compared_env(header.request.env.clone().into_iter()) != ctx.env {
        decline(&mut stream, "another MVNET_ environment");
        return true;
    }
    let Some(locks) = locks.filter(|l| l.enter_request()) else {
        decline(&mut stream, "cannot lock the agents' lock files");
        return true;
    };
    // Taken after a GC that started once its caller was reaped (see `InFlightLocks`).
    if hung_up(stream.as_raw_fd()) {
        locks.leave_request();
        return true;
    }
    // SAFETY: setns of this thread to a namespace fd we own.
    if unsafe { libc::setns(caller_ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        locks.leave_request();
        decline(&mut stream, "cannot join the caller's network namespace");
        return true;
    }
    // Taken: from here on, a caller that loses us says "try again" instead of doing the
    // work itself (this marks a pipe the caller does not wait on, so it is not woken).
    let served = mvnet_forward::mark_taken(&taken_pipe);
    drop(taken_pipe);
    let mut out = Vec::new();
    if served {
        let handle = ctx.service.handle;
        // After any command on the same key that is still running (see `Service::key`).
        let turn = (ctx.service.key)(&header.request).map(|k| KeyTurn::wait(shared, k));
        let checked = taken.elapsed();
        let timing = header.request.env.contains_key("MVNET_TIMING");
        CALLER.with(|c| c.set(stream.as_raw_fd()));
        let (result, stderr) = crate::capture_stderr(|| {
            let r =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle(&header.request)));
            if timing {
                // The agent's share of the request (the caller adds its own around it).
                crate::to_stderr(&format!(
                    "mvnet agent timing: checks+setns={:.3}ms handle={:.3}ms",
                    checked.as_secs_f64() * 1e3,
                    (taken.elapsed() - checked).as_secs_f64() * 1e3,
                ));
            }
            r
        });
        let (reply, stderr) = match result {
            Ok(reply) => (reply, stderr),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                (
                    Reply {
                        stdout: String::new(),
                        status: 101,
                    },
                    format!("{stderr}mvnet agent: the command panicked: {what}\n"),
                )
            }
        };
        CALLER.with(|c| c.set(-1));
        drop(turn);
        out.push(b'R');
        out.push(reply.status);
        write_chunk(&mut out, reply.stdout.as_bytes());
        write_chunk(&mut out, stderr.as_bytes());
    }
    // The command is done (committed or rolled back): a GC may start.
    locks.leave_request();
    if served {
        let _ = stream.write_all(&out);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        // Upkeep the command left (spares of a shared pool topped up), after the caller
        // has its answer, and still in its namespace (where its etcd connection leads).
        CACHED.with(|c| {
            if let Some((_, _, store)) = c.borrow_mut().as_mut() {
                store.after_reply();
            }
        });
    }
    park_store();
    // SAFETY: back to the agent's own namespace, from an fd we own.
    unsafe { libc::setns(ctx.own_ns.as_raw_fd(), libc::CLONE_NEWNET) == 0 }
}

fn peer_uid(stream: &UnixStream) -> Option<u32> {
    // SAFETY: a plain C struct, for which all-zero bytes are a valid value.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the buffer is a live ucred and its size is given.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    (rc == 0).then_some(cred.uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_gets_the_most_recently_parked_store_of_its_root_and_namespace_first() {
        // Roots of their own: other tests of this process may park stores too.
        let root = PathBuf::from(format!("/nonexistent/parked-{}", crate::ids::new_id()));
        let other = root.join("other");
        // A store is told by its address, which parking does not change (it stays boxed).
        let address = |store: &dyn Store| store as *const dyn Store as *const u8 as usize;
        let park = |r: &Path, ns: u64| {
            let store: Box<dyn Store> = Box::new(crate::store::MemoryStore::new());
            let at = address(store.as_ref());
            CACHED.with(|c| *c.borrow_mut() = Some((r.to_path_buf(), ns, store)));
            park_store();
            at
        };
        let got = |open: Option<OpenStore>| address(open.expect("a parked store").2.as_ref());
        let old_in_1 = park(&root, 1);
        let in_2 = park(&root, 2);
        let new_in_1 = park(&root, 1);
        assert_eq!(got(unpark_store(&root, 1)), new_in_1);
        assert_eq!(got(unpark_store(&root, 2)), in_2);
        // No store of namespace 3: the most recent one of the root (its caller drops its
        // connections, which belong to namespace 1).
        assert_eq!(got(unpark_store(&root, 3)), old_in_1);
        assert!(unpark_store(&root, 1).is_none());
        let others = park(&other, 1);
        assert!(
            unpark_store(&root, 1).is_none(),
            "never another root's store"
        );
        assert_eq!(got(unpark_store(&other, 1)), others);
    }

    #[test]
    fn only_mvnet_variables_are_compared_and_the_agents_own_are_not() {
        let env = vec![
            ("MVNET_ROOT".to_string(), "/x".to_string()),
            ("CNI_COMMAND".to_string(), "ADD".to_string()),
            ("MVNET_AGENT_REQUIRED".to_string(), "1".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        let c = compared_env(env.into_iter());
        assert_eq!(c.len(), 1);
        assert_eq!(c["MVNET_ROOT"], "/x");
    }

    #[test]
    fn gc_waits_for_requests_in_flight_and_holds_new_ones_back() {
        // Removed on drop, also when an assertion fails.
        struct TempDir(PathBuf);
        impl Drop for TempDir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let temp =
            TempDir(std::env::temp_dir().join(format!("mvnet-inflight-{}", crate::ids::new_id())));
        let dir = temp.0.clone();
        std::fs::create_dir(&dir).unwrap();
        let (a, b) = (
            InFlightLocks::open(&dir).unwrap(),
            InFlightLocks::open(&dir).unwrap(),
        );
        // Two requests at once: shares do not exclude each other.
        assert!(a.enter_request() && b.enter_request());
        let (tx, rx) = std::sync::mpsc::channel();
        let gc_over = Arc::new(AtomicBool::new(false));
        let gc = {
            let (dir, gc_over) = (dir.clone(), gc_over.clone());
            std::thread::spawn(move || {
                let quiet = quiet_agents(&dir).unwrap();
                tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(100));
                gc_over.store(true, Ordering::SeqCst);
                drop(quiet);
            })
        };
        // Until GC holds the gate (it then waits for the two requests).
        let probe = InFlightLocks::open(&dir).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while flock(&probe.gate, libc::LOCK_SH | libc::LOCK_NB) {
            flock(&probe.gate, libc::LOCK_UN);
            assert!(Instant::now() < deadline, "GC never took the gate");
            std::thread::sleep(Duration::from_millis(1));
        }
        // A request that comes while GC waits is held back until GC is over.
        let late = {
            let gc_over = gc_over.clone();
            std::thread::spawn(move || {
                assert!(probe.enter_request());
                let after = gc_over.load(Ordering::SeqCst);
                probe.leave_request();
                after
            })
        };
        let wait = Duration::from_millis(200);
        assert!(rx.recv_timeout(wait).is_err(), "GC ran beside two requests");
        a.leave_request();
        assert!(rx.recv_timeout(wait).is_err(), "GC ran beside one request");
        b.leave_request();
        rx.recv_timeout(Duration::from_secs(5))
            .expect("GC runs once no request is in flight");
        assert!(
            late.join().unwrap(),
            "a request started while GC waited or ran"
        );
        gc.join().unwrap();
    }

    #[test]
    fn a_caller_is_gone_once_its_end_of_the_socket_is_closed_with_unread_data_or_not() {
        assert!(!caller_gone(), "no request, no caller");
        let (caller, agent) = UnixStream::pair().unwrap();
        // The caller's request is still unread in the agent's buffer, as in a real serve.
        (&caller).write_all(b"request").unwrap();
        CALLER.with(|c| c.set(agent.as_raw_fd()));
        assert!(!caller_gone());
        drop(caller);
        assert!(caller_gone());
        CALLER.with(|c| c.set(-1));
        assert!(!caller_gone());
    }
}
