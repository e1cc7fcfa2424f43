//! The store keeper: a small background process that keeps the database open between
//! short-lived mvnet processes.
//!
//! Why: a process that opens a WAL database while no other process has it open must
//! rebuild the shared WAL index by reading the whole WAL. Every CNI ADD is such a
//! process, so each one read up to 4 MB (1.7-3.4 ms of a 9 ms ADD, measured with
//! `MVNET_TIMING=1`). While any process holds the database open, the index stays valid, and
//! opening it costs about 0.6 ms.
//!
//! What it holds: one idle connection, with no transaction, so it never blocks a writer
//! or a checkpoint, and `kill -9` of it loses nothing. It exits after a minute without
//! writes, or at once when its state directory goes away. `MVNET_NO_KEEPER=1` turns it
//! off.
//!
//! Only the `mvnet` and `mvnet-cni` binaries start keepers (they call `enable`), because
//! a keeper is started by re-executing the current binary.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Set in a re-executed binary's environment: run as the keeper of this state root.
const ROOT_ENV: &str = "MVNET_STORE_KEEPER";
/// Set to anything to never start a keeper.
const OFF_ENV: &str = "MVNET_NO_KEEPER";
/// A keeper leaves after this long without a write to the database.
const IDLE: Duration = Duration::from_secs(60);

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Called first thing in `main` by binaries that may start keepers. When this process was
/// started as a keeper, it runs as one and exits here.
pub fn enable() {
    if let Some(root) = std::env::var_os(ROOT_ENV) {
        detach_and_keep(Path::new(&root));
        std::process::exit(0);
    }
    ENABLED.store(true, Ordering::Relaxed);
}

fn lock_path(root: &Path) -> PathBuf {
    root.join("mvnet.keeper")
}

/// Tries to take the keeper lock of `root`: Some(file) holds it.
fn try_lock(root: &Path) -> Option<std::fs::File> {
    super::root::try_lock_private(&lock_path(root))
}

/// Makes sure a keeper holds `root`'s database open. Costs one flock when one does.
/// Best effort: any failure just leaves things as they would be without a keeper.
pub(crate) fn ensure(root: &Path) {
    if !ENABLED.load(Ordering::Relaxed) || std::env::var_os(OFF_ENV).is_some() {
        return;
    }
    let Some(probe) = try_lock(root) else {
        return; // a keeper holds the lock
    };
    drop(probe); // nobody does: release it for the keeper we start
                 // The re-executed binary runs `detach_and_keep`.
    crate::process::start_detached_self(ROOT_ENV, root);
}

/// In the re-executed binary: fork, let the parent return (to be reaped by whoever
/// started us), and keep the database open in the child.
fn detach_and_keep(root: &Path) {
    // SAFETY: the child only makes async-signal-safe calls (sendto, nanosleep, close, _exit) on data prepared before the fork.
    if unsafe { libc::fork() } == 0 {
        keep(root);
        unsafe { libc::_exit(0) }
    }
}

/// (inode, WAL size, WAL mtime): what changes when someone writes.
fn activity(root: &Path) -> Option<(u64, u64, i64)> {
    let db = std::fs::metadata(root.join("mvnet.db")).ok()?;
    let wal = std::fs::metadata(root.join("mvnet.db-wal")).ok();
    Some((
        db.ino(),
        wal.as_ref().map_or(0, |w| w.len()),
        wal.map_or(db.mtime_nsec(), |w| {
            w.mtime() * 1_000_000_000 + w.mtime_nsec()
        }),
    ))
}

fn keep(root: &Path) {
    // Pin nothing of whoever started us: no network namespace (a container's or a lab's
    // would stay alive as long as we do) and no working directory.
    // SAFETY: unshare of this single-threaded process's own namespace.
    unsafe { libc::unshare(libc::CLONE_NEWNET) };
    let _ = std::env::set_current_dir("/");
    // It only reads and maps files it owns: no capability is needed from here on.
    if let Err(e) = crate::process::drop_all_capabilities() {
        tracing::warn!(error = %e, "the store keeper cannot drop its capabilities; not keeping");
        return;
    }
    // A root removed meanwhile (a lab torn down) stays removed: nothing is created here.
    if !root.join("mvnet.db").exists() {
        return;
    }
    let Some(_lock) = try_lock(root) else {
        return; // another keeper won the race
    };
    let Ok(mut store) = super::SqliteStore::open_existing_without_keeper(root) else {
        return;
    };
    // A first read maps the shared WAL index; from now on it stays valid for others.
    use super::Store;
    if store.networks().is_err() {
        return;
    }
    let Some(mut last) = activity(root) else {
        return;
    };
    let mut idle_since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        match activity(root) {
            // The state directory was removed or the database replaced: nothing to keep.
            None => return,
            Some(now) if now.0 != last.0 => return,
            Some(now) if now != last => {
                last = now;
                idle_since = Instant::now();
            }
            Some(_) if idle_since.elapsed() >= IDLE => return,
            Some(_) => {}
        }
    }
}
