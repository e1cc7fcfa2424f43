//! `mvnet demo`: the seed's scenario, end to end, in a throw-away lab, with a transcript a
//! newcomer can follow. Each step states what must happen; the demo fails if it does not,
//! so it doubles as a smoke test of the whole product.

use std::process::Command;

use mvnet_core::lab::{Lab, LabGuard};
use mvnet_core::{invalid, Result};

use crate::commands::lab_command;

/// What a step must show for the demo to go on.
enum Expect {
    Success,
    Failure,
    Contains(&'static str),
}

struct Demo {
    lab: Lab,
    exe: String,
}

impl Demo {
    fn say(&self, text: &str) {
        println!("\n# {text}");
    }

    /// Runs `argv` on the lab's docker host and prints it as a shell transcript.
    fn step(&self, argv: &[&str], expect: Expect) -> Result<String> {
        let shown: Vec<String> = argv
            .iter()
            .map(|a| {
                if a.contains(' ') {
                    format!("'{a}'")
                } else {
                    a.to_string()
                }
            })
            .collect();
        println!("$ {}", shown.join(" "));
        let mut full: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        if full[0] == "mvnet" {
            full[0] = self.exe.clone();
        }
        let out = lab_command(&self.lab, &full)?
            .output()
            .map_err(|e| invalid!("cannot run {}: {e}", argv[0]))?;
        self.check(argv, out, expect)
    }

    /// Runs `argv` on another lab machine (e.g. the LAN peer).
    fn step_on(&self, machine: &str, argv: &[&str], expect: Expect) -> Result<String> {
        println!("[{machine}]$ {}", argv.join(" "));
        let ns = std::fs::File::open(self.lab.netns_path(machine))
            .map_err(|e| mvnet_core::Error::io("open lab namespace", e))?;
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..]);
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        // SAFETY: setns is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = cmd
            .output()
            .map_err(|e| invalid!("cannot run {}: {e}", argv[0]))?;
        self.check(argv, out, expect)
    }

    fn check(&self, argv: &[&str], out: std::process::Output, expect: Expect) -> Result<String> {
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        print!("{stdout}");
        eprint!("{stderr}");
        let ok = match expect {
            Expect::Success => out.status.success(),
            Expect::Failure => !out.status.success(),
            Expect::Contains(s) => out.status.success() && stdout.contains(s),
        };
        if ok {
            Ok(stdout)
        } else {
            Err(invalid!(
                "demo step did not behave as expected: {}",
                argv.join(" ")
            ))
        }
    }
}

pub fn run(name: &str, keep: bool) -> Result<u8> {
    let exe = std::env::current_exe()
        .map_err(|e| mvnet_core::Error::io("find the mvnet executable", e))?
        .display()
        .to_string();
    println!("# Building the sandbox lab '{name}': a LAN made of network namespaces.");
    println!("#   switch (bridge) <- docker host 10.103.19.10 (eth0), gateway 10.103.19.1, peer 10.103.19.20");
    println!(
        "#   gateway -> outside host 198.51.100.10. Nothing touches this machine's real network."
    );
    let guard = LabGuard::up(name)?;
    let demo = Demo {
        lab: guard.lab.clone(),
        exe,
    };
    let result = scenario(&demo);
    if keep {
        std::mem::forget(guard);
        println!("\n# Lab kept. Explore it with: mvnet lab exec --name {name} -- bash ; remove it with: mvnet lab down --name {name}");
    } else {
        drop(guard);
        println!("\n# Lab '{name}' removed.");
    }
    result.map(|_| 0)
}

