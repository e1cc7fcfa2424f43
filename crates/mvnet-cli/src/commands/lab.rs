use mvnet_core::Result;
use mvnet_lab::{lab_command, Lab};

use crate::cli::LabCmd;

pub fn run(cmd: LabCmd) -> Result<u8> {
    match cmd {
        LabCmd::Up { name } => {
            let lab = Lab::new(&name)?;
            lab.up()?;
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
