//! `mvnet-cni`: a CNI plugin (spec 1.1.0, and 0.1.0-1.0.0 configs) over the mvnet core. A user
//! of the reference macvlan plugin switches by changing "type" to "mvnet-cni".

mod conf;
mod error;
mod ipam;
mod plugin;
mod result;

use std::io::Read;
use std::process::ExitCode;

use conf::{Command, Env, NetConf};
use error::{code, CniError};

fn main() -> ExitCode {
    mvnet_core::store::keeper::enable();
    let env = match Env::from_vars(|k| std::env::var(k).ok()) {
        Ok(env) => env,
        Err(e) if std::env::var_os("CNI_COMMAND").is_none() => {
            // Run by a person: say what this is, like the reference plugins do.
            println!("CNI mvnet-cni plugin version {}", env!("CARGO_PKG_VERSION"));
            println!(
                "CNI protocol versions supported: {}",
                conf::SUPPORTED_VERSIONS.join(", ")
            );
            let _ = e;
            return ExitCode::SUCCESS;
        }
        Err(e) => return fail(&e, "1.1.0"),
    };
    let mut raw = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut raw) {
        return fail(
            &CniError::new(code::IO, format!("cannot read the config from stdin: {e}")),
            "1.1.0",
        );
    }
    if env.command == Command::Version {
        let conf = NetConf::parse(&raw).ok();
        println!("{}", plugin::version(conf.as_ref()));
        return ExitCode::SUCCESS;
    }
    let mut conf = match NetConf::parse(&raw) {
        Ok(c) => c,
        Err(e) => return fail(&e, "1.1.0"),
    };
    // Installed under the reference's name `ipvlan`, one binary serves both drivers.
    let invoked_as = std::env::args().next().unwrap_or_default();
    if std::path::Path::new(&invoked_as)
        .file_name()
        .is_some_and(|n| n == "ipvlan")
    {
        conf.driver = "ipvlan".into();
    }
    let outcome = match env.command {
        Command::Add => plugin::add(&env, &conf, &raw).map(Some),
        Command::Del => plugin::del(&env, &conf, &raw).map(|_| None),
        Command::Check => plugin::check(&env, &conf, &raw).map(|_| None),
        Command::Status => plugin::status(&env, &conf, &raw).map(|_| None),
        Command::Gc => plugin::gc(&env, &conf, &raw).map(|_| None),
        Command::Version => unreachable!("handled above"),
    };
    match outcome {
        Ok(Some(v)) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&v).expect("JSON values serialize")
            );
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => fail(&e, conf.version()),
    }
}

/// Spec errors go to stdout as JSON, with a non-zero exit.
fn fail(e: &CniError, version: &str) -> ExitCode {
    println!(
        "{}",
        serde_json::to_string_pretty(&e.to_json(version)).expect("JSON values serialize")
    );
    ExitCode::FAILURE
}
