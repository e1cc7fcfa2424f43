//! The state root's safety rules. mvnet runs as root, so a state directory that another user
//! can write to, or plant links in, would let that user steer root's file writes, read
//! commands and logs, or hang every write by holding the lock. So the root must be a real
//! directory owned by us, mode 0700, in a parent only root (or we) can change; every file in
//! it is 0600 and opened without following links.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::{invalid, Error, Result};

const PRIVATE_DIR: u32 = 0o700;
const PRIVATE_FILE: u32 = 0o600;

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Creates `root` if needed (0700) and checks that it is safe to keep state in.
pub fn prepare(root: &Path) -> Result<()> {
    let shown = root.display();
    if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            Error::io(
                format!("cannot create the parent of state directory {shown} (set --root or MVNET_ROOT to a writable place)"),
                e,
            )
        })?;
        check_parent(root, parent)?;
    }
    match std::fs::DirBuilder::new().mode(PRIVATE_DIR).create(root) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(Error::io(
                format!("cannot create state directory {shown} (set --root or MVNET_ROOT to a writable place)"),
                e,
            ))
        }
    }
    let md = std::fs::symlink_metadata(root)
        .map_err(|e| Error::io(format!("cannot read state directory {shown}"), e))?;
    if md.file_type().is_symlink() {
        return Err(invalid!(
            "state directory {shown} is a symbolic link; mvnet keeps state only in a real directory: give its target as --root"
        ));
    }
    if !md.is_dir() {
        return Err(invalid!(
            "state directory {shown} is not a directory; move it away or pick another --root"
        ));
    }
    if md.uid() != euid() {
        return Err(invalid!(
            "state directory {shown} belongs to uid {}, not to uid {} that runs mvnet; another user could change mvnet's state: chown it, or pick another --root",
            md.uid(),
            euid()
        ));
    }
    if md.mode() & 0o077 != 0 {
        // An older mvnet made it 0755: tighten it.
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(PRIVATE_DIR))
            .map_err(|e| Error::io(format!("cannot make {shown} private (chmod 700)"), e))?;
    }
    Ok(())
}

/// The directory that holds the root: whoever can write there can swap the root for a link.
/// A sticky directory such as /tmp is fine: there only the owner can rename or remove it.
fn check_parent(root: &Path, parent: &Path) -> Result<()> {
    let md = std::fs::metadata(parent)
        .map_err(|e| Error::io(format!("cannot read {}", parent.display()), e))?;
    let sticky = md.mode() & libc::S_ISVTX != 0;
    let writable_by_others = md.mode() & 0o022 != 0;
    if writable_by_others && !sticky {
        return Err(invalid!(
            "state directory {} sits in {} (mode {:o}), which other users can write to, so they could replace it; pick a --root in a directory only root can write",
            root.display(),
            parent.display(),
            md.mode() & 0o7777
        ));
    }
    if md.uid() != 0 && md.uid() != euid() {
        return Err(invalid!(
            "state directory {} sits in {}, which belongs to uid {}, who could replace it; pick a --root in a directory owned by root",
            root.display(),
            parent.display(),
            md.uid()
        ));
    }
    Ok(())
}

/// flock(2) of `f` with `op` (`LOCK_SH`, `LOCK_EX`, `LOCK_UN`, optionally `| LOCK_NB`),
/// again after a signal; false on any other failure (`EWOULDBLOCK`: held by another).
pub fn flock(f: &File, op: libc::c_int) -> bool {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock(2) on an fd we own; no memory is involved.
        if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
            return true;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return false;
        }
    }
}

/// The lock file `path` of the state root (`open_private`), if no one else holds it:
/// locked exclusively while the file is open.
pub fn try_lock_private(path: &Path) -> Option<File> {
    let f = open_private(path).ok()?;
    flock(&f, libc::LOCK_EX | libc::LOCK_NB).then_some(f)
}

/// Opens (creating if needed, 0600) a file of the state root for reading and writing, never
/// through a symbolic link. A file another user owns is refused; a looser mode is tightened.
pub fn open_private(path: &Path) -> Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(PRIVATE_FILE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                invalid!(
                    "{} is a symbolic link; mvnet never follows links in its state directory: remove it",
                    path.display()
                )
            } else {
                Error::io(format!("open {}", path.display()), e)
            }
        })?;
    secure_file(&f, path)?;
    Ok(f)
}

