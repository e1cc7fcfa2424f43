//! `mvnet-cni`: the binary a container runtime starts for every CNI command. It is small
//! on purpose (about 0.6 MB, against 8 MB for the plugin that does the work): when the
//! state root's resident agent runs, all it does is forward the command to it and print
//! the answer, and a small static binary starts and exits in a fraction of the time.
//!
//! Everything else is the full plugin's, `mvnet-cni-full`, installed beside this one: this
//! process replaces itself with it (exec, same arguments, environment and stdin) when the
//! command is not one an agent serves, when no agent answers, or when its agent ended
//! mid-command. The full plugin then decides exactly as before (see its `resident`
//! module), so a forwarded command and one done by the full plugin print the same bytes.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

use mvnet_forward::Forwarded;
use serde_json::Value;

/// Memory that is never freed: this process exits within a millisecond (see the arena's
/// notes).
#[global_allocator]
static ALLOCATOR: mvnet_forward::arena::Arena<std::alloc::System> =
    mvnet_forward::arena::Arena(std::alloc::System);

/// The full plugin, beside this binary.
const FULL: &str = "mvnet-cni-full";
/// `mvnet_core::engine::DEFAULT_ROOT` (a test checks they agree).
const DEFAULT_ROOT: &str = "/var/lib/mvnet";
/// `mvnet_core::resident`'s socket for the CNI service (a test checks they agree).
const SOCKET: &str = "cni-agent.sock";

fn main() -> ExitCode {
    let full = full_path();
    let exec_full = |raw: &[u8], lost: bool| exec_full(full.as_deref(), raw, lost);
    // Room for any usual config up front: read_to_end then takes it in one read, not in
    // growing steps from 32 bytes.
    let mut raw = Vec::with_capacity(16 * 1024);
    let command = std::env::var("CNI_COMMAND").ok();
    if command.is_none() || std::io::stdin().read_to_end(&mut raw).is_err() {
        // Run by a person (version text), or stdin unreadable: the full plugin says it.
        return exec_full(&raw, false);
    }
    let argv0 = std::env::args().next().unwrap_or_default();
    let Some(root) = command.as_deref().and_then(|c| forwardable(c, &raw)) else {
        return exec_full(&raw, false);
    };
    let exe = full.as_deref().and_then(mvnet_forward::file_identity);
    match mvnet_forward::forward(&root.join(SOCKET), exe, vec![argv0], &raw) {
        Forwarded::Served(reply) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(reply.stdout.as_bytes());
            let _ = out.flush();
            ExitCode::from(reply.status)
        }
        Forwarded::NotServed { .. } => exec_full(&raw, false),
        Forwarded::Lost => exec_full(&raw, true),
    }
}

/// The state root whose agent may serve `command` with config `raw`, or None when the full
/// plugin must do it (other commands; a delegated IPAM plugin, which reads the caller's
/// environment; a config this cannot read simply). The same rules as the full plugin's
/// `resident::forward`; a config it would refuse gets the same error from its agent.
fn forwardable(command: &str, raw: &[u8]) -> Option<PathBuf> {
    if !matches!(command, "ADD" | "DEL" | "CHECK") {
        return None;
    }
    let conf: Value = serde_json::from_slice(raw).ok()?;
    let ipam = conf.as_object()?.get("ipam");
    let ipam_type = ipam
        .and_then(|i| i.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let data_dir = match ipam_type {
        "mvnet" => match ipam.and_then(|i| i.get("dataDir")) {
            None | Some(Value::Null) => None,
            Some(Value::String(d)) => Some(PathBuf::from(d)),
            Some(_) => return None,
        },
        "" => None,
        _ => return None,
    };
    Some(
        data_dir
            .or_else(|| std::env::var_os("MVNET_ROOT").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT)),
    )
}

/// `mvnet-cni-full` in this binary's directory (symlinks resolved: installed as `ipvlan` or
/// `macvlan` through a link, it is still found).
fn full_path() -> Option<PathBuf> {
    let me = std::fs::read_link("/proc/self/exe").ok()?;
    Some(me.parent()?.join(FULL))
}

/// Becomes the full plugin, with our arguments and environment, and `raw` as its stdin.
fn exec_full(full: Option<&std::path::Path>, raw: &[u8], lost: bool) -> ExitCode {
    let Some(full) = full else {
        return fail("cannot read /proc/self/exe to find mvnet-cni-full".into());
    };
    let stdin = match mvnet_forward::memfd_holding(c"mvnet-cni-config", raw) {
        Ok(f) => f,
        Err(e) => return fail(format!("cannot pass the config on to {FULL}: {e}")),
    };
    let mut args = std::env::args_os();
    let mut cmd = Command::new(full);
    if let Some(argv0) = args.next() {
        cmd.arg0(argv0);
    }
    cmd.args(args).stdin(Stdio::from(stdin));
    if lost {
        // The full plugin then prints the "try again" error it prints when it loses its
        // own agent.
        cmd.env(mvnet_forward::LOST_ENV, "1");
    }
    let e = cmd.exec();
    fail(format!(
        "cannot run {} ({e}): mvnet-cni needs {FULL} in the same directory; reinstall mvnet",
        full.display()
    ))
}

/// The spec's error on stdout, for the one failure the full plugin cannot report: it is
/// missing.
fn fail(msg: String) -> ExitCode {
    let v = serde_json::json!({"cniVersion": "1.1.0", "code": 999, "msg": msg});
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    ExitCode::from(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn constants_agree_with_the_core() {
        assert_eq!(DEFAULT_ROOT, mvnet_core::engine::DEFAULT_ROOT);
        let root = Path::new("/r");
        assert_eq!(root.join(SOCKET), crate_service().socket(root));
    }

    fn crate_service() -> mvnet_core::resident::Service {
        mvnet_core::resident::Service {
            name: "cni",
            handle: |_| unreachable!(),
            key: |_| None,
        }
    }

    #[test]
    fn only_built_in_ipam_or_none_is_forwarded_and_data_dir_picks_the_root() {
        let f = |c: &str, j: &str| forwardable(c, j.as_bytes());
        assert_eq!(
            f("ADD", r#"{"ipam":{"type":"mvnet","dataDir":"/x"}}"#),
            Some(PathBuf::from("/x"))
        );
        assert!(f("DEL", r#"{"type":"mvnet-cni"}"#).is_some());
        assert_eq!(f("ADD", r#"{"ipam":{"type":"host-local"}}"#), None);
        assert_eq!(f("ADD", r#"{"ipam":{"type":"mvnet","dataDir":7}}"#), None);
        assert_eq!(f("GC", r#"{"ipam":{"type":"mvnet"}}"#), None);
        assert_eq!(f("STATUS", r#"{}"#), None);
        assert_eq!(f("ADD", "not json"), None);
        assert_eq!(f("ADD", "[]"), None);
    }
}
