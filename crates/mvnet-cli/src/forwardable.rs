//! Which `mvnet` commands the state root's resident agent may serve. One file, included by
//! both binaries: the small forwarder (`mvnet`, src/forwarder.rs) and the full CLI
//! (`mvnet-full`, src/main.rs), which must decide alike.

use std::path::PathBuf;

/// `mvnet_core::engine::DEFAULT_ROOT` (the forwarder does not link the core; a test in the
/// full CLI checks they agree).
pub const DEFAULT_ROOT: &str = "/var/lib/mvnet";
/// The CLI agent's socket in a state root (`mvnet_core::resident::Service::socket` of the
/// "cli" service; checked by the same test).
#[allow(dead_code)] // the full CLI uses it only in a test
pub const SOCKET: &str = "cli-agent.sock";

/// The state root of a command the agent may serve: `network connect|disconnect` with
/// no `--root` and no help. They are what a runtime calls per container.
pub fn forwardable(args: &[String]) -> Option<PathBuf> {
    let shape = args.len() > 3
        && args[1] == "network"
        && matches!(args[2].as_str(), "connect" | "disconnect");
    let plain = !args
        .iter()
        .any(|a| a == "-h" || a == "--help" || a == "--root" || a.starts_with("--root="));
    (shape && plain).then(|| {
        std::env::var_os("MVNET_ROOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT))
    })
}
