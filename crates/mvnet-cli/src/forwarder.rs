//! `mvnet`: the binary users and runtimes start. It is small on purpose (under 1 MB,
//! against 12 MB for the CLI that does the work): a runtime runs `mvnet network connect`
//! for every container, and when the state root's resident agent runs, all this process
//! does is hand the command to it and print the answer. A small static binary starts and
//! exits in a fraction of the time of the big one.
//!
//! Everything else is the full CLI's, `mvnet-full`, installed beside this one: this process
//! replaces itself with it (exec, same arguments, environment and stdin) for every other
//! command, when no agent answers, or when the agent ended mid-command. The full CLI then
//! decides exactly as before, so a forwarded command and one the full CLI runs itself
//! print the same bytes. (The CNI plugin is split the same way: mvnet-cni/src/forwarder.rs.)

mod forwardable;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use mvnet_forward::Forwarded;

/// Memory that is never freed: this process exits within a millisecond (see the arena's
/// notes).
#[global_allocator]
static ALLOCATOR: mvnet_forward::arena::Arena<std::alloc::System> =
    mvnet_forward::arena::Arena(std::alloc::System);

/// The full CLI, beside this binary.
const FULL: &str = "mvnet-full";

fn main() -> ExitCode {
    let full = full_path();
    // Arguments that are not UTF-8 go to the full CLI, which reports them.
    let args: Option<Vec<String>> = std::env::args_os().map(|a| a.into_string().ok()).collect();
    let Some((args, root)) = args.and_then(|a| forwardable::forwardable(&a).map(|r| (a, r))) else {
        return exec_full(full.as_deref(), false);
    };
    let exe = full.as_deref().and_then(mvnet_forward::file_identity);
    match mvnet_forward::forward(&root.join(forwardable::SOCKET), exe, args, b"") {
        Forwarded::Served(reply) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(reply.stdout.as_bytes());
            let _ = out.flush();
            ExitCode::from(reply.status)
        }
        Forwarded::NotServed { .. } => exec_full(full.as_deref(), false),
        Forwarded::Lost => exec_full(full.as_deref(), true),
    }
}

/// `mvnet-full` in this binary's directory (symlinks resolved).
fn full_path() -> Option<PathBuf> {
    let me = std::fs::read_link("/proc/self/exe").ok()?;
    Some(me.parent()?.join(FULL))
}

/// Becomes the full CLI, with our arguments (argv[0] too: its messages say `mvnet`),
/// environment and stdin.
fn exec_full(full: Option<&Path>, lost: bool) -> ExitCode {
    let Some(full) = full else {
        eprintln!("mvnet: error: cannot read /proc/self/exe to find {FULL}");
        return ExitCode::from(1);
    };
    let mut args = std::env::args_os();
    let mut cmd = Command::new(full);
    if let Some(argv0) = args.next() {
        cmd.arg0(argv0);
    }
    cmd.args(args);
    if lost {
        // The full CLI then prints the error it prints when it loses its own agent.
        cmd.env(mvnet_forward::LOST_ENV, "1");
    }
    let e = cmd.exec();
    eprintln!(
        "mvnet: error: cannot run {} ({e}): mvnet needs {FULL} in the same directory; reinstall mvnet",
        full.display()
    );
    ExitCode::from(1)
}
