use mvnet_core::Result;
use mvnet_lab::{lab_command_on, Lab};

use crate::cli::LabCmd;

pub fn run(cmd: LabCmd) -> Result<u8> {
    match cmd {
        LabCmd::Up { name, hosts } => {
            let lab = Lab::new(&name)?;
            lab.up_with_hosts(hosts)?;
            if hosts > 1 {
                println!(
                    "docker hosts: {} (mvnet lab exec --host N runs on host N)",
                    (1..=hosts)
                        .map(|n| format!("{} {}", Lab::host_part(n), Lab::host_ip(n)))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            println!("lab {name} is up: LAN {} with gateway {}, docker host {} (eth0), peer {}, outside host {}",
                mvnet_lab::LAN_SUBNET, mvnet_lab::GATEWAY, mvnet_lab::HOST_IP,
                mvnet_lab::PEER_IP, mvnet_lab::OUTSIDE_IP);
            println!("try: mvnet lab exec{} -- mvnet network create -d macvlan --subnet=10.103.19.0/24 --gateway=10.103.19.1 -o parent=eth0 my-macvlan-net",
                if name == mvnet_lab::DEFAULT_LAB { String::new() } else { format!(" --name {name}") });
            Ok(0)
        }
        LabCmd::Down { name } => {
            Lab::new(&name)?.down()?;
            Ok(0)
        }
        LabCmd::Exec {
            name,
            host,
            command,
        } => {
            let lab = Lab::new(&name)?;
            let status = lab_command_on(&lab, host, &command)?
                .status()
                .map_err(|e| mvnet_core::invalid!("cannot run {}: {e}", command[0]))?;
            Ok(status.code().unwrap_or(1).clamp(0, 255) as u8)
        }
        LabCmd::Ls => {
            Lab::list().iter().for_each(|l| println!("{l}"));
            Ok(0)
        }
    }
}
