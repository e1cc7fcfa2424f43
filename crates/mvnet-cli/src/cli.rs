use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "mvnet",
    version,
    about = "Put containers straight onto the LAN with macvlan: own MAC, own IP, no bridge, no NAT."
)]
pub struct Cli {
    /// Directory holding mvnet's state.
    #[arg(long, global = true, env = "MVNET_ROOT", default_value = mvnet_core::engine::DEFAULT_ROOT)]
    pub root: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Manage networks.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Create a container (a network namespace) on a network and run a command in it.
    Run(RunArgs),
    /// Run a command inside a running container's namespaces.
    Exec {
        /// Container name or id.
        container: String,
        /// The command and its arguments (after --).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// List containers.
    Ps {
        /// Show all containers (default shows just running).
        #[arg(short, long)]
        all: bool,
        /// json, a Go template ('{{.Names}}'), or 'table {{.ID}}\t{{.Status}}'.
        #[arg(long, default_value = "")]
        format: String,
        /// name=, network=, status=created|running|exited, label=KEY[=VALUE].
        #[arg(short = 'f', long = "filter")]
        filter: Vec<String>,
        /// Only print container ids.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show a container's details as Docker-shaped JSON.
    Inspect {
        /// A Go template applied to each container, e.g. '{{.NetworkSettings.SandboxKey}}'.
        #[arg(short = 'f', long, default_value = "")]
        format: String,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop running containers (SIGTERM, then SIGKILL).
    Stop {
        /// Seconds to wait before killing.
        #[arg(short = 't', long, default_value_t = 10)]
        time: u64,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers, their namespaces and their addresses.
    Rm {
        /// Kill and remove running containers too.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Print a detached container's output.
    Logs { container: String },
    /// A private LAN made of network namespaces, for trying mvnet safely.
    #[command(subcommand)]
    Lab(LabCmd),
    /// Build the lab, run the seed's scenario in it with a transcript, and tear it down.
    Demo {
        /// Keep the lab afterwards (remove it with: mvnet lab down --name NAME).
        #[arg(long)]
        keep: bool,
        #[arg(long, default_value = "mvdemo")]
        name: String,
    },
    /// Check whether mvnet can work on this host, and how to fix what blocks it.
    Doctor {
        /// The parent interface to check (default: the default-route interface).
        #[arg(long)]
        parent: Option<String>,
        #[arg(long, value_parser = ["table", "json"], default_value = "table")]
        format: String,
    },
    /// Re-apply what the state says should exist after a reboot: 802.1Q parents mvnet created,
    /// host-access shims and their routes. Run at boot by contrib/systemd/mvnet-restore.service.
    Restore,
    /// Print shell completions (bash, zsh, fish) made from mvnet's own argument definitions;
    /// bash also completes network names.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Show mvnet's version.
    Version {
        #[arg(long, default_value = "")]
        format: String,
    },
    /// Show the state root, the store, counts, kernel features and the plugins installed.
    Info {
        #[arg(long, default_value = "")]
        format: String,
    },
    /// Remove stopped containers and networks without endpoints.
    #[command(subcommand)]
    System(SystemCmd),
    /// Shared address pools (--ipam-opt pool=NAME): who holds what, per host, from etcd.
    #[command(subcommand)]
    Pool(PoolCmd),
    /// Internal: keeps this host alive in the etcd of its shared pools, retries queued
    /// releases, reconciles claims (started on demand, or by mvnet-fleet.service).
    #[command(name = "fleet-keeper", hide = true)]
    FleetKeeper {
        /// Keep running without shared pools (for a service manager).
        #[arg(long)]
        stay: bool,
    },
    /// Internal: write the man pages (mvnet.1, mvnet-network-create.1, ...) into DIR.
    #[command(name = "__man", hide = true)]
    Man { dir: std::path::PathBuf },
    /// Internal: supervises a detached container's command.
    #[command(name = "__monitor", hide = true)]
    Monitor { id: String },
}

#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// Print help (-h is --hostname, as in Docker).
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// Run in the background and print the container id.
    #[arg(short, long)]
    pub detach: bool,
    /// Remove the container when its command exits.
    #[arg(long)]
    pub rm: bool,
    /// Accepted for Docker compatibility (stdin is always passed through in the foreground).
    #[arg(short, long)]
    pub interactive: bool,
    /// Accepted for Docker compatibility (no pseudo-terminal is allocated).
    #[arg(short, long)]
    pub tty: bool,
    /// Network to connect to.
    #[arg(long)]
    pub network: String,
    #[arg(long)]
    pub name: Option<String>,
    /// Static IPv4 address.
    #[arg(long)]
    pub ip: Option<String>,
    /// Static IPv6 address.
    #[arg(long)]
    pub ip6: Option<String>,
    /// MAC address (default: 02:42 + the IPv4 address bytes).
    #[arg(long)]
    pub mac_address: Option<String>,
    /// Use --ip/--ip6 even when another device on the LAN answers mvnet's probe for it.
    #[arg(long)]
    pub force: bool,
    /// The container's interface name (default: eth0).
    #[arg(long)]
    pub ifname: Option<String>,
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// A label KEY=VALUE (repeatable); `ps -f label=KEY[=VALUE]` selects by it.
    #[arg(short = 'l', long)]
    pub label: Vec<String>,
    /// The command and its arguments (after --).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum NetworkCmd {
    /// Create a network on a parent interface.
    Create(CreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls {
        /// json, a Go template ('{{.Name}}'), or 'table {{.ID}}\t{{.Name}}'.
        #[arg(long, default_value = "")]
        format: String,
        /// name=, id=, driver=, label=KEY[=VALUE], scope=, type= (repeat to OR one key).
        #[arg(short = 'f', long = "filter")]
        filter: Vec<String>,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show networks as Docker-shaped JSON.
    Inspect {
        /// A Go template applied to each network, e.g. '{{json .IPAM.Config}}'.
        #[arg(short = 'f', long, default_value = "")]
        format: String,
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove networks.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Change a network: turn host access on or off, forget LAN conflicts.
    #[command(group(clap::ArgGroup::new("change").required(true).multiple(true).args(["host_access", "clear_lan_conflicts"])))]
    Update {
        /// on: the host reaches the network's containers through a shim (mvh-<id>); off: removes it.
        #[arg(long, value_parser = ["on", "off"])]
        host_access: Option<String>,
        /// Forget the addresses probing found in use on the LAN, so they are handed out again.
        #[arg(long)]
        clear_lan_conflicts: bool,
        /// The shim's address (default: the next free one).
        #[arg(long)]
        host_access_ip: Option<String>,
        network: String,
    },
    /// Remove all networks without endpoints.
    Prune {
        /// Accepted for Docker compatibility (mvnet never prompts).
        #[arg(short, long)]
        force: bool,
    },
    /// Connect a container, or any network namespace, to a network.
    Connect {
        #[arg(long)]
        ip: Option<String>,
        #[arg(long)]
        ip6: Option<String>,
        #[arg(long)]
        mac_address: Option<String>,
        /// Use --ip/--ip6 even when another device on the LAN answers mvnet's probe for it.
        #[arg(long)]
        force: bool,
        /// The interface name in the container (default: the next free ethN).
        #[arg(long)]
        ifname: Option<String>,
        /// Docker's endpoint driver options; com.docker.network.endpoint.ifname=NAME is --ifname.
        #[arg(long)]
        driver_opt: Vec<String>,
        /// Attach this namespace instead of a container, e.g. /proc/PID/ns/net.
        #[arg(long, conflicts_with = "container")]
        netns: Option<String>,
        network: String,
        #[arg(required_unless_present = "netns")]
        container: Option<String>,
    },
    /// Disconnect a container (or namespace) from a network.
    Disconnect {
        #[arg(long, conflicts_with = "container")]
        netns: Option<String>,
        network: String,
        #[arg(required_unless_present = "netns")]
        container: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Driver: macvlan.
    #[arg(short, long, default_value = "macvlan")]
    pub driver: String,
    #[arg(long)]
    pub subnet: Vec<String>,
    #[arg(long)]
    pub gateway: Vec<String>,
    #[arg(long)]
    pub ip_range: Vec<String>,
    /// Reserved addresses, name=IP.
    #[arg(long)]
    pub aux_address: Vec<String>,
    /// Where addresses come from: default (mvnet's address book, from --subnet) or dhcp
    /// (the LAN's DHCP server; no --subnet).
    #[arg(long, default_value = "default")]
    pub ipam_driver: String,
    /// IPAM option, repeatable: pool=NAME shares the subnet with every host on the LAN that
    /// uses the same pool, through etcd=http://HOST:2379[,...] (or MVNET_ETCD);
    /// grace=SECONDS is how long a silent host keeps its addresses (default 60).
    #[arg(long = "ipam-opt", value_name = "KEY=VALUE")]
    pub ipam_opt: Vec<String>,
    /// Enable IPv6 (an IPv6 --subnet enables it too).
    #[arg(long)]
    pub ipv6: bool,
    /// --ipv4=false makes an IPv6-only network (with --ipv6 and an IPv6 --subnet).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "true", action = clap::ArgAction::Set)]
    pub ipv4: bool,
    /// No default route: containers reach only the LAN segment.
    #[arg(long)]
    pub internal: bool,
    #[arg(long)]
    pub label: Vec<String>,
    /// Let this host reach the network's containers (a host-side macvlan shim, kept across reboots).
    #[arg(long)]
    pub host_access: bool,
    /// The host's address on the network (default: the next free one).
    #[arg(long)]
    pub host_access_ip: Option<String>,
    /// Driver options: parent=IF, macvlan_mode=bridge|private|vepa|passthru, mtu=N.
    #[arg(short = 'o', long = "opt")]
    pub opt: Vec<String>,
    pub name: String,
}

#[derive(Subcommand, Debug)]
pub enum PoolCmd {
    /// List the shared pools of this host's networks, with what etcd says of each.
    Ls {
        /// json, or a Go template ('{{.Name}} {{.Addresses}}').
        #[arg(long, default_value = "")]
        format: String,
    },
    /// Show a pool from etcd: every address, the host and container that hold it, and the
    /// hosts (alive or last seen).
    Inspect {
        /// A Go template applied to the pool, e.g. '{{range .Addresses}}{{.Address}} {{.Host}}\n{{end}}'.
        #[arg(short = 'f', long, default_value = "")]
        format: String,
        pool: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum SystemCmd {
    /// Remove every stopped container and every network without endpoints.
    Prune {
        /// Accepted for Docker compatibility (mvnet never prompts).
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum LabCmd {
    /// Build the lab LAN (switch, docker host, gateway, outside host, peer).
    Up {
        #[arg(long, default_value = mvnet_lab::DEFAULT_LAB)]
        name: String,
        /// Docker hosts on the LAN (host, host2, ... at 10.103.19.10, .11, ...), each with
        /// its own mvnet state: a fleet to try shared pools on.
        #[arg(long, default_value_t = 1)]
        hosts: usize,
    },
    /// Remove the lab and everything in it, even after a crash.
    Down {
        #[arg(long, default_value = mvnet_lab::DEFAULT_LAB)]
        name: String,
    },
    /// Run a command on the lab's simulated docker host (its own mvnet state included).
    Exec {
        #[arg(long, default_value = mvnet_lab::DEFAULT_LAB)]
        name: String,
        /// Which docker host of a multi-host lab (1, 2, ...).
        #[arg(long, default_value_t = 1)]
        host: usize,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// List labs that are up.
    Ls,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn seed_style_arguments_parse() {
        use clap::Parser;
        let cli = super::Cli::try_parse_from([
            "mvnet",
            "network",
            "create",
            "-d",
            "macvlan",
            "--subnet=10.103.19.0/24",
            "--gateway=10.103.19.1",
            "-o",
            "parent=eth0",
            "my-macvlan-net",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            super::Command::Network(super::NetworkCmd::Create(_))
        ));
        let cli = super::Cli::try_parse_from([
            "mvnet",
            "run",
            "--rm",
            "-itd",
            "--network",
            "my-macvlan-net",
            "--name",
            "my-macvlan-alpine",
            "-h",
            "box",
            "--",
            "sleep",
            "-v",
        ])
        .unwrap();
        let super::Command::Run(r) = cli.command else {
            panic!()
        };
        assert!(r.detach && r.rm && r.interactive && r.tty);
        assert_eq!(r.hostname.as_deref(), Some("box"));
        assert_eq!(r.command, ["sleep", "-v"]);
    }
}
