//! `mvnet`: Docker-style commands over the mvnet core. This crate only parses arguments and
//! prints; every decision lives in mvnet-core.

mod cli;
mod commands;
mod demo;
mod filter;
mod format;
mod forwardable;
mod quick_parse;
mod table;

use std::io::Write;
use std::process::ExitCode;

use mvnet_core::resident::{self, Forwarded, Reply, Request, Service};

/// Most `mvnet` processes live a millisecond (a forwarded `network connect`): their memory
/// comes from an arena that is never freed (no mmap/munmap per buffer, see the arena's
/// notes), and then from the agent's caching allocator.
#[global_allocator]
static ALLOCATOR: mvnet_forward::arena::Arena<mvnet_core::alloc::CachingAlloc> =
    mvnet_forward::arena::Arena(mvnet_core::alloc::CachingAlloc);

/// `mvnet network connect` and `disconnect` are served by the state root's resident agent
/// when one runs (`mvnet_core::resident`): they are what a runtime calls per container,
/// and most of their cost was this process opening the store.
static AGENT: Service = Service {
    name: "cli",
    handle: agent_handle,
    key: agent_key,
};

/// The container (or namespace) a forwarded `network connect|disconnect` acts on: the agent
/// runs the commands of one target in turn (`mvnet_core::resident::Service::key`).
fn agent_key(req: &Request) -> Option<String> {
    let args = quick_parse::parse(&req.args).or_else(|| parse_in_agent(&req.args).ok())?;
    match args.command {
        cli::Command::Network(
            cli::NetworkCmd::Connect {
                container, netns, ..
            }
            | cli::NetworkCmd::Disconnect {
                container, netns, ..
            },
        ) => container.or(netns),
        _ => None,
    }
}

/// In the agent: the command, as `main` runs it, with its stderr lines captured.
fn agent_handle(req: &Request) -> Reply {
    let quiet = |status| Reply {
        stdout: String::new(),
        status,
    };
    let t = std::time::Instant::now();
    let parsed = quick_parse::parse(&req.args).map_or_else(|| parse_in_agent(&req.args), Ok);
    if req.env.contains_key("MVNET_TIMING") {
        mvnet_core::to_stderr(&format!(
            "mvnet agent parse={:.3}ms",
            t.elapsed().as_secs_f64() * 1e3
        ));
    }
    let args = match parsed {
        Ok(a) => a,
        Err(e) => {
            mvnet_core::to_stderr(e.render().to_string().trim_end());
            return quiet(2);
        }
    };
    match commands::dispatch(args, false) {
        Ok(code) => quiet(code),
        Err(e) => {
            mvnet_core::to_stderr(&format!(
                "mvnet: error: {}",
                mvnet_core::one_line(&e.to_string())
            ));
            quiet(1)
        }
    }
}

thread_local! {
    /// The command line's definition, built once per agent worker: building clap's whole
    /// command tree took 0.4 ms of every forwarded command.
    static COMMAND: std::cell::RefCell<Option<(String, clap::Command)>> = const { std::cell::RefCell::new(None) };
}

/// `Cli::try_parse_from`, over this worker's prebuilt command tree (same errors). Clap
/// takes the program's name in its messages from the first command it parses, so the tree
/// is built again for a caller that ran the binary under another name.
fn parse_in_agent(args: &[String]) -> Result<cli::Cli, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let name = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    COMMAND.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(n, _)| *n != name) {
            *c = Some((name, cli::Cli::command()));
        }
        let cmd = &mut c.as_mut().expect("set above").1;
        let matches = cmd.try_get_matches_from_mut(args)?;
        cli::Cli::from_arg_matches(&matches).map_err(|e| e.format(cmd))
    })
}

/// Log lines go where the request's stderr goes (`mvnet_core::to_stderr`).
struct LogLines;

impl Write for LogLines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        mvnet_core::to_stderr(String::from_utf8_lossy(buf).trim_end());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_env("MVNET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"))
}

