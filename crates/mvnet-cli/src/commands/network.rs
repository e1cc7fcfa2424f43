use mvnet_core::engine::{AttachOptions, AttachTarget, Engine};
use mvnet_core::model::CreateNetworkRequest;
use mvnet_core::{ids, views, Result};

use super::{parse_ip, print_json};
use crate::filter::{label_matches, Filters};
use crate::format::Format;

/// Docker's column names for `network ls --format 'table ...'`.
const NETWORK_HEADERS: &[(&str, &str)] = &[
    ("ID", "NETWORK ID"),
    ("Name", "NAME"),
    ("Driver", "DRIVER"),
    ("Scope", "SCOPE"),
    ("IPv6", "IPV6"),
    ("Internal", "INTERNAL"),
    ("Labels", "LABELS"),
    ("CreatedAt", "CREATED AT"),
    ("Parent", "PARENT"),
    ("Owner", "OWNER"),
];
use crate::cli::NetworkCmd;

pub fn run(engine: &mut Engine, cmd: NetworkCmd) -> Result<u8> {
    match cmd {
        NetworkCmd::Create(a) => {
            let req = CreateNetworkRequest {
                id: None,
                name: a.name,
                driver: a.driver,
                subnets: a.subnet,
                gateways: a.gateway,
                ip_ranges: a.ip_range,
                aux_addresses: a.aux_address,
                ipv6: a.ipv6,
                ipv4_disabled: !a.ipv4,
                internal: a.internal,
                labels: a.label,
                options: a.opt,
                host_access: a.host_access,
                host_access_ip: a.host_access_ip,
                ipam_driver: a.ipam_driver,
                ipam_options: a.ipam_opt,
            };
            let (net, notices) = engine.create_network(&req)?;
            for n in notices {
                eprintln!("mvnet: {n}");
            }
            println!("{}", net.id);
        }
        NetworkCmd::Ls {
            format,
            filter,
            quiet,
        } => {
            let filters =
                Filters::parse(&filter, &["name", "id", "driver", "label", "scope", "type"])?;
            let nets: Vec<_> = engine
                .networks()?
                .into_iter()
                .filter(|n| {
                    filters.accept(|k, v| match k {
                        "name" => n.name.contains(v),
                        "id" => n.id.starts_with(v),
                        "driver" => n.driver.to_string() == v,
                        "label" => label_matches(&n.labels, v),
                        "scope" => v == "local",
                        // Docker's built-in networks (bridge, host, none) do not exist here.
                        "type" => v == "custom",
                        _ => false,
                    })
                })
                .collect();
            let present = engine.parents_present()?;
            let fmt = Format::parse(&format);
            if quiet {
                nets.iter().for_each(|n| println!("{}", ids::short(&n.id)));
            } else if fmt != Format::Default {
                let rows: Vec<_> = nets
                    .iter()
                    .map(|n| views::network_row(n, present.get(&n.id).copied().unwrap_or(false)))
                    .collect();
                crate::format::print(&fmt, &rows, NETWORK_HEADERS)?;
            } else {
                let rows: Vec<Vec<String>> = nets
                    .iter()
                    .map(|n| {
                        let missing = !present.get(&n.id).copied().unwrap_or(false);
                        vec![
                            ids::short(&n.id).to_string(),
                            n.name.clone(),
                            n.driver.to_string(),
                            "local".into(),
                            if missing {
                                format!("{} (missing)", n.options.parent)
                            } else {
                                n.options.parent.clone()
                            },
                            views::network_owner(n).to_string(),
                        ]
                    })
                    .collect();
                crate::table::print(
                    &["NETWORK ID", "NAME", "DRIVER", "SCOPE", "PARENT", "OWNER"],
                    &rows,
                );
            }
        }
        NetworkCmd::Inspect { format, networks } => {
            // Resolve all first: an unknown name prints nothing but the error, as Docker does.
            let mut out = Vec::new();
            for name in &networks {
                let net = engine.network(name)?;
                let eps = engine.endpoints_of_network(&net.id)?;
                let conflicts = engine.lan_conflicts(&net)?;
                out.push(views::network_inspect(&net, &eps, &conflicts));
            }
            match Format::parse(&format) {
                Format::Default => print_json(&serde_json::Value::Array(out)),
                fmt => crate::format::print(&fmt, &out, NETWORK_HEADERS)?,
            }
        }
        NetworkCmd::Rm { networks } => {
            let mut failed = false;
            for name in &networks {
                let docker_owned = engine
                    .network(name)
                    .map(|n| n.docker_owned())
                    .unwrap_or(false);
                if docker_owned {
                    eprintln!(
                        "mvnet: error: network {name} belongs to Docker (made through the mvnet-docker plugin); remove it with docker network rm {name}"
                    );
                    failed = true;
                    continue;
                }
                match engine.remove_network(name) {
                    Ok(_) => println!("{name}"),
                    Err(e) => {
                        eprintln!("mvnet: error: {}", mvnet_core::one_line(&e.to_string()));
                        failed = true;
                    }
                }
            }
            return Ok(failed as u8);
        }
        NetworkCmd::Update {
            host_access,
            clear_lan_conflicts,
            host_access_ip,
            network,
        } => {
            let mut net = engine.network(&network)?;
            if clear_lan_conflicts {
                let n = engine.clear_lan_conflicts(&net)?;
                eprintln!("mvnet: forgot {n} LAN conflict(s) of {}", net.name);
            }
            if let Some(host_access) = host_access {
                let ip = parse_ip("--host-access-ip", &host_access_ip)?;
                net = engine.set_host_access(&net.id, host_access == "on", ip)?;
                if net.options.host_access {
                    eprintln!(
                        "mvnet: host access on: this host reaches {} through {}",
                        net.name,
                        mvnet_core::engine::hostaccess::shim_name(&net)
                    );
                }
            }
            println!("{}", net.name);
        }
        NetworkCmd::Prune { force: _ } => {
            let removed = engine.prune_networks()?;
            if !removed.is_empty() {
                println!("Deleted Networks:");
                removed.iter().for_each(|n| println!("{n}"));
            }
        }
        NetworkCmd::Connect {
            ip,
            ip6,
            mac_address,
            force,
            ifname,
            driver_opt,
            netns,
            network,
            container,
        } => {
            let ifname = endpoint_ifname(ifname, &driver_opt)?;
            let opts = AttachOptions {
                ipv4: parse_ip("--ip", &ip)?,
                ipv6: parse_ip("--ip6", &ip6)?,
                mac: mac_address.map(|m| m.parse()).transpose()?,
                ifname,
                force,
                ..Default::default()
            };
            let net = engine.network(&network)?;
            let target = target(engine, netns.as_deref(), container.as_deref())?;
            mvnet_core::timing::mark("network+target");
            engine.connect(&net, &target, &opts)?;
        }
        NetworkCmd::Disconnect {
            netns,
            network,
            container,
        } => {
            let net = engine.network(&network)?;
            let target = target(engine, netns.as_deref(), container.as_deref())?;
            let ep = engine.endpoint_on(&net, &target.container_id, &target.container_name)?;
            engine.disconnect(&ep)?;
        }
    }
    Ok(0)
}

