//! The plugin's resident fast path (`mvnet_core::resident`): one agent per state root
//! serves ADD, DEL and CHECK, and the short-lived plugin process only forwards its request.
//!
//! The agent runs the same code as the plugin (`crate::run`), so stdout and the exit status
//! are byte-for-byte what the plugin prints itself (the tests compare both paths), and the
//! store's transactions make it as atomic. Forwarded: ADD, DEL and CHECK with the built-in
//! IPAM or none (a delegated IPAM plugin reads our environment, so it runs here). An agent
//! that ends after taking a request makes the command fail with "try again" (the runtime
//! then runs DEL, which is idempotent).

use std::path::{Path, PathBuf};

use mvnet_core::resident::{self, Forwarded, Reply, Request, Service};

use crate::conf::NetConf;
use crate::error::{code, CniError};

/// Tests: fail instead of doing the work here when no agent serves the command.
const REQUIRED_ENV: &str = "MVNET_AGENT_REQUIRED";

pub static SERVICE: Service = Service {
    name: "cni",
    handle,
    key,
};

/// The container's interface a command acts on: the agent runs ADD, DEL and CHECK of one
/// interface in turn (`mvnet_core::resident::Service::key`), as the spec has runtimes do.
fn key(req: &Request) -> Option<String> {
    Some(format!(
        "{} {}",
        req.var("CNI_CONTAINERID")?,
        req.var("CNI_IFNAME").unwrap_or_default()
    ))
}

fn handle(req: &Request) -> Reply {
    let argv0 = req.args.first().cloned().unwrap_or_default();
    crate::run(&|k| req.var(k), &req.stdin, &argv0)
}

/// What `main` does with a command.
pub enum Route {
    Served(Reply),
    /// Do it here; then start the agent of this root for the next command, if given.
    Here {
        start_agent: Option<PathBuf>,
    },
}

/// Hands this command to the state root's agent if one can serve it.
pub fn forward(raw: &[u8], argv0: &str) -> Route {
    let here = Route::Here { start_agent: None };
    let command = std::env::var("CNI_COMMAND").unwrap_or_default();
    // A config we cannot read gets its error from the plugin itself.
    let conf = NetConf::parse(raw).ok();
    let root = conf
        .as_ref()
        .and_then(|c| crate::plugin::state_root(c).ok());
    let eligible = matches!(command.as_str(), "ADD" | "DEL" | "CHECK")
        && conf
            .as_ref()
            .is_some_and(|c| matches!(c.ipam_type(), "mvnet" | ""));
    // The forwarder (`mvnet-cni`) lost the agent that had taken this command: say so, as
    // when it happens here.
    let lost = std::env::var_os(mvnet_forward::LOST_ENV).is_some();
    let route = match (eligible, root) {
        (true, Some(root)) => {
            let forwarded = if lost {
                Forwarded::Lost
            } else {
                resident::forward(&SERVICE, &root, vec![argv0.to_string()], raw)
            };
            match forwarded {
                Forwarded::Served(reply) => Route::Served(reply),
                Forwarded::NotServed { start_agent } => Route::Here {
                    start_agent: start_agent.then_some(root),
                },
                Forwarded::Lost => Route::Served(crate::failure(
                    &CniError::new(
                        code::TRY_AGAIN,
                        "the mvnet-cni agent ended while it served this command; run DEL, then try again",
                    ),
                    conf.as_ref().map_or("1.1.0", |c| c.version()),
                )),
            }
        }
        _ => here,
    };
    match route {
        Route::Here { .. } if std::env::var_os(REQUIRED_ENV).is_some() => {
            Route::Served(crate::failure(
                &CniError::new(
                    code::TRY_AGAIN,
                    format!("{REQUIRED_ENV} is set and no mvnet-cni agent served the command"),
                ),
                "1.1.0",
            ))
        }
        other => other,
    }
}

/// Starts `root`'s agent unless one runs.
pub fn start(root: &Path) {
    resident::start(&SERVICE, root);
}