/// Checks ownership of an open state file and tightens its mode to 0600.
fn secure_file(f: &File, path: &Path) -> Result<()> {
    let md = f
        .metadata()
        .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
    if !md.is_file() {
        return Err(invalid!(
            "{} is not a regular file; move it away",
            path.display()
        ));
    }
    if md.uid() != euid() {
        return Err(invalid!(
            "{} belongs to uid {}, not to uid {} that runs mvnet; remove it",
            path.display(),
            md.uid(),
            euid()
        ));
    }
    if md.mode() & 0o077 != 0 {
        f.set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE))
            .map_err(|e| Error::io(format!("chmod 600 {}", path.display()), e))?;
    }
    Ok(())
}

/// Checks an existing file of the root without opening it (one lstat), and tightens a
/// loose mode (an older mvnet left the database, -wal and -shm 0644). A missing file is
/// fine; a link, another user's file or not a regular file is refused. The root itself is
/// checked first (`prepare`), so no one else can swap the file in between.
pub fn check_private_file(path: &Path) -> Result<()> {
    let md = match std::fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("stat {}", path.display()), e)),
    };
    if md.file_type().is_symlink() {
        return Err(invalid!(
            "{} is a symbolic link; mvnet never follows links in its state directory: remove it",
            path.display()
        ));
    }
    if !md.is_file() || md.uid() != euid() {
        return Err(invalid!(
            "{} is not a file of mvnet's (another kind of file, or another user's); remove it",
            path.display()
        ));
    }
    if md.mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(PRIVATE_FILE))
            .map_err(|e| Error::io(format!("chmod 600 {}", path.display()), e))?;
    }
    Ok(())
}

/// Creates a private directory (0700) inside the root; refuses a link in its place.
pub fn private_dir(path: &Path) -> Result<()> {
    match std::fs::DirBuilder::new().mode(PRIVATE_DIR).create(path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(format!("create {}", path.display()), e)),
    }
    let md = std::fs::symlink_metadata(path)
        .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
    if !md.is_dir() || md.uid() != euid() {
        return Err(invalid!(
            "{} is not a directory of mvnet's (a link, a file or another user's); remove it",
            path.display()
        ));
    }
    if md.mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(PRIVATE_DIR))
            .map_err(|e| Error::io(format!("chmod 700 {}", path.display()), e))?;
    }
    Ok(())
}

/// Creates a private file (0600) for writing, truncating it; refuses a link in its place.
pub fn create_private_file(path: &Path) -> Result<File> {
    let f = open_private(path)?;
    f.set_len(0)
        .map_err(|e| Error::io(format!("truncate {}", path.display()), e))?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("mvnet-root-{tag}-{}", crate::ids::new_id()))
    }

    #[test]
    fn a_new_root_is_private_and_an_old_one_is_tightened() {
        let root = temp("mode");
        prepare(&root).unwrap();
        let mode = std::fs::metadata(&root).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare(&root).unwrap();
        assert_eq!(std::fs::metadata(&root).unwrap().mode() & 0o777, 0o700);
        let f = root.join("x");
        std::fs::write(&f, b"").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        open_private(&f).unwrap();
        assert_eq!(std::fs::metadata(&f).unwrap().mode() & 0o777, 0o600);
        // Checked without opening: tightened, and a link refused.
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        check_private_file(&f).unwrap();
        assert_eq!(std::fs::metadata(&f).unwrap().mode() & 0o777, 0o600);
        check_private_file(&root.join("missing")).unwrap();
        std::os::unix::fs::symlink(&f, root.join("link")).unwrap();
        assert!(check_private_file(&root.join("link")).is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn links_are_never_followed() {
        let root = temp("links");
        prepare(&root).unwrap();
        let target = temp("target");
        std::os::unix::fs::symlink(&target, root.join("mvnet.lock")).unwrap();
        let e = open_private(&root.join("mvnet.lock"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(!target.exists(), "nothing created where the link points");
        std::os::unix::fs::symlink(&target, root.join("containers")).unwrap();
        assert!(private_dir(&root.join("containers")).is_err());
        assert!(!target.exists());
        let linked_root = temp("linked");
        std::os::unix::fs::symlink(&root, &linked_root).unwrap();
        let e = prepare(&linked_root).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        std::fs::remove_file(&linked_root).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_root_in_a_directory_others_can_write_is_refused() {
        let open = temp("open");
        std::fs::create_dir_all(&open).unwrap();
        // World-writable without the sticky bit: anyone could rename our root away.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = prepare(&open.join("state")).unwrap_err().to_string();
        assert!(e.contains("other users can write to"), "{e}");
        // Sticky (like /tmp): fine.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        prepare(&open.join("state")).unwrap();
        std::fs::remove_dir_all(&open).unwrap();
    }
}
