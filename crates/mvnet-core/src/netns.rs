//! Network (and UTS) namespaces: named and persistent (compatible with `ip netns`), opened by
//! path, and entered by one thread for a moment to open sockets that stay bound there.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::{Error, Result};

/// Where `ip netns` keeps named namespaces; we use the same place so `ip netns exec` works.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// An open network namespace.
#[derive(Debug)]
pub struct Netns {
    file: File,
    path: PathBuf,
}

impl Netns {
    /// Opens a network namespace file. Non-blocking, so a FIFO planted in its place cannot
    /// hang us, and checked to be a namespace (nsfs): a plain file where a namespace was
    /// bind-mounted in another mount namespace is refused with a clear message.
    pub fn open(path: impl AsRef<Path>) -> Result<Netns> {
        let path = path.as_ref().to_path_buf();
        let file = open_nsfs(&path, "network namespace")?;
        Ok(Netns { file, path })
    }

    /// Whether this is the namespace the calling thread is in (an attach there would change
    /// the host itself).
    pub fn is_current(&self) -> Result<bool> {
        use std::os::unix::fs::MetadataExt;
        let mine = std::fs::metadata("/proc/thread-self/ns/net")
            .map_err(|e| Error::io("read this thread's network namespace", e))?;
        let it = self
            .file
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", self.path.display()), e))?;
        Ok(mine.dev() == it.dev() && mine.ino() == it.ino())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A stand-in for a namespace of the fake OS (unit tests): named by `path`, backed by
    /// /dev/null, never given to the kernel.
    #[cfg(test)]
    pub(crate) fn fake(path: &str) -> Netns {
        Netns {
            file: File::open("/dev/null").expect("/dev/null"),
            path: PathBuf::from(path),
        }
    }
}

impl AsRawFd for Netns {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// nsfs's magic number (linux/magic.h): what statfs says of a namespace file.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Opens `path` (never blocking) and checks that it is a namespace file.
pub fn open_nsfs(path: &Path, what: &str) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            Error::io(
                format!(
                    "cannot open {what} {}",
                    crate::quote(&path.display().to_string())
                ),
                e,
            )
        })?;
    // SAFETY: fstatfs writes into the zeroed struct we pass; the fd is open.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) };
    if rc != 0 || st.f_type as i64 != NSFS_MAGIC {
        return Err(crate::invalid!(
            "{} is not a {what} (a namespace file from /proc/PID/ns or one bind-mounted by ip netns); if it was created from another mount namespace (ip netns exec, systemd PrivateMounts), it is not visible here",
            crate::quote(&path.display().to_string())
        ));
    }
    Ok(file)
}

/// Puts the thread back into its original namespace even if the closure panics.
struct Restore {
    original: File,
    kind: CloneFlags,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if let Err(e) = setns(self.original.as_fd(), self.kind) {
            // A thread stranded in a container's namespace would do the wrong work.
            eprintln!("mvnet: fatal: cannot return to the original namespace: {e}");
            std::process::abort();
        }
    }
}

/// Runs `f` on this thread inside `ns`, then returns the thread to where it was.
/// Sockets opened inside `f` stay bound to `ns`.
pub fn run_in<T>(ns: &Netns, f: impl FnOnce() -> T) -> Result<T> {
    let original = File::open("/proc/thread-self/ns/net")
        .map_err(|e| Error::io("cannot open this thread's network namespace", e))?;
    setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| {
        Error::kernel(
            format!("enter network namespace {}", ns.path.display()),
            e.into(),
        )
    })?;
    let _restore = Restore {
        original,
        kind: CloneFlags::CLONE_NEWNET,
    };
    Ok(f())
}

/// Makes `dir` a shared mount point of its own (as `ip netns` does for /run/netns), so that
/// namespace bind mounts under it propagate to other mount namespaces and can be unmounted.
fn prepare_mount_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    let none: Option<&str> = None;
    let shared = || {
        mount(
            none,
            dir,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            none,
        )
    };
    match shared() {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) => {
            mount(
                Some(dir),
                dir,
                Some("none"),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                none,
            )
            .map_err(|e| Error::kernel(format!("bind-mount {}", dir.display()), e.into()))?;
            shared().map_err(|e| Error::kernel(format!("make {} shared", dir.display()), e.into()))
        }
        Err(e) => Err(Error::kernel(
            format!("make {} shared", dir.display()),
            e.into(),
        )),
    }
}

