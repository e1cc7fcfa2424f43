//! `mvnet`: Docker-style commands over the mvnet core. This crate only parses arguments and
//! prints; every decision lives in mvnet-core.

mod cli;
mod commands;
mod demo;
mod filter;
mod format;
mod table;

use std::process::ExitCode;

fn main() -> ExitCode {
    mvnet_core::store::keeper::enable();
    // Die quietly on a closed pipe (`mvnet ... | head`), like other Unix tools.
    // SAFETY: sets a signal disposition before any thread exists; no handler code is involved.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    use clap::{CommandFactory, FromArgMatches};
    let matches = cli::Cli::command().get_matches();
    let root_given = matches.value_source("root") == Some(clap::parser::ValueSource::CommandLine);
    let args = match cli::Cli::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MVNET_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
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