fn target(
    engine: &mut Engine,
    netns: Option<&str>,
    container: Option<&str>,
) -> Result<AttachTarget> {
    match (netns, container) {
        (Some(path), _) => AttachTarget::bare_netns(path),
        (None, Some(name)) => {
            let c = engine.container(name)?;
            Ok(AttachTarget {
                container_id: c.id,
                container_name: c.name,
                netns: c.netns,
                owned: true,
            })
        }
        (None, None) => unreachable!("clap requires one of them"),
    }
}

/// `--ifname NAME`, or Docker's spelling `--driver-opt com.docker.network.endpoint.ifname=NAME`.
fn endpoint_ifname(ifname: Option<String>, driver_opts: &[String]) -> Result<Option<String>> {
    const IFNAME_KEY: &str = "com.docker.network.endpoint.ifname";
    let mut name = ifname;
    for opt in driver_opts {
        match opt.split_once('=') {
            Some((IFNAME_KEY, v)) => {
                if name.as_deref().is_some_and(|n| n != v) {
                    return Err(mvnet_core::invalid!(
                        "--ifname and --driver-opt {IFNAME_KEY} disagree; give one"
                    ));
                }
                name = Some(v.to_string());
            }
            _ => {
                return Err(mvnet_core::invalid!(
                    "unknown --driver-opt {}: mvnet knows {IFNAME_KEY}=NAME",
                    mvnet_core::quote(opt)
                ))
            }
        }
    }
    if let Some(n) = &name {
        mvnet_core::model::network::check_ifname(n, "--ifname")?;
    }
    Ok(name)
}
