//! `mvnet-cni`: a CNI plugin (spec 1.1.0, and 0.1.0-1.0.0 configs) over the mvnet core. A user
//! of the reference macvlan plugin switches by changing "type" to "mvnet-cni".
//!
//! Two ways to serve a command, with byte-for-byte the same stdout and exit status: here,
//! in this process, or by the state root's resident agent (`resident`), which does the
//! same work from a warm process and only needs this one to forward the request.

mod conf;
mod error;
mod ipam;
mod plugin;
mod resident;
mod result;

use std::io::{Read, Write};
use std::process::ExitCode;

use conf::{Command, Env, NetConf};

#[global_allocator]
static ALLOCATOR: mvnet_core::alloc::CachingAlloc = mvnet_core::alloc::CachingAlloc;
use error::{code, CniError};

pub use mvnet_core::resident::Reply;

fn main() -> ExitCode {
    mvnet_core::store::keeper::enable();
    mvnet_core::resident::run_if_agent(&resident::SERVICE);
    if std::env::var_os("CNI_COMMAND").is_none() {
        // Run by a person: say what this is, like the reference plugins do.
        println!("CNI mvnet-cni plugin version {}", env!("CARGO_PKG_VERSION"));
        println!(
            "CNI protocol versions supported: {}",
            conf::SUPPORTED_VERSIONS.join(", ")
        );
        return ExitCode::SUCCESS;
    }
    let mut raw = Vec::new();
    let reply = match std::io::stdin().read_to_end(&mut raw) {
        Err(e) => failure(
            &CniError::new(code::IO, format!("cannot read the config from stdin: {e}")),
            "1.1.0",
        ),
        Ok(_) => {
            let argv0 = std::env::args().next().unwrap_or_default();
            match resident::forward(&raw, &argv0) {
                resident::Route::Served(reply) => reply,
                resident::Route::Here { start_agent } => {
                    let reply = run(&|k| std::env::var(k).ok(), &raw, &argv0);
                    if let Some(root) = start_agent {
                        // For the next command: this one is done, only our exit waits.
                        let _ = std::io::stdout().write_all(reply.stdout.as_bytes());
                        let _ = std::io::stdout().flush();
                        resident::start(&root);
                        return ExitCode::from(reply.status);
                    }
                    reply
                }
            }
        }
    };
    let _ = std::io::stdout().write_all(reply.stdout.as_bytes());
    ExitCode::from(reply.status)
}

/// One CNI command: the environment (through `var`), the config on stdin and the name we
/// were run as. Used by `main` and by the resident agent alike.
pub fn run(var: &dyn Fn(&str) -> Option<String>, raw: &[u8], argv0: &str) -> Reply {
    let env = match Env::from_vars(var) {
        Ok(env) => env,
        Err(e) => return failure(&e, "1.1.0"),
    };
    if env.command == Command::Version {
        let conf = NetConf::parse(raw).ok();
        return Reply {
            stdout: format!("{}\n", plugin::version(conf.as_ref())),
            status: 0,
        };
    }
    let mut conf = match NetConf::parse(raw) {
        Ok(c) => c,
        Err(e) => return failure(&e, "1.1.0"),
    };
    // Installed under the reference's name `ipvlan`, one binary serves both drivers.
    if std::path::Path::new(argv0)
        .file_name()
        .is_some_and(|n| n == "ipvlan")
    {
        conf.driver = "ipvlan".into();
    }
    let outcome = match env.command {
        Command::Add => plugin::add(&env, &conf, raw).map(Some),
        Command::Del => plugin::del(&env, &conf, raw).map(|_| None),
        Command::Check => plugin::check(&env, &conf, raw).map(|_| None),
        Command::Status => plugin::status(&env, &conf, raw).map(|_| None),
        Command::Gc => plugin::gc(&env, &conf, raw).map(|_| None),
        Command::Version => unreachable!("handled above"),
    };
    match outcome {
        Ok(Some(v)) => Reply {
            stdout: format!(
                "{}\n",
                serde_json::to_string_pretty(&v).expect("JSON values serialize")
            ),
            status: 0,
        },
        Ok(None) => Reply {
            stdout: String::new(),
            status: 0,
        },
        Err(e) => failure(&e, conf.version()),
    }
}

/// Spec errors go to stdout as JSON, with a non-zero exit.
fn failure(e: &CniError, version: &str) -> Reply {
    Reply {
        stdout: format!(
            "{}\n",
            serde_json::to_string_pretty(&e.to_json(version)).expect("JSON values serialize")
        ),
        status: 1,
    }
}
