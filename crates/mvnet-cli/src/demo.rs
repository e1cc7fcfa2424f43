//! `mvnet demo`: the seed's scenario, end to end, in a throw-away lab, with a transcript a
//! newcomer can follow. Each step states what must happen; the demo fails if it does not,
//! so it doubles as a smoke test of the whole product.

use mvnet_core::{invalid, Result};
use mvnet_lab::{Lab, LabGuard};

use mvnet_lab::lab_command;

/// What a step must show for the demo to go on.
enum Expect {
    Success,
    Failure,
    Contains(String),
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
        let mut cmd = mvnet_core::netns::command_in(&self.lab.netns_path(machine), argv[0])?;
        cmd.args(&argv[1..]);
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
            Expect::Contains(s) => out.status.success() && stdout.contains(s.as_str()),
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
    let full = std::env::current_exe()
        .map_err(|e| mvnet_core::Error::io("find the mvnet executable", e))?;
    // The commands run as users run them: through `mvnet`, the forwarder beside us.
    let forwarder = full.with_file_name("mvnet");
    let exe = if forwarder.is_file() { forwarder } else { full }
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

/// One of the seed's two examples: a network on `parent` for the LAN `prefix`.0/24, with a
/// container on it, checked from the inside.
struct SeedExample {
    network: &'static str,
    container: &'static str,
    parent: &'static str,
    /// The first three octets of the LAN, e.g. "10.103.19".
    prefix: &'static str,
}

impl SeedExample {
    fn run(&self, d: &Demo) -> Result<()> {
        let (p, n, c) = (self.prefix, self.network, self.container);
        let ip = format!("{p}.2");
        let gw = format!("{p}.1");
        let mac = mvnet_core::model::MacAddr::from_ipv4(
            format!("{p}.2").parse().expect("an IPv4 prefix"),
        );
        d.step(
            &[
                "mvnet",
                "network",
                "create",
                "-d",
                "macvlan",
                &format!("--subnet={p}.0/24"),
                &format!("--gateway={gw}"),
                "-o",
                &format!("parent={}", self.parent),
                n,
            ],
            Expect::Success,
        )?;
        d.step(&["mvnet", "network", "ls"], Expect::Contains(n.to_string()))?;
        d.say("Start a container on it (a network namespace running a command).");
        d.step(
            &[
                "mvnet",
                "run",
                "--rm",
                "-d",
                "--network",
                n,
                "--name",
                c,
                "--",
                "sleep",
                "infinity",
            ],
            Expect::Success,
        )?;
        d.say(&format!(
            "Its own IP on the LAN, and a MAC derived from it: 02:42 + the four bytes of {ip}."
        ));
        d.step(
            &["mvnet", "inspect", c],
            Expect::Contains(format!("\"MacAddress\": \"{mac}\"")),
        )?;
        d.say("Inside the container: the interface, the routes, the gateway.");
        d.step(
            &["mvnet", "exec", c, "--", "ip", "addr", "show", "eth0"],
            Expect::Contains(format!("inet {ip}/24")),
        )?;
        d.step(
            &["mvnet", "exec", c, "--", "ip", "route"],
            Expect::Contains(format!("default via {gw} dev eth0")),
        )?;
        d.step(
            &["mvnet", "exec", c, "--", "ping", "-c", "2", &gw],
            Expect::Success,
        )?;
        Ok(())
    }
}

fn scenario(d: &Demo) -> Result<()> {
    d.say("Create a macvlan network from the parent NIC's own LAN settings (as in the seed).");
    let lan = SeedExample {
        network: "my-macvlan-net",
        container: "my-macvlan-alpine",
        parent: "eth0",
        prefix: "10.103.19",
    };
    lan.run(d)?;
    d.say("And the outside world, routed by the gateway.");
    d.step(
        &[
            "mvnet",
            "exec",
            lan.container,
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
    // Two tries with a 2 s wait: a software-emulated VM under load can be slow to answer
    // the first ARP, and one lost reply must not fail the demo.
    d.step_on(
        "peer",
        &["ping", "-c", "2", "-W", "2", "10.103.19.2"],
        Expect::Success,
    )?;

    if d.lab.has_trunk() {
        // The seed's second example: VLAN 1318 of the trunk ens19, created on the fly (with
        // the trunk brought up, as `ifconfig ens19 up` does in the seed).
        d.say(
            "802.1Q: the trunk ens19 carries VLANs 1317/1318. mvnet creates ens19.1318 on the fly.",
        );
        let vlan = SeedExample {
            network: "my-8021q-1318-macvlan-net",
            container: "my-8021q-1318-macvlan-alpine",
            parent: "ens19.1318",
            prefix: "10.103.18",
        };
        vlan.run(d)?;
        d.step(&["mvnet", "rm", "-f", vlan.container], Expect::Success)?;
        d.say("The last network on a VLAN parent mvnet created takes the parent with it.");
        d.step(&["mvnet", "network", "rm", vlan.network], Expect::Success)?;
        d.step(&["ip", "-br", "link"], Expect::Success)?;
    } else {
        let f = mvnet_core::kernel::feature(mvnet_core::netlink::ProbeKind::Vlan);
        d.say(&format!(
            "802.1Q part skipped: this kernel has no {} support ({}; modprobe {}).",
            f.name, f.config, f.module
        ));
    }

    d.say("Clean up.");
    d.step(&["mvnet", "rm", "-f", lan.container], Expect::Success)?;
    d.step(&["mvnet", "network", "rm", lan.network], Expect::Success)?;
    Ok(())
}