fn scenario(d: &Demo) -> Result<()> {
    d.say("Create a macvlan network from the parent NIC's own LAN settings (as in the seed).");
    d.step(
        &[
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
        ],
        Expect::Success,
    )?;
    d.step(
        &["mvnet", "network", "ls"],
        Expect::Contains("my-macvlan-net"),
    )?;

    d.say("Start a container on it (a network namespace running a command).");
    d.step(
        &[
            "mvnet",
            "run",
            "--rm",
            "-d",
            "--network",
            "my-macvlan-net",
            "--name",
            "my-macvlan-alpine",
            "--",
            "sleep",
            "infinity",
        ],
        Expect::Success,
    )?;
    d.say("Its own IP on the LAN, and a MAC derived from it: 02:42 + 10.103.19.2.");
    d.step(
        &["mvnet", "inspect", "my-macvlan-alpine"],
        Expect::Contains("\"MacAddress\": \"02:42:0a:67:13:02\""),
    )?;

    d.say("Inside the container: the interface, the routes, the gateway, the outside world.");
    d.step(
        &[
            "mvnet",
            "exec",
            "my-macvlan-alpine",
            "--",
            "ip",
            "addr",
            "show",
            "eth0",
        ],
        Expect::Contains("inet 10.103.19.2/24"),
    )?;
    d.step(
        &["mvnet", "exec", "my-macvlan-alpine", "--", "ip", "route"],
        Expect::Contains("default via 10.103.19.1 dev eth0"),
    )?;
    d.step(
        &[
            "mvnet",
            "exec",
            "my-macvlan-alpine",
            "--",
            "ping",
            "-c",
            "2",
            "10.103.19.1",
        ],
        Expect::Success,
    )?;
    d.step(
        &[
            "mvnet",
            "exec",
            "my-macvlan-alpine",
            "--",
            "ping",
            "-c",
            "2",
            "198.51.100.10",
        ],
        Expect::Success,
    )?;

    d.say("The macvlan rule from the seed: the host cannot reach its own containers...");
    d.step(
        &["ping", "-c", "1", "-W", "1", "10.103.19.2"],
        Expect::Failure,
    )?;
    d.say("...while any other machine on the LAN can.");
    d.step_on(
        "peer",
        &["ping", "-c", "1", "-W", "1", "10.103.19.2"],
        Expect::Success,
    )?;

    if d.lab.has_trunk() {
        vlan_example(d)?;
    } else {
        let f = mvnet_core::kernel::feature(mvnet_core::netlink::ProbeKind::Vlan);
        d.say(&format!(
            "802.1Q part skipped: this kernel has no {} support ({}; modprobe {}).",
            f.name, f.config, f.module
        ));
    }

    d.say("Clean up.");
    d.step(&["mvnet", "rm", "-f", "my-macvlan-alpine"], Expect::Success)?;
    d.step(
        &["mvnet", "network", "rm", "my-macvlan-net"],
        Expect::Success,
    )?;
    Ok(())
}

/// The seed's second example: a network on VLAN 1318 of the trunk `ens19`, which mvnet
/// creates on the fly (and brings the trunk up, as `ifconfig ens19 up` does in the seed).
fn vlan_example(d: &Demo) -> Result<()> {
    d.say("802.1Q: the trunk ens19 carries VLANs 1317/1318. mvnet creates ens19.1318 on the fly.");
    d.step(
        &[
            "mvnet",
            "network",
            "create",
            "-d",
            "macvlan",
            "--subnet=10.103.18.0/24",
            "--gateway=10.103.18.1",
            "-o",
            "parent=ens19.1318",
            "my-8021q-1318-macvlan-net",
        ],
        Expect::Success,
    )?;
    d.step(
        &["mvnet", "network", "ls"],
        Expect::Contains("my-8021q-1318-macvlan-net"),
    )?;
    d.step(
        &[
            "mvnet",
            "run",
            "--rm",
            "-d",
            "--network",
            "my-8021q-1318-macvlan-net",
            "--name",
            "my-8021q-1318-macvlan-alpine",
            "--",
            "sleep",
            "infinity",
        ],
        Expect::Success,
    )?;
    d.step(
        &["mvnet", "inspect", "my-8021q-1318-macvlan-alpine"],
        Expect::Contains("\"MacAddress\": \"02:42:0a:67:12:02\""),
    )?;
    d.step(
        &[
            "mvnet",
            "exec",
            "my-8021q-1318-macvlan-alpine",
            "--",
            "ip",
            "addr",
            "show",
            "eth0",
        ],
        Expect::Contains("inet 10.103.18.2/24"),
    )?;
    d.step(
        &[
            "mvnet",
            "exec",
            "my-8021q-1318-macvlan-alpine",
            "--",
            "ip",
            "route",
        ],
        Expect::Contains("default via 10.103.18.1 dev eth0"),
    )?;
    d.step(
        &[
            "mvnet",
            "exec",
            "my-8021q-1318-macvlan-alpine",
            "--",
            "ping",
            "-c",
            "2",
            "10.103.18.1",
        ],
        Expect::Success,
    )?;
    d.step(
        &["mvnet", "rm", "-f", "my-8021q-1318-macvlan-alpine"],
        Expect::Success,
    )?;
    d.say("The last network on a VLAN parent mvnet created takes the parent with it.");
    d.step(
        &["mvnet", "network", "rm", "my-8021q-1318-macvlan-net"],
        Expect::Success,
    )?;
    d.step(&["ip", "-br", "link"], Expect::Success)?;
    Ok(())
}
