//! mvnet's Docker plugin (`-d mvnet --ipam-driver mvnet`) beside Docker's built-in
//! `-d macvlan`, on one private dockerd, interleaved round by round: `docker run -d` +
//! `docker rm -f`, and `docker network connect` / `disconnect` on a running container.
//! The plugin's own time per endpoint (CreateEndpoint + Join, RequestAddress) comes from
//! its log, one line per request.
//!
//! dockerd finds plugins only in /run/docker/plugins, so dockerd and the plugin run in a
//! private mount namespace with a tmpfs there (nothing of the machine's Docker is touched).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::contestants::Ctx;
use crate::proc::{run, Sample};

pub struct DockerPair {
    dir: PathBuf,
    holder: Child,
    plugin: Child,
    dockerd: Child,
}

/// Debian's docker CLI, which matches its dockerd 20.10.
fn docker_cli() -> &'static str {
    if Path::new("/usr/bin/docker").exists() {
        "/usr/bin/docker"
    } else {
        "docker"
    }
}

impl DockerPair {
    pub fn start(ctx: &Ctx, plugin_bin: &Path) -> Result<DockerPair, String> {
        let dir = ctx.work.join("docker-plugin");
        std::fs::create_dir_all(dir.join("rootfs/bin")).map_err(|e| e.to_string())?;
        let ready = dir.join("ns-ready");
        let script = format!(
            "mkdir -p /run/docker/plugins && mount -t tmpfs tmpfs /run/docker/plugins && touch {} && exec sleep 1000000",
            ready.display()
        );
        let holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("unshare: {e}"))?;
        let started = Instant::now();
        while !ready.exists() {
            if started.elapsed() > Duration::from_secs(10) {
                return Err("the private mount namespace did not come up".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let inside = |argv: &[&str], log: &str| -> Result<Child, String> {
            let log = std::fs::File::create(dir.join(log)).map_err(|e| e.to_string())?;
            Command::new("nsenter")
                .args(["-t", &holder.id().to_string(), "-m", "-n", "-r", "--"])
                .args(argv)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("{}: {e}", argv[0]))
        };
        let sock = format!("unix://{}", dir.join("docker.sock").display());
        let plugin = inside(
            &[
                plugin_bin.to_str().unwrap(),
                "--root",
                dir.join("mvnet").to_str().unwrap(),
                "--docker-host",
                &sock,
            ],
            "plugin.log",
        )?;
        let d = |p: &str| dir.join(p).display().to_string();
        let dockerd = inside(
            &[
                "dockerd",
                "--data-root",
                &d("data"),
                "--exec-root",
                &d("exec"),
                "--pidfile",
                &d("dockerd.pid"),
                "-H",
                &sock,
                "--iptables=false",
                "--ip-masq=false",
                "--storage-driver",
                "vfs",
            ],
            "dockerd.log",
        )?;
        let pair = DockerPair {
            dir,
            holder,
            plugin,
            dockerd,
        };
        let started = Instant::now();
        while pair.docker(&["version"]).is_err() {
            if started.elapsed() > Duration::from_secs(60) {
                return Err("dockerd did not come up in 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        pair.import_image()?;
        pair.docker(&[
            "network",
            "create",
            "-d",
            "macvlan",
            "--subnet=10.209.0.0/16",
            "--gateway=10.209.0.1",
            "-o",
            "parent=eth0",
            "bd-macvlan",
        ])?;
        pair.docker(&[
            "network",
            "create",
            "-d",
            "mvnet",
            "--ipam-driver",
            "mvnet",
            "--subnet=10.210.0.0/16",
            "--gateway=10.210.0.1",
            "-o",
            "parent=eth0",
            "-o",
            "probe_ms=0",
            "bd-mvnet",
        ])?;
        // The container that networks are connected to and disconnected from.
        pair.docker(&[
            "run",
            "-d",
            "--name",
            "bd-box",
            "bd-busybox",
            "sleep",
            "1000000",
        ])?;
        Ok(pair)
    }

    fn import_image(&self) -> Result<(), String> {
        let rootfs = self.dir.join("rootfs");
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
            .map_err(|e| format!("/bin/busybox: {e} (install busybox-static)"))?;
        for a in ["sh", "sleep"] {
            let _ = std::os::unix::fs::symlink("busybox", rootfs.join(format!("bin/{a}")));
        }
        let tar = self.dir.join("rootfs.tar");
        let ok = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return Err("tar of the busybox root file system failed".into());
        }
        self.docker(&["import", tar.to_str().unwrap(), "bd-busybox"])
            .map(|_| ())
    }

    fn docker(&self, args: &[&str]) -> Result<String, String> {
        let (s, out) = self.docker_timed(args);
        if s.ok {
            Ok(out)
        } else {
            Err(format!("docker {}: {}", args.join(" "), out.trim()))
        }
    }

    fn docker_timed(&self, args: &[&str]) -> (Sample, String) {
        let sock = format!("unix://{}", self.dir.join("docker.sock").display());
        let mut argv = vec![docker_cli(), "-H", &sock];
        argv.extend_from_slice(args);
        run(&argv, &[], b"")
    }

    /// `n` rounds; in each, both drivers do run+rm and connect+disconnect, the order
    /// alternating between rounds.
    pub fn measure(&self, n: usize) -> Value {
        let drivers = [("macvlan", "bd-macvlan"), ("mvnet", "bd-mvnet")];
        let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let mut errors = 0;
        for i in 0..n {
            for k in 0..2 {
                let (driver, net) = drivers[(i + k) % 2];
                let name = format!("bd-{driver}-{i}");
                let mut take = |what: &str, args: &[&str]| {
                    let (s, out) = self.docker_timed(args);
                    if !s.ok {
                        errors += 1;
                        eprintln!("bench: docker {}: {}", args.join(" "), out.trim());
                    }
                    samples
                        .entry(format!("{driver} {what}"))
                        .or_default()
                        .push(s.wall_ms);
                };
                take(
                    "run",
                    &[
                        "run",
                        "-d",
                        "--network",
                        net,
                        "--name",
                        &name,
                        "bd-busybox",
                        "sleep",
                        "1000000",
                    ],
                );
                take("rm", &["rm", "-f", &name]);
                take("connect", &["network", "connect", net, "bd-box"]);
                take("disconnect", &["network", "disconnect", net, "bd-box"]);
            }
        }
        let median = |v: &[f64]| crate::stats(v)["median"].as_f64().unwrap_or(f64::NAN);
        let mut ops = serde_json::Map::new();
        for (k, v) in &samples {
            ops.insert(k.clone(), json!({"median_ms": median(v), "samples_ms": v}));
        }
        let log = std::fs::read_to_string(self.dir.join("plugin.log")).unwrap_or_default();
        let plugin = plugin_times(&log);
        json!({"rounds": n, "errors": errors, "ops": ops, "plugin": plugin})
    }

    pub fn stop(mut self) {
        let _ = self.docker(&["rm", "-f", "bd-box"]);
        // SAFETY: kill(2) only sends a signal.
        unsafe { libc::kill(self.dockerd.id() as i32, libc::SIGTERM) };
        let started = Instant::now();
        while self.dockerd.try_wait().ok().flatten().is_none() {
            if started.elapsed() > Duration::from_secs(30) {
                let _ = self.dockerd.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.dockerd.wait();
        let _ = self.plugin.kill();
        let _ = self.plugin.wait();
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// The plugin's own time per endpoint from its log: CreateEndpoint + Join of each
/// endpoint id, and RequestAddress (where the link is built) on its own; medians in ms.
pub fn plugin_times(log: &str) -> Value {
    let ms = |line: &str| -> Option<f64> {
        let tail = line.rsplit('(').next()?;
        tail.strip_suffix(" ms)")?.trim().parse().ok()
    };
    let mut per_endpoint: BTreeMap<String, f64> = BTreeMap::new();
    let mut request_address = Vec::new();
    for line in log.lines().filter(|l| l.contains("-> ok (")) {
        let Some(t) = ms(line) else { continue };
        if line.starts_with("NetworkDriver.CreateEndpoint ")
            || line.starts_with("NetworkDriver.Join ")
        {
            if let Some(ep) = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("endpointid="))
            {
                *per_endpoint.entry(ep.to_string()).or_default() += t;
            }
        } else if line.starts_with("IpamDriver.RequestAddress ")
            && !line.contains("RequestAddressType")
        {
            request_address.push(t);
        }
    }
    let ce_join: Vec<f64> = per_endpoint.values().copied().collect();
    json!({
        "create_endpoint_plus_join_ms": crate::stats(&ce_join),
        "request_address_ms": crate::stats(&request_address),
    })
}

/// The section's part of the report (markdown).
pub fn table(dp: &Value) -> String {
    let dop = |driver: &str, op: &str| {
        dp["ops"][format!("{driver} {op}")]["median_ms"]
            .as_f64()
            .unwrap_or(f64::NAN)
    };
    let mut t = format!(
        "\nDocker plugin: one dockerd 20.10, {} interleaved rounds, {} errors (medians, ms; mvnet's network probes nothing, -o probe_ms=0, like Docker's driver)\n\n| operation | -d macvlan (Docker) | -d mvnet | mvnet / Docker |\n|---|---:|---:|---:|\n",
        dp["rounds"], dp["errors"]
    );
    for op in ["run", "rm", "connect", "disconnect"] {
        t += &format!(
            "| docker {op} | {:.1} | {:.1} | {:.2} |\n",
            dop("macvlan", op),
            dop("mvnet", op),
            dop("mvnet", op) / dop("macvlan", op)
        );
    }
    let med = |k: &str| dp["plugin"][k]["median"].as_f64().unwrap_or(f64::NAN);
    t += &format!(
        "\nThe plugin's own time (its log): CreateEndpoint + Join {:.2} ms median, RequestAddress (reservation and link) {:.2} ms median\n",
        med("create_endpoint_plus_join_ms"),
        med("request_address_ms")
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_times_are_read_from_the_log() {
        let log = "\
IpamDriver.RequestAddress poolid=mvnet:10.210.0.0/16 -> ok (1.50 ms)
NetworkDriver.CreateEndpoint networkid=aa endpointid=e1 address=10.210.0.2/16 -> ok (0.40 ms)
NetworkDriver.Join networkid=aa endpointid=e1 -> ok (0.30 ms)
NetworkDriver.CreateEndpoint networkid=aa endpointid=e2 -> ok (0.60 ms)
NetworkDriver.Join networkid=aa endpointid=e2 -> ok (0.50 ms)
NetworkDriver.Join networkid=aa endpointid=e3 -> error: nope (0.10 ms)
";
        let v = plugin_times(log);
        assert_eq!(v["create_endpoint_plus_join_ms"]["n"], 2);
        let med = v["create_endpoint_plus_join_ms"]["median"]
            .as_f64()
            .unwrap();
        assert!((0.69..=1.11).contains(&med), "{v}");
        assert_eq!(v["request_address_ms"]["n"], 1);
    }
}