/// Creates a namespace of `kind` that outlives every process, bind-mounted at `dir/name`.
/// `init` runs inside the new namespace before it is published (e.g. to set lo up).
fn create_persistent(
    kind: CloneFlags,
    dir: &Path,
    name: &str,
    init: impl FnOnce() -> Result<()> + Send,
) -> Result<PathBuf> {
    let path = dir.join(name);
    if !is_mount_point_ready(dir) {
        prepare_mount_dir(dir)?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(&path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                crate::conflict!("namespace {} already exists", path.display())
            } else {
                Error::io(format!("cannot create {}", path.display()), e)
            }
        })?;
    // unshare() changes only the calling thread, so a scoped thread keeps the caller's
    // namespaces untouched; it ends right after the bind mount.
    let result = std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            unshare(kind).map_err(|e| Error::kernel("unshare namespace", e.into()))?;
            init()?;
            let own = match kind {
                CloneFlags::CLONE_NEWUTS => "/proc/thread-self/ns/uts",
                _ => "/proc/thread-self/ns/net",
            };
            let none: Option<&str> = None;
            mount(Some(own), &path, Some("none"), MsFlags::MS_BIND, none).map_err(|e| {
                Error::kernel(
                    format!("bind-mount namespace at {}", path.display()),
                    e.into(),
                )
            })
        })
        .join()
        .unwrap_or_else(|_| Err(Error::Internal("namespace thread panicked".into())))
    });
    if let Err(e) = result {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(path)
}

/// A cheap check that avoids re-mounting on every create: we remember success per process.
fn is_mount_point_ready(dir: &Path) -> bool {
    use std::sync::Mutex;
    static READY: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    let mut ready = READY.lock().unwrap();
    if ready.iter().any(|d| d == dir) {
        return true;
    }
    // Already a mount point (st_dev differs from the parent's)? Then someone prepared it.
    use std::os::unix::fs::MetadataExt;
    let is_mp = match (std::fs::metadata(dir), dir.parent().map(std::fs::metadata)) {
        (Ok(a), Some(Ok(b))) => a.dev() != b.dev(),
        _ => false,
    };
    if is_mp {
        ready.push(dir.to_path_buf());
    }
    is_mp
}

/// Creates a named network namespace (visible to `ip netns`) with `lo` up.
pub fn create_named(name: &str) -> Result<Netns> {
    let path = create_persistent(
        CloneFlags::CLONE_NEWNET,
        Path::new(NETNS_RUN_DIR),
        name,
        loopback_up,
    )?;
    Netns::open(path)
}

/// Pins the calling thread's network namespace at `dir/name` (a bind mount), so a path
/// to it outlives this process: rows that name it stay valid across restarts.
pub fn pin_current_netns(dir: &Path, name: &str) -> Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let path = dir.join(name);
    let mine = std::fs::metadata("/proc/thread-self/ns/net")
        .map_err(|e| Error::io("read this thread's network namespace", e))?;
    if let Ok(ns) = Netns::open(&path) {
        let it = ns
            .file
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
        if it.dev() == mine.dev() && it.ino() == mine.ino() {
            return Ok(path);
        }
    }
    remove_persistent(&path)?;
    if !is_mount_point_ready(dir) {
        prepare_mount_dir(dir)?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(&path)
        .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))?;
    let none: Option<&str> = None;
    mount(
        Some("/proc/thread-self/ns/net"),
        &path,
        Some("none"),
        MsFlags::MS_BIND,
        none,
    )
    .map_err(|e| {
        let _ = std::fs::remove_file(&path);
        Error::kernel(
            format!("bind-mount this namespace at {}", path.display()),
            e.into(),
        )
    })?;
    Ok(path)
}

/// Brings `lo` up in the calling thread's network namespace, with the classic interface
/// ioctls (a namespace module needs no netlink client for this).
fn loopback_up() -> Result<()> {
    // SAFETY: a datagram socket used only for the interface ioctls below; closed on drop.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::kernel(
            "open a socket for lo",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write `ifr`, which outlives the calls.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut ifr) != 0 {
            return Err(Error::kernel(
                "read the flags of lo",
                std::io::Error::last_os_error(),
            ));
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &ifr) != 0 {
            return Err(Error::kernel("set lo up", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Creates a persistent UTS namespace at `dir/name` with `hostname` set.
pub fn create_uts(dir: &Path, name: &str, hostname: &str) -> Result<PathBuf> {
    let host = hostname.to_string();
    create_persistent(CloneFlags::CLONE_NEWUTS, dir, name, move || {
        nix::unistd::sethostname(&host).map_err(|e| Error::kernel("sethostname", e.into()))
    })
}

/// Unmounts and removes a persistent namespace file. Missing is fine (idempotent).
pub fn remove_persistent(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => {
            return Err(Error::kernel(
                format!("unmount {}", path.display()),
                e.into(),
            ))
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("cannot remove {}", path.display()), e)),
    }
}

pub fn named_path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// Makes `cmd` start inside the namespaces of the given open files: the network namespace,
/// and optionally a UTS namespace. The files move into the child-setup closure, so they stay
/// open until the exec.
pub fn spawn_inside(cmd: &mut std::process::Command, net: File, uts: Option<File>) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only setns runs between fork and exec, and setns is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(net.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(u) = &uts {
                if libc::setns(u.as_raw_fd(), libc::CLONE_NEWUTS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// A command that will run inside the network namespace at `path`.
pub fn command_in(
    path: &Path,
    program: impl AsRef<std::ffi::OsStr>,
) -> Result<std::process::Command> {
    let net = File::open(path)
        .map_err(|e| Error::io(format!("open network namespace {}", path.display()), e))?;
    let mut cmd = std::process::Command::new(program);
    spawn_inside(&mut cmd, net, None);
    Ok(cmd)
}
