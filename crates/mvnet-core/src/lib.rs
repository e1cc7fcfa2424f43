//! mvnet core: the network model, IPAM, the store, netlink, namespaces and drivers.
//! Front ends (the `mvnet` CLI, later the CNI and Docker plugins) are thin layers on top.

pub mod error;
pub mod ids;
pub mod ipam;
pub mod model;
pub mod store;

pub use error::{Error, Result};
pub mod alloc;
pub mod announce;
pub mod dhcp;
pub mod doctor;
pub mod driver;
pub mod engine;
pub mod fleet;
pub mod helper;
pub mod kernel;
pub mod netlink;
pub mod netns;
pub mod os;
pub(crate) mod packet;
pub mod parent;
pub mod probe;
pub mod process;
pub mod resident;
pub mod runtime;
pub mod timing;
pub mod views;

/// A warning for the person at the terminal (stderr; CNI runtimes log a plugin's stderr).
pub fn warn_user(msg: &str) {
    to_stderr(&format!("mvnet: warning: {msg}"));
}

thread_local! {
    /// Set while a resident process serves one request on this thread (`capture_stderr`).
    static CAPTURED: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// One line for the caller's stderr: ours, or, while a resident process (the CNI agent)
/// serves a request on this thread, the request's, so the caller prints it as its own.
pub fn to_stderr(line: &str) {
    let kept = CAPTURED.with(|c| match c.borrow_mut().as_mut() {
        Some(buf) => {
            buf.push_str(line);
            buf.push('\n');
            true
        }
        None => false,
    });
    if !kept {
        eprintln!("{line}");
    }
}

/// Runs `f` with this thread's `to_stderr` lines collected, and returns them with its value.
pub fn capture_stderr<R>(f: impl FnOnce() -> R) -> (R, String) {
    CAPTURED.with(|c| *c.borrow_mut() = Some(String::new()));
    let r = f();
    let text = CAPTURED.with(|c| c.borrow_mut().take()).unwrap_or_default();
    (r, text)
}

/// A value from the user, fit for a one-line message: quoted, control characters escaped
/// (a newline must not split the line), and cut after 64 characters.
pub fn quote(s: &str) -> String {
    const MAX: usize = 64;
    let mut out = String::from("'");
    for (i, c) in s.chars().enumerate() {
        if i == MAX {
            out.push_str(&format!("...' ({} bytes)", s.len()));
            return out;
        }
        if c.is_control() || c == '\'' || c == '\\' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Makes any message one line of bounded length: control characters are escaped and a
/// message longer than 2,000 bytes is cut (values the user typed can be megabytes).
pub fn one_line(msg: &str) -> String {
    const MAX: usize = 2000;
    let mut out = String::with_capacity(msg.len().min(MAX + 16));
    for c in msg.chars() {
        if out.len() >= MAX {
            out.push_str(&format!("... ({} bytes in all)", msg.len()));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod message_tests {
    #[test]
    fn quoted_values_stay_on_one_short_line() {
        assert_eq!(super::quote("eth0"), "'eth0'");
        assert_eq!(super::quote("a\nb"), "'a\\nb'");
        let long = "x".repeat(1_000_000);
        let q = super::quote(&long);
        assert!(q.len() < 100 && q.ends_with("(1000000 bytes)"), "{q}");
        let m = super::one_line(&format!("bad {long}\nnext"));
        assert!(m.len() < 2100 && !m.contains('\n'), "{}", m.len());
    }
}
