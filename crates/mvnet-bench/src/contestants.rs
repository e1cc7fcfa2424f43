//! The contestants. Each one does the same job, attach a macvlan endpoint (with an IPv4
//! address and a default route) to a fresh namespace and detach it, the way its real caller
//! runs it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::proc::{run, Sample};

/// Shared paths for one benchmark run.
pub struct Ctx {
    pub host_netns: PathBuf,
    pub work: PathBuf,
    pub mvnet: PathBuf,
    pub mvnet_cni: PathBuf,
}

impl Ctx {
    pub fn cli_root(&self) -> PathBuf {
        self.work.join("mvnet-state")
    }
}

pub trait Contestant {
    fn name(&self) -> &str;
    fn add(&mut self, ctx: &Ctx, i: usize, target: &str) -> Sample;
    fn del(&mut self, ctx: &Ctx, i: usize, target: &str) -> Sample;
}

/// A target is a named namespace, or a full path to any namespace file.
fn netns_path(target: &str) -> String {
    if target.starts_with('/') {
        target.to_string()
    } else {
        format!("/run/netns/{target}")
    }
}

/// The i-th host address of 10.<net>.0.0/16 (skipping .0, .1 and .255).
pub fn nth_ip(net: u8, i: usize) -> String {
    format!("10.{net}.{}.{}", 1 + i / 250, 2 + i % 250)
}

/// A CNI plugin run as a runtime runs it.
#[derive(Clone)]
pub struct Cni {
    pub label: String,
    pub plugin: PathBuf,
    pub conf: serde_json::Value,
}

impl Cni {
    pub fn new(label: &str, plugin: &Path, ipam: serde_json::Value) -> Cni {
        Cni {
            label: label.into(),
            plugin: plugin.into(),
            conf: json!({"cniVersion": "1.0.0", "name": format!("bench-{}", label.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect::<String>()), "type": "macvlan",
                         "master": "eth0", "ipam": ipam}),
        }
    }

    /// The same with an extra top-level config field (e.g. `"probe": true`).
    pub fn with(mut self, key: &str, value: serde_json::Value) -> Cni {
        self.conf[key] = value;
        self
    }

    fn exec(&self, ctx: &Ctx, cmd: &str, target: &str) -> Sample {
        let env = [
            ("CNI_COMMAND", cmd.to_string()),
            (
                "CNI_CONTAINERID",
                format!(
                    "bench-{}",
                    target.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
                ),
            ),
            ("CNI_NETNS", netns_path(target)),
            ("CNI_IFNAME", "eth0".to_string()),
            ("CNI_PATH", "/usr/lib/cni".to_string()),
            (
                "MVNET_ROOT",
                ctx.work.join("cni-state").display().to_string(),
            ),
        ];
        let plugin = self.plugin.to_str().unwrap();
        // mvnet-cni hands its work to the state root's resident agent: that CPU time is
        // part of the command's cost, so it is added to the plugin process's own.
        let agent_root = ctx.work.join("cni-state");
        let before = agent_cpu_ms(&agent_root, "cni");
        let (mut s, out) = run(&[plugin], &env, self.conf.to_string().as_bytes());
        if let (Some(b), Some(a)) = (before, agent_cpu_ms(&agent_root, "cni")) {
            s.cpu_ms += (a - b).max(0.0);
        }
        if !s.ok {
            eprintln!("bench: {} {cmd} failed: {}", self.label, out.trim());
        }
        s
    }
}

impl Contestant for Cni {
    fn name(&self) -> &str {
        &self.label
    }
    fn add(&mut self, ctx: &Ctx, _: usize, target: &str) -> Sample {
        self.exec(ctx, "ADD", target)
    }
    fn del(&mut self, ctx: &Ctx, _: usize, target: &str) -> Sample {
        self.exec(ctx, "DEL", target)
    }
}

