use mvnet_core::lab::Lab;
use mvnet_core::Result;

use crate::cli::LabCmd;

pub fn run(cmd: LabCmd) -> Result<u8> {
    match cmd {
        LabCmd::Up { name } => {
            let lab = Lab::new(&name)?;
            lab.up()?;
            println!("lab {name} is up: LAN {} with gateway {}, docker host {} (eth0), peer {}, outside host {}",
                mvnet_core::lab::LAN_SUBNET, mvnet_core::lab::GATEWAY, mvnet_core::lab::HOST_IP,
                mvnet_core::lab::PEER_IP, mvnet_core::lab::OUTSIDE_IP);
            println!("try: mvnet lab exec{} -- mvnet network create -d macvlan --subnet=10.103.19.0/24 --gateway=10.103.19.1 -o parent=eth0 my-macvlan-net",
                if name == mvnet_core::lab::DEFAULT_LAB { String::new() } else { format!(" --name {name}") });
            Ok(0)
        }
        LabCmd::Down { name } => {
            Lab::new(&name)?.down()?;
            Ok(0)
        }
        LabCmd::Exec { name, command } => {
            let lab = Lab::new(&name)?;
            let status = lab_command(&lab, &command)?
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

/// A command that runs on the lab's docker host: inside its netns, with the lab's own mvnet
/// state, and with this mvnet first on PATH.
pub fn lab_command(lab: &Lab, argv: &[String]) -> Result<std::process::Command> {
    if !lab.exists() {
        return Err(mvnet_core::not_found!(
            "lab {} is not up; start it with: mvnet lab up",
            lab.name
        ));
    }
    let mut cmd = mvnet_core::netns::command_in(&lab.host_netns(), &argv[0])?;
    cmd.args(&argv[1..]);
    cmd.env("MVNET_ROOT", lab.state_root());
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            let path = std::env::var("PATH").unwrap_or_default();
            cmd.env("PATH", format!("{}:{path}", dir.display()));
        }
    }
    Ok(cmd)
}
