//! `mvnet version`, `info`, `system prune`, `completion`, and the man pages.

use std::path::Path;

use clap::CommandFactory;
use serde_json::json;

use mvnet_core::engine::Engine;
use mvnet_core::model::ContainerStatus;
use mvnet_core::{runtime, Error, Result};

use crate::format::Format;

pub fn version(format: &str) -> Result<u8> {
    let uname = nix::sys::utsname::uname().map_err(|e| Error::kernel("uname", e.into()))?;
    let v = json!({
        "Version": env!("CARGO_PKG_VERSION"),
        "Os": "linux",
        "Arch": std::env::consts::ARCH,
        "KernelVersion": uname.release().to_string_lossy(),
    });
    match Format::parse(format) {
        Format::Default => println!(
            "mvnet version {} (linux/{}, kernel {})",
            v["Version"].as_str().unwrap_or_default(),
            v["Arch"].as_str().unwrap_or_default(),
            v["KernelVersion"].as_str().unwrap_or_default()
        ),
        fmt => crate::format::print(&fmt, &[v], &[])?,
    }
    Ok(0)
}

pub fn info(engine: &mut Engine, format: &str) -> Result<u8> {
    use mvnet_core::netlink::ProbeKind;
    let nets = engine.networks()?;
    let containers = engine.containers()?;
    let running = containers
        .iter()
        .filter(|c| runtime::process_alive(c))
        .count();
    let feature = |k: ProbeKind| mvnet_core::kernel::supports(k).unwrap_or(false);
    let plugin = |p: &str| Path::new(p).exists();
    // The forwarder and the full plugin it runs are installed together.
    let cni_installed = ["/usr/lib/cni", "/opt/cni/bin"]
        .iter()
        .any(|d| plugin(&format!("{d}/mvnet-cni")) && plugin(&format!("{d}/mvnet-cni-full")));
    let v = json!({
        "StateRoot": engine.root().display().to_string(),
        "Store": "sqlite (WAL)",
        "Networks": nets.len(),
        "Containers": containers.len(),
        "ContainersRunning": running,
        "ContainersStopped": containers.len() - running,
        "Kernel": {
            "macvlan": feature(ProbeKind::Macvlan),
            "ipvlan": feature(ProbeKind::Ipvlan),
            "8021q": feature(ProbeKind::Vlan),
            "macvtap": feature(ProbeKind::Macvtap),
        },
        "Plugins": {
            "cni": cni_installed,
            "docker": {
                "installed": plugin("/usr/bin/mvnet-docker") || plugin("/usr/local/bin/mvnet-docker"),
                // Connecting (and hanging up) is how Docker itself finds a live plugin.
                "listening": std::os::unix::net::UnixStream::connect(DOCKER_PLUGIN_SOCKET).is_ok(),
                "socket": DOCKER_PLUGIN_SOCKET,
                "networks": nets.iter().filter(|n| n.docker_owned()).count(),
            },
        },
    });
    match Format::parse(format) {
        Format::Default => {
            println!(
                "State root: {}",
                v["StateRoot"].as_str().unwrap_or_default()
            );
            println!("Store: {}", v["Store"].as_str().unwrap_or_default());
            println!("Networks: {}", nets.len());
            println!(
                "Containers: {} (running {}, stopped {})",
                containers.len(),
                running,
                containers.len() - running
            );
            let on = |b: &serde_json::Value| if b == true { "yes" } else { "no" };
            let k = &v["Kernel"];
            println!(
                "Kernel: macvlan {}, ipvlan {}, 802.1Q {}, macvtap {}",
                on(&k["macvlan"]),
                on(&k["ipvlan"]),
                on(&k["8021q"]),
                on(&k["macvtap"])
            );
            println!("CNI plugin installed: {}", on(&v["Plugins"]["cni"]));
            let d = &v["Plugins"]["docker"];
            println!(
                "Docker plugin: {} ({} Docker networks)",
                if d["listening"] == true {
                    format!("listening on {DOCKER_PLUGIN_SOCKET}")
                } else if d["installed"] == true {
                    "installed, not running (systemctl start mvnet-docker)".to_string()
                } else {
                    "not installed".to_string()
                },
                d["networks"]
            );
        }
        fmt => crate::format::print(&fmt, &[v], &[])?,
    }
    Ok(0)
}

/// Where dockerd looks for the mvnet plugin (`mvnet-docker --socket`'s default).
const DOCKER_PLUGIN_SOCKET: &str = "/run/docker/plugins/mvnet.sock";

/// Removes stopped containers, then networks without endpoints, as `docker system prune`
/// does for containers and networks.
pub fn prune(engine: &mut Engine) -> Result<u8> {
    let mut gone = Vec::new();
    for c in engine.containers()? {
        let c = runtime::refresh(engine, c)?;
        if c.status != ContainerStatus::Running {
            runtime::remove(engine, &c.id, false)?;
            gone.push(c.name);
        }
    }
    if !gone.is_empty() {
        println!("Deleted Containers:");
        gone.iter().for_each(|n| println!("{n}"));
    }
    let nets = engine.prune_networks()?;
    if !nets.is_empty() {
        println!("Deleted Networks:");
        nets.iter().for_each(|n| println!("{n}"));
    }
    Ok(0)
}

/// Completions made from the same clap definitions as the parser, so they cannot drift.
/// For bash, network names complete too (from `mvnet network ls`).
pub fn completion(shell: clap_complete::Shell) -> Result<u8> {
    let mut cmd = crate::cli::Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "mvnet", &mut out);
    let mut script = String::from_utf8_lossy(&out).into_owned();
    if shell == clap_complete::Shell::Bash {
        script.push_str(BASH_NETWORK_NAMES);
    }
    print!("{script}");
    Ok(0)
}

/// Wraps clap's bash completion: after `network inspect|rm|connect|disconnect|update` and
/// `--network`, offer the networks that exist.
const BASH_NETWORK_NAMES: &str = r#"
_mvnet_with_networks() {
    local cur prev i sub=""
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev="${COMP_WORDS[COMP_CWORD-1]}"
    for ((i = 1; i < COMP_CWORD; i++)); do
        if [[ "${COMP_WORDS[i]}" == network ]]; then sub="${COMP_WORDS[i+1]}"; break; fi
    done
    if [[ "$prev" == --network ]] || [[ "$prev" == "$sub" && "$sub" =~ ^(inspect|rm|connect|disconnect|update)$ ]]; then
        COMPREPLY=($(compgen -W "$(mvnet network ls --format '{{.Name}}' 2>/dev/null)" -- "$cur"))
        return 0
    fi
    _mvnet "$@"
}
complete -F _mvnet_with_networks -o bashdefault -o default mvnet
"#;

/// Writes a man page per command and subcommand into `dir`.
pub fn man_pages(dir: &Path) -> Result<u8> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    clap_mangen::generate_to(crate::cli::Cli::command(), dir)
        .map_err(|e| Error::io(format!("write man pages into {}", dir.display()), e))?;
    Ok(0)
}