fn main() -> ExitCode {
    mvnet_core::store::keeper::enable();
    if std::env::var_os(format!("MVNET_AGENT_{}_ROOT", AGENT.name.to_uppercase())).is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(log_filter())
            .with_writer(|| LogLines)
            .without_time()
            .with_ansi(false)
            .init();
    }
    resident::run_if_agent(&AGENT);
    // Die quietly on a closed pipe (`mvnet ... | head`), like other Unix tools.
    // SAFETY: sets a signal disposition before any thread exists; no handler code is involved.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let raw_args: Vec<String> = std::env::args().collect();
    let mut start_agent = None;
    if let Some(root) = forwardable::forwardable(&raw_args) {
        // The forwarder (`mvnet`) lost the agent that had taken this command: say so, as
        // when it happens here.
        let forwarded = if std::env::var_os(mvnet_forward::LOST_ENV).is_some() {
            Forwarded::Lost
        } else {
            resident::forward(&AGENT, &root, raw_args, b"")
        };
        match forwarded {
            Forwarded::Served(reply) => {
                let _ = std::io::stdout().write_all(reply.stdout.as_bytes());
                return ExitCode::from(reply.status);
            }
            Forwarded::Lost => {
                eprintln!("mvnet: error: the mvnet agent ended while it ran this command; see `mvnet network inspect` for what it did, then run it again");
                return ExitCode::from(1);
            }
            Forwarded::NotServed { start_agent: true } => start_agent = Some(root),
            Forwarded::NotServed { start_agent: false } => {}
        }
    }
    let code = run();
    if let Some(root) = start_agent {
        // For the next command; this one's output is out.
        resident::start(&AGENT, &root);
    }
    code
}

fn run() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let matches = cli::Cli::command().get_matches();
    let root_given = matches.value_source("root") == Some(clap::parser::ValueSource::CommandLine);
    let args = match cli::Cli::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    match commands::dispatch(args, root_given) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("mvnet: error: {}", mvnet_core::one_line(&e.to_string()));
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_forwarders_constants_agree_with_the_core() {
        assert_eq!(forwardable::DEFAULT_ROOT, mvnet_core::engine::DEFAULT_ROOT);
        let root = Path::new("/r");
        assert_eq!(root.join(forwardable::SOCKET), AGENT.socket(root));
    }

    #[test]
    fn the_agent_runs_the_commands_of_one_target_in_turn() {
        let key = |a: &str| {
            agent_key(&Request {
                env: Default::default(),
                args: a.split(' ').map(String::from).collect(),
                stdin: Vec::new(),
            })
        };
        assert_eq!(key("mvnet network connect n c"), Some("c".into()));
        assert_eq!(key("mvnet network disconnect n c"), Some("c".into()));
        assert_eq!(
            key("mvnet network connect --ip 10.0.0.2 n --netns /p"),
            Some("/p".into())
        );
        // A form left to clap has its key too; help has none.
        assert_eq!(key("mvnet network connect n -- c"), Some("c".into()));
        assert_eq!(key("mvnet network connect -h"), None);
        assert_eq!(key("mvnet network ls"), None);
    }

    #[test]
    fn only_plain_network_connect_and_disconnect_are_forwarded() {
        let f = |a: &str| {
            let v: Vec<String> = a.split(' ').map(String::from).collect();
            forwardable::forwardable(&v).is_some()
        };
        assert!(f("mvnet network connect n c"));
        assert!(f("mvnet network disconnect n --netns /p"));
        assert!(!f("mvnet network connect"));
        assert!(!f("mvnet network create n x"));
        assert!(!f("mvnet network connect n c --help"));
        assert!(!f("mvnet network connect n c --root=/x"));
        assert!(!f("mvnet network connect --root /x n c"));
        assert!(!f("mvnet run network connect n"));
    }
}
