use std::time::Duration;

use mvnet_core::engine::Engine;
use mvnet_core::model::{ContainerStatus, Endpoint, Network};
use mvnet_core::runtime::{self, RunRequest};
use mvnet_core::{ids, views, Result};

use super::{parse_ip, print_json};
use crate::cli::RunArgs;
use crate::filter::Filters;
use crate::format::Format;

pub fn run(engine: &mut Engine, a: RunArgs) -> Result<u8> {
    let req = RunRequest {
        name: a.name,
        network: a.network,
        ipv4: parse_ip("--ip", &a.ip)?,
        ipv6: parse_ip("--ip6", &a.ip6)?,
        mac: a.mac_address.map(|m| m.parse()).transpose()?,
        force: a.force,
        ifname: a.ifname,
        hostname: a.hostname,
        command: a.command,
        auto_remove: a.rm,
        labels: a.label,
    };
    let c = runtime::create(engine, &req)?;
    if a.detach {
        runtime::run_detached(engine, &c)?;
        println!("{}", c.id);
        Ok(0)
    } else {
        let code = runtime::run_foreground(engine, c)?;
        Ok(code.clamp(0, 255) as u8)
    }
}

pub fn exec(engine: &mut Engine, name: &str, command: &[String]) -> Result<u8> {
    match runtime::exec(engine, name, command)? {}
}

/// Each endpoint of a container with its network.
fn attachments(engine: &mut Engine, container_id: &str) -> Result<Vec<(Endpoint, Network)>> {
    let mut out = Vec::new();
    for ep in engine.endpoints_of_container(container_id)? {
        let net = engine.network(&ep.network_id)?;
        out.push((ep, net));
    }
    Ok(out)
}

/// Docker's column names for `ps --format 'table ...'`.
const PS_HEADERS: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Names", "NAMES"),
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("Status", "STATUS"),
    ("State", "STATE"),
    ("Networks", "NETWORKS"),
];

pub fn ps(
    engine: &mut Engine,
    all: bool,
    format: &str,
    filter: &[String],
    quiet: bool,
) -> Result<u8> {
    let filters = Filters::parse(filter, &["name", "network", "status", "label", "id"])?;
    let mut rows = Vec::new();
    for c in engine.containers()? {
        let c = runtime::refresh(engine, c)?;
        // As in Docker, a status filter shows stopped containers without -a.
        let status_filtered = filter.iter().any(|f| f.starts_with("status="));
        if !all && !status_filtered && c.status != ContainerStatus::Running {
            continue;
        }
        let att = attachments(engine, &c.id)?;
        let pass = filters.accept(|k, v| match k {
            "name" => c.name.contains(v),
            "id" => c.id.starts_with(v),
            "network" => att.iter().any(|(_, n)| n.name == v || n.id.starts_with(v)),
            "status" => c.status.to_string() == v,
            "label" => crate::filter::label_matches(&c.labels, v),
            _ => false,
        });
        if !pass {
            continue;
        }
        let nets: Vec<String> = att.into_iter().map(|(_, n)| n.name).collect();
        rows.push((c, nets));
    }
    let fmt = Format::parse(format);
    if quiet {
        rows.iter()
            .for_each(|(c, _)| println!("{}", ids::short(&c.id)));
    } else if fmt != Format::Default {
        let objects: Vec<_> = rows
            .iter()
            .map(|(c, n)| views::container_row(c, n))
            .collect();
        crate::format::print(&fmt, &objects, PS_HEADERS)?;
    } else {
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|(c, n)| {
                let mut cmd = c.command.join(" ");
                if cmd.len() > 24 {
                    cmd.truncate(21);
                    cmd.push_str("...");
                }
                vec![
                    ids::short(&c.id).to_string(),
                    format!("\"{cmd}\""),
                    c.created
                        .chars()
                        .take(19)
                        .collect::<String>()
                        .replace('T', " "),
                    views::status_text(c),
                    n.join(","),
                    c.name.clone(),
                ]
            })
            .collect();
        crate::table::print(
            &[
                "CONTAINER ID",
                "COMMAND",
                "CREATED",
                "STATUS",
                "NETWORKS",
                "NAMES",
            ],
            &table,
        );
    }
    Ok(0)
}

pub fn inspect(engine: &mut Engine, format: &str, names: &[String]) -> Result<u8> {
    let mut out = Vec::new();
    for name in names {
        let found = engine.container(name)?;
        let c = runtime::refresh(engine, found)?;
        let att = attachments(engine, &c.id)?;
        out.push(views::container_inspect(&c, &att));
    }
    match Format::parse(format) {
        Format::Default => print_json(&serde_json::Value::Array(out)),
        fmt => crate::format::print(&fmt, &out, &[])?,
    }
    Ok(0)
}

/// Applies `op` to each name, printing the name on success (as Docker does) and every error;
/// the exit code says whether all succeeded.
fn each(names: &[String], mut op: impl FnMut(&str) -> Result<()>) -> Result<u8> {
    let mut failed = false;
    for name in names {
        match op(name) {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("mvnet: error: {}", mvnet_core::one_line(&e.to_string()));
                failed = true;
            }
        }
    }
    Ok(failed as u8)
}

pub fn stop(engine: &mut Engine, secs: u64, names: &[String]) -> Result<u8> {
    each(names, |n| {
        runtime::stop(engine, n, Duration::from_secs(secs)).map(|_| ())
    })
}

pub fn rm(engine: &mut Engine, force: bool, names: &[String]) -> Result<u8> {
    let mut outcomes = runtime::remove_many(engine, names, force).into_iter();
    each(names, |_| {
        outcomes.next().expect("one outcome per name").map(|_| ())
    })
}

pub fn logs(engine: &mut Engine, name: &str) -> Result<u8> {
    let c = engine.container(name)?;
    let path = runtime::log_path(engine, &c)?;
    match std::fs::read(&path) {
        Ok(bytes) => {
            use std::io::Write;
            std::io::stdout()
                .write_all(&bytes)
                .map_err(|e| mvnet_core::Error::io("write logs", e))?;
            Ok(0)
        }
        Err(_) => Err(mvnet_core::invalid!(
            "container {} has no logs: only containers started with -d keep their output",
            c.name
        )),
    }
}
