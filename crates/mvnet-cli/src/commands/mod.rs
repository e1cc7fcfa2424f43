mod container;
mod lab;
mod network;
mod pool;
mod system;

use mvnet_core::Result;

use crate::cli::{Cli, Command};

/// Runs one command; returns the process exit code.
/// `root_given`: `--root` was on the command line (not from MVNET_ROOT or the default).
pub fn dispatch(cli: Cli, root_given: bool) -> Result<u8> {
    mvnet_core::timing::begin();
    let done = dispatch_timed(cli, root_given);
    // `MVNET_TIMING=1`: the engine's phases of this command.
    let phases = mvnet_core::timing::take();
    if !phases.is_empty() {
        let parts: Vec<String> = phases
            .iter()
            .map(|(w, ms)| format!("{w}={ms:.3}ms"))
            .collect();
        mvnet_core::to_stderr(&format!("mvnet timing: {}", parts.join(" ")));
    }
    done
}

fn dispatch_timed(cli: Cli, root_given: bool) -> Result<u8> {
    // What needs neither root nor a store.
    match &cli.command {
        Command::Completion { shell } => return system::completion(*shell),
        Command::Man { dir } => return system::man_pages(dir),
        Command::Version { format } => return system::version(format),
        _ => {}
    }
    if let Command::Doctor { parent, format } = &cli.command {
        // The doctor reports missing privileges itself, as one of its checks.
        if mvnet_core::kernel::require_privileges().is_err() {
            return doctor(&[], parent.as_deref(), format);
        }
    }
    mvnet_core::kernel::require_privileges()?;
    mvnet_core::timing::mark("start");
    match cli.command {
        Command::Lab(_) | Command::Demo { .. } if root_given => Err(mvnet_core::invalid!(
            "--root does not apply to lab and demo: a lab keeps its own state in /run/mvnet/lab/NAME; leave --root out"
        )),
        Command::Lab(cmd) => lab::run(cmd),
        Command::Demo { keep, name } => crate::demo::run(&name, keep),
        // Background commands whose state root was removed meanwhile (a lab torn down):
        // nothing to do, and the root must not come back. (The systemd unit's keeper,
        // `--stay`, is started on purpose and may create it.)
        Command::Monitor { .. } | Command::FleetKeeper { stay: false }
            if !cli.root.join("mvnet.db").exists() =>
        {
            Ok(0)
        }
        other => {
            let cli_root = cli.root.clone();
            let mut engine = mvnet_core::resident::engine(&cli.root)?;
            mvnet_core::timing::mark("store-open");
            match other {
                Command::Network(cmd) => network::run(&mut engine, cmd),
                Command::Run(args) => container::run(&mut engine, args),
                Command::Exec { container, command } => {
                    container::exec(&mut engine, &container, &command)
                }
                Command::Ps {
                    all,
                    format,
                    filter,
                    quiet,
                } => container::ps(&mut engine, all, &format, &filter, quiet),
                Command::Inspect { format, containers } => {
                    container::inspect(&mut engine, &format, &containers)
                }
                Command::Stop { time, containers } => {
                    container::stop(&mut engine, time, &containers)
                }
                Command::Rm { force, containers } => container::rm(&mut engine, force, &containers),
                Command::Logs { container } => container::logs(&mut engine, &container),
                Command::Doctor { parent, format } => {
                    let nets = engine.networks()?;
                    doctor(&nets, parent.as_deref(), &format)
                }
                Command::Restore => {
                    for line in engine.restore()? {
                        println!("{line}");
                    }
                    // Shared pools: etcd and this host's rows agree again (a pool whose
                    // etcd does not answer is reported, and the keeper retries).
                    match engine.fleet_reconcile() {
                        Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
                        Err(e) => println!("shared pools not reconciled: {e}"),
                    }
                    Ok(0)
                }
                Command::Pool(cmd) => pool::run(&mut engine, cmd),
                Command::FleetKeeper { stay } => {
                    drop(engine);
                    mvnet_core::fleet::keeper::run(&cli_root, stay)?;
                    Ok(0)
                }
                Command::Info { format } => system::info(&mut engine, &format),
                Command::System(crate::cli::SystemCmd::Prune { force: _ }) => {
                    system::prune(&mut engine)
                }
                Command::Completion { .. } | Command::Man { .. } | Command::Version { .. } => {
                    unreachable!("handled above")
                }
                Command::Monitor { id } => {
                    mvnet_core::runtime::monitor(&mut engine, &id)?;
                    Ok(0)
                }
                Command::Lab(_) | Command::Demo { .. } => unreachable!("handled above"),
            }
        }
    }
}

fn doctor(nets: &[mvnet_core::model::Network], parent: Option<&str>, format: &str) -> Result<u8> {
    let checks = mvnet_core::doctor::run(parent, nets)?;
    if format == "json" {
        print_json(&serde_json::to_value(&checks).expect("checks serialize"));
    } else {
        for c in &checks {
            println!("{:<4}  {}: {}", c.status.to_string(), c.check, c.detail);
            if !c.fix.is_empty() {
                println!("      fix: {}", c.fix);
            }
        }
    }
    Ok(if mvnet_core::doctor::passed(&checks) {
        0
    } else {
        1
    })
}

/// Prints JSON the way `docker inspect` does: an indented array.
pub fn print_json(v: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("JSON values serialize")
    );
}

/// Parses an optional IP flag with a message naming the flag.
pub fn parse_ip(flag: &str, v: &Option<String>) -> Result<Option<std::net::IpAddr>> {
    v.as_ref()
        .map(|s| {
            s.parse().map_err(|_| {
                mvnet_core::invalid!(
                    "invalid {flag} '{s}': expected an IP address such as 10.103.19.50"
                )
            })
        })
        .transpose()
}
