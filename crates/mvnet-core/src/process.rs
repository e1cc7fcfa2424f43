//! Hygiene for the processes mvnet leaves running (the store keeper, a container's monitor,
//! the announcer): they must not keep the caller's file descriptors open (a shell's
//! `out=$(mvnet network ls 9>&1)` would wait for the keeper to exit), and the keeper needs
//! no privileges at all.

use std::os::unix::process::CommandExt;

const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// Makes every descriptor above stderr close when `cmd` execs, whatever the caller passed
/// us. The standard streams the command sets up are 0-2, so they stay.
pub fn close_inherited_fds(cmd: &mut std::process::Command) {
    // SAFETY: the closure runs between fork and exec and only makes raw syscalls
    // (close_range, or fcntl as a fallback), which are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            mark_cloexec_from(3);
            Ok(())
        });
    }
}

/// Marks fds >= `first` close-on-exec. Async-signal-safe.
fn mark_cloexec_from(first: libc::c_uint) {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes fd flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc != 0 {
        // Kernels before 5.11: set the flag one by one up to the soft limit we can see.
        for fd in first as i32..4096 {
            // SAFETY: fcntl on a possibly closed fd just fails with EBADF.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
}

/// In a forked child that will not exec (the announcer): closes every descriptor above
/// stderr except `keep`. Async-signal-safe.
pub fn close_fds_except(keep: &[i32]) {
    let mut keep_sorted = [i32::MAX; 8];
    let n = keep.len().min(keep_sorted.len());
    keep_sorted[..n].copy_from_slice(&keep[..n]);
    keep_sorted[..n].sort_unstable();
    let mut from: i32 = 3;
    for &k in &keep_sorted[..n] {
        if k >= from {
            close_range(from, k - 1);
            from = k + 1;
        }
    }
    close_range(from, i32::MAX);
}

fn close_range(first: i32, last: i32) {
    if first > last {
        return;
    }
    // SAFETY: closing descriptors of this (forked) process only.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            last as libc::c_uint,
            0 as libc::c_uint,
        )
    };
    if rc != 0 {
        for fd in first..last.min(4096) {
            // SAFETY: as above.
            unsafe { libc::close(fd) };
        }
    }
}

/// Drops every capability for good (bounding set, effective, permitted, inheritable, and
/// no way back through exec): for a process that only needs its own files.
pub fn drop_all_capabilities() -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        for cap in 0..64 {
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                break; // past the last capability this kernel knows
            }
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset reads the header and two data structs, laid out as the kernel's
    // __user_cap_header_struct and __user_cap_data_struct.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One of mvnet's own programs (`mvnet`, `mvnet-dhcp`): `$env` if set, else beside this
/// executable (or one directory up, as cargo lays out test binaries), else `/usr/bin`
/// (a CNI runtime's PATH can be nearly empty), else in PATH.
pub fn find_binary(name: &str, env: &str) -> crate::Result<std::path::PathBuf> {
    use std::path::{Path, PathBuf};
    if let Some(p) = std::env::var_os(env) {
        return Ok(PathBuf::from(p));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        for candidate in [dir.join(name), dir.join("..").join(name)] {
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    let packaged = Path::new("/usr/bin").join(name);
    if packaged.is_file() {
        return Ok(packaged);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(crate::not_found!(
        "{name} is not installed; install it beside mvnet (or set {env})"
    ))
}

/// Re-executes this binary with `key=value` in its environment, in a session of its own,
/// with no inherited descriptors and no stdio, and waits for that first process. The
/// re-executed binary forks once more and lets the first process exit at once, so what it
/// starts (the store keeper, a resident agent) never lingers as our child or zombie.
/// Best effort: a failure leaves things as they would be without it.
pub fn start_detached_self(key: &str, value: &std::path::Path) {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.env(key, value)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::setsid();
            crate::os::run_anywhere_in_child();
            Ok(())
        });
    }
    close_inherited_fds(&mut cmd);
    if let Ok(mut child) = cmd.spawn() {
        let _ = child.wait();
    }
}