/// The CPU time (ms) of every thread of the `name` agent (cni, cli) serving `root` (its pid
/// is in the agent's lock file), from the scheduler's nanosecond counters.
pub fn agent_cpu_ms(root: &Path, name: &str) -> Option<f64> {
    let pid = std::fs::read_to_string(root.join(format!("{name}-agent.lock"))).ok()?;
    let tasks = std::fs::read_dir(format!("/proc/{}/task", pid.trim())).ok()?;
    let mut ns = 0u64;
    for t in tasks.flatten() {
        let stat = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
        ns += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(ns as f64 / 1e6)
}

/// The floor: a minimal static binary (`mvnet-floor`) that makes the same kernel calls as
/// an ADD (macvlan with its MAC into the namespace, address, up, default route) and a DEL,
/// with no IPAM, no store and no config.
pub struct Floor {
    pub bin: PathBuf,
}

impl Contestant for Floor {
    fn name(&self) -> &str {
        crate::FLOOR
    }
    fn add(&mut self, _ctx: &Ctx, i: usize, target: &str) -> Sample {
        let ns = netns_path(target);
        let ip = format!("{}/16", nth_ip(210, i));
        let bin = self.bin.to_str().unwrap();
        let (s, out) = run(
            &[bin, "add", &ns, "eth0", "eth0", &ip, "10.210.0.1"],
            &[],
            b"",
        );
        if !s.ok {
            eprintln!("bench: floor ADD failed: {}", out.trim());
        }
        s
    }
    fn del(&mut self, _ctx: &Ctx, _: usize, target: &str) -> Sample {
        let ns = netns_path(target);
        run(&[self.bin.to_str().unwrap(), "del", &ns, "eth0"], &[], b"").0
    }
}

/// netavark `setup`/`teardown` of a macvlan network with static IPs (as podman drives it).
pub struct Netavark {
    pub bin: PathBuf,
}

impl Netavark {
    fn options(i: usize) -> String {
        json!({
            "container_id": format!("{:064x}", i + 1), "container_name": format!("nv{i}"),
            "networks": {"mv": {"interface_name": "eth0", "static_ips": [nth_ip(204, i)]}},
            "network_info": {"mv": {"name": "mv", "id": "1".repeat(64), "driver": "macvlan", "network_interface": "eth0",
                "subnets": [{"subnet": "10.204.0.0/16", "gateway": "10.204.0.1"}], "ipv6_enabled": false,
                "internal": false, "dns_enabled": false, "options": {"mode": "bridge"}, "ipam_options": {"driver": "host-local"}}}
        })
        .to_string()
    }

    fn exec(&self, ctx: &Ctx, cmd: &str, i: usize, target: &str) -> Sample {
        let conf = ctx.work.join("netavark");
        let argv = [
            self.bin.to_str().unwrap(),
            "--config",
            conf.to_str().unwrap(),
            cmd,
            &netns_path(target),
        ];
        let (s, out) = run(&argv, &[], Self::options(i).as_bytes());
        if !s.ok {
            eprintln!("bench: netavark {cmd} failed: {}", out.trim());
        }
        s
    }
}

impl Contestant for Netavark {
    fn name(&self) -> &str {
        "netavark (static IP)"
    }
    fn add(&mut self, ctx: &Ctx, i: usize, target: &str) -> Sample {
        self.exec(ctx, "setup", i, target)
    }
    fn del(&mut self, ctx: &Ctx, i: usize, target: &str) -> Sample {
        self.exec(ctx, "teardown", i, target)
    }
}

/// The floor: the same kernel work with iproute2 and no IPAM. Two processes: create the
/// link inside the target, then a batch for address, up and route there.
pub struct Iproute2;

fn combine(a: Sample, b: Sample) -> Sample {
    Sample {
        wall_ms: a.wall_ms + b.wall_ms,
        cpu_ms: a.cpu_ms + b.cpu_ms,
        max_rss_kib: a.max_rss_kib.max(b.max_rss_kib),
        ok: a.ok && b.ok,
    }
}

impl Contestant for Iproute2 {
    fn name(&self) -> &str {
        "iproute2 floor (no IPAM)"
    }
    fn add(&mut self, _ctx: &Ctx, i: usize, target: &str) -> Sample {
        let (a, _) = run(
            &[
                "ip", "link", "add", "link", "eth0", "name", "eth0", "netns", target, "type",
                "macvlan", "mode", "bridge",
            ],
            &[],
            b"",
        );
        let batch = format!(
            "address add {}/16 dev eth0\nlink set eth0 up\nroute add default via 10.205.0.1\n",
            nth_ip(205, i)
        );
        let (b, _) = run(&["ip", "-n", target, "-batch", "-"], &[], batch.as_bytes());
        combine(a, b)
    }
    fn del(&mut self, _ctx: &Ctx, _: usize, target: &str) -> Sample {
        run(&["ip", "-n", target, "link", "del", "eth0"], &[], b"").0
    }
}

/// `mvnet network connect/disconnect` through the CLI (bare namespaces), on one network.
pub struct MvnetCli {
    pub label: String,
    pub network: String,
}

impl Contestant for MvnetCli {
    fn name(&self) -> &str {
        &self.label
    }
    fn add(&mut self, ctx: &Ctx, _: usize, target: &str) -> Sample {
        let env = [("MVNET_ROOT", ctx.cli_root().display().to_string())];
        let argv = [
            ctx.mvnet.to_str().unwrap(),
            "network",
            "connect",
            &self.network,
            "--netns",
            &netns_path(target),
        ];
        // The CLI hands connect to its resident agent: its CPU time counts too.
        let before = agent_cpu_ms(&ctx.cli_root(), "cli");
        let (mut s, out) = run(&argv, &env, b"");
        if let (Some(b), Some(a)) = (before, agent_cpu_ms(&ctx.cli_root(), "cli")) {
            s.cpu_ms += (a - b).max(0.0);
        }
        if !s.ok {
            eprintln!("bench: mvnet connect failed: {}", out.trim());
        }
        s
    }
    fn del(&mut self, ctx: &Ctx, _: usize, target: &str) -> Sample {
        let env = [("MVNET_ROOT", ctx.cli_root().display().to_string())];
        let argv = [
            ctx.mvnet.to_str().unwrap(),
            "network",
            "disconnect",
            &self.network,
            "--netns",
            &netns_path(target),
        ];
        run(&argv, &env, b"").0
    }
}

/// Docker's own macvlan driver: `docker network connect/disconnect` on a running container,
/// with a private dockerd (own data-root, exec-root, pidfile, socket) on the lab host.
pub struct Docker {
    dir: PathBuf,
    daemon: Child,
}

impl Docker {
    pub fn start(ctx: &Ctx) -> Result<Docker, String> {
        let dir = ctx.work.join("docker");
        std::fs::create_dir_all(dir.join("rootfs/bin")).map_err(|e| e.to_string())?;
        let ns = std::fs::File::open(&ctx.host_netns).map_err(|e| e.to_string())?;
        let mut c = Command::new("dockerd");
        c.arg("--data-root")
            .arg(dir.join("root"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("pid"))
            .arg("-H")
            .arg(format!("unix://{}", dir.join("sock").display()))
            .args([
                "--iptables=false",
                "--ip-masq=false",
                "--storage-driver",
                "vfs",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).map_err(|e| e.to_string())?);
        mvnet_core::netns::spawn_inside(&mut c, ns, None);
        let daemon = c
            .spawn()
            .map_err(|e| format!("dockerd: {e} (install docker.io)"))?;
        let d = Docker { dir, daemon };
        let deadline = Instant::now() + Duration::from_secs(60);
        while d.cli(ctx, &["version"]).is_err() {
            if Instant::now() > deadline {
                return Err("dockerd did not come up in 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        std::fs::copy("/bin/busybox", d.dir.join("rootfs/bin/busybox"))
            .map_err(|e| e.to_string())?;
        for a in ["sh", "sleep"] {
            let _ = std::os::unix::fs::symlink("busybox", d.dir.join(format!("rootfs/bin/{a}")));
        }
        let tar = Command::new("tar")
            .arg("-C")
            .arg(d.dir.join("rootfs"))
            .arg("-cf")
            .arg(d.dir.join("rootfs.tar"))
            .arg(".")
            .status();
        if !tar.map(|s| s.success()).unwrap_or(false) {
            return Err("tar of busybox rootfs failed".into());
        }
        d.cli(
            ctx,
            &[
                "import",
                d.dir.join("rootfs.tar").to_str().unwrap(),
                "bench-busybox",
            ],
        )?;
        d.cli(
            ctx,
            &[
                "network",
                "create",
                "-d",
                "macvlan",
                "--subnet=10.207.0.0/16",
                "--gateway=10.207.0.1",
                "-o",
                "parent=eth0",
                "bench-docker",
            ],
        )?;
        d.cli(
            ctx,
            &[
                "run",
                "-d",
                "--name",
                "bench-box",
                "bench-busybox",
                "sleep",
                "100000",
            ],
        )?;
        Ok(d)
    }

    fn sock(&self) -> String {
        format!("unix://{}", self.dir.join("sock").display())
    }

    fn cli(&self, _ctx: &Ctx, args: &[&str]) -> Result<String, String> {
        let sock = self.sock();
        let mut argv = vec!["docker", "-H", &sock];
        argv.extend_from_slice(args);
        let (s, out) = run(&argv, &[], b"");
        if s.ok {
            Ok(out)
        } else {
            Err(format!("docker {}: {}", args.join(" "), out.trim()))
        }
    }

    pub fn stop(mut self, ctx: &Ctx) {
        let _ = self.cli(ctx, &["rm", "-f", "bench-box"]);
        // SAFETY: kill(2) only sends a signal; no memory is involved.
        unsafe { libc::kill(self.daemon.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.daemon.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

impl Docker {
    /// `docker network connect|disconnect bench-docker bench-box`; a failure says why.
    fn network_cmd(&self, verb: &str) -> Sample {
        let sock = self.sock();
        let argv = [
            "docker",
            "-H",
            &sock,
            "network",
            verb,
            "bench-docker",
            "bench-box",
        ];
        let (s, out) = run(&argv, &[], b"");
        if !s.ok {
            eprintln!("bench: docker network {verb} failed: {}", out.trim());
        }
        s
    }
}

impl Contestant for Docker {
    fn name(&self) -> &str {
        "docker network connect"
    }
    fn add(&mut self, _ctx: &Ctx, _: usize, _: &str) -> Sample {
        self.network_cmd("connect")
    }
    fn del(&mut self, _ctx: &Ctx, _: usize, _: &str) -> Sample {
        self.network_cmd("disconnect")
    }
}
