//! Harness for the Docker plugin's tests: a lab LAN (network namespaces only), and on its
//! docker host a private dockerd (own data root, exec root, socket, pidfile) and the real
//! `mvnet-docker`, both in a private mount namespace whose /run/docker/plugins is a tmpfs,
//! so parallel tests never share a plugin socket. Everything is stopped and removed on
//! drop, even when the test fails. Needs root, docker.io and busybox-static.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mvnet_lab::LabGuard;

pub const IMAGE: &str = "mvnet-busybox";

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.code == 0
    }
}

impl From<Output> for Out {
    fn from(o: Output) -> Out {
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

pub struct DockerLab {
    pub guard: LabGuard,
    pub dir: PathBuf,
    /// Holds the private mount namespace (and sits in the lab host's netns).
    holder: Child,
    plugin: Option<Child>,
    dockerd: Option<Child>,
    /// Namespaces made by `bare_netns`, deleted on drop.
    bare: std::sync::Mutex<Vec<String>>,
}

pub fn require_root() {
    assert!(
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() } == 0,
        "the Docker plugin tests need root: run cargo test as root"
    );
}

fn bin(name: &str) -> PathBuf {
    // target/debug/deps/<test> -> target/debug/<name>
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run cargo build --workspace first",
        p.display()
    );
    p
}

impl DockerLab {
    /// A lab with dockerd and the plugin running, and the busybox image imported.
    pub fn up(tag: &str) -> DockerLab {
        require_root();
        let name = format!("dk{tag}{}", std::process::id() % 10000);
        let guard = LabGuard::up(&name).unwrap_or_else(|e| panic!("lab {name}: {e}"));
        let dir = PathBuf::from(format!("/tmp/mvnet-docker-test-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ready = dir.join("ns-ready");
        let script = format!(
            "mkdir -p /run/docker/plugins && mount -t tmpfs -o mode=0755 tmpfs /run/docker/plugins && touch {} && exec sleep 100000",
            ready.display()
        );
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let ns = std::fs::File::open(guard.lab.host_netns()).unwrap();
        mvnet_core::netns::spawn_inside(&mut c, ns, None);
        let holder = c.spawn().expect("unshare");
        let mut lab = DockerLab {
            guard,
            dir,
            holder,
            plugin: None,
            dockerd: None,
            bare: Default::default(),
        };
        wait_for(
            || ready.exists(),
            Duration::from_secs(10),
            "the mount namespace",
        );
        lab.start_plugin();
        lab.start_dockerd();
        lab.import_image();
        lab
    }

    pub fn root(&self) -> PathBuf {
        self.dir.join("mvnet")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("plugin.log")
    }

    pub fn plugin_log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `argv` inside the holder's mount and network namespaces.
    fn inside(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.holder.id().to_string(), "-m", "-n", "-r", "--"])
            .args(argv);
        c
    }

    pub fn start_plugin(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let plugin = bin("mvnet-docker");
        let root = self.root();
        let sock = self.sock();
        let mut c = self.inside(&[
            plugin.to_str().unwrap(),
            "--root",
            root.to_str().unwrap(),
            "--docker-host",
            &sock,
        ]);
        c.stdout(Stdio::null())
            .stderr(log)
            .env("MVNET_DOCKER_DEBUG", "true");
        self.plugin = Some(c.spawn().expect("mvnet-docker"));
        let started = Instant::now();
        while !self.plugin_log().contains("listening on") {
            if let Some(Some(st)) = self.plugin.as_mut().map(|p| p.try_wait().unwrap()) {
                panic!("mvnet-docker exited with {st}: {}", self.plugin_log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "mvnet-docker did not start: {}",
                self.plugin_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9` of the plugin.
    pub fn kill_plugin(&mut self) {
        if let Some(mut p) = self.plugin.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }

    pub fn sock(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    pub fn start_dockerd(&mut self) {
        self.start_dockerd_with(&[]);
    }

    /// dockerd with more flags (`--live-restore`, say).
    pub fn start_dockerd_with(&mut self, extra: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))
            .unwrap();
        let d = |p: &str| self.dir.join(p).display().to_string();
        let (data, exec, pid, sock) = (d("data"), d("exec"), d("dockerd.pid"), self.sock());
        let mut c = self.inside(&[
            "dockerd",
            "--data-root",
            &data,
            "--exec-root",
            &exec,
            "--pidfile",
            &pid,
            "-H",
            &sock,
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
            "--bridge=none",
            "--storage-driver",
            "vfs",
        ]);
        c.args(extra);
        c.stdout(Stdio::null()).stderr(log);
        self.dockerd = Some(c.spawn().expect("dockerd (install docker.io)"));
        let started = Instant::now();
        while !self.docker(&["version"]).ok() {
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "dockerd did not come up: {}",
                std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn stop_dockerd(&mut self) {
        if let Some(mut d) = self.dockerd.take() {
            // SAFETY: kill(2) only sends a signal.
            unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
            let started = Instant::now();
            while d.try_wait().ok().flatten().is_none() {
                if started.elapsed() > Duration::from_secs(40) {
                    let _ = d.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = d.wait();
        }
    }

    fn import_image(&self) {
        let rootfs = self.dir.join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
            .expect("/bin/busybox (install busybox-static)");
        for a in [
            "sh", "sleep", "ping", "ip", "cat", "httpd", "wget", "ifconfig", "true", "nc",
        ] {
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
            .unwrap()
            .success();
        assert!(ok, "tar");
        let o = self.docker(&["import", tar.to_str().unwrap(), IMAGE]);
        assert!(o.ok(), "docker import: {}", o.stderr);
    }

    /// The docker CLI against this lab's dockerd.
    pub fn docker(&self, args: &[&str]) -> Out {
        Command::new(docker_cli())
            .arg("-H")
            .arg(self.sock())
            .args(args)
            .output()
            .expect("docker CLI")
            .into()
    }

    /// `docker ...` that must succeed; returns stdout, trimmed.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(
            o.ok(),
            "docker {} failed: {}\nplugin log:\n{}",
            args.join(" "),
            o.stderr,
            tail(&self.plugin_log(), 30)
        );
        o.stdout.trim().to_string()
    }

    /// `docker inspect -f TEMPLATE NAME`.
    pub fn inspect(&self, name: &str, template: &str) -> String {
        self.docker_ok(&["inspect", "-f", template, name])
    }

    /// The mvnet CLI on this lab's state root.
    pub fn mvnet(&self, args: &[&str]) -> Out {
        self.mvnet_on_root(&self.root(), args)
    }

    /// The mvnet CLI on another state root (another "host" of a shared pool).
    pub fn mvnet_on_root(&self, root: &Path, args: &[&str]) -> Out {
        let mut c = self.inside(&[bin("mvnet").to_str().unwrap()]);
        c.args(args).env("MVNET_ROOT", root);
        c.output().expect("mvnet").into()
    }

    /// A second state root beside the plugin's (its keeper is stopped with the lab).
    pub fn second_root(&self) -> PathBuf {
        self.dir.join("mvnet-2")
    }

    /// A command in one of the lab's namespaces ("host", "peer", "gw", "out").
    pub fn in_ns(&self, part: &str, argv: &[&str]) -> Out {
        let mut c = mvnet_core::netns::command_in(&self.guard.lab.netns_path(part), argv[0])
            .unwrap_or_else(|e| panic!("{e}"));
        c.args(&argv[1..]);
        c.output().unwrap().into()
    }

    /// The seed's network through Docker: `-d mvnet --ipam-driver mvnet` on the lab LAN.
    pub fn seed_network(&self, name: &str, extra: &[&str]) -> String {
        let mut args = vec![
            "network",
            "create",
            "-d",
            "mvnet",
            "--ipam-driver",
            "mvnet",
            "--subnet=10.103.19.0/24",
            "--gateway=10.103.19.1",
            "-o",
            "parent=eth0",
        ];
        args.extend_from_slice(extra);
        args.push(name);
        self.docker_ok(&args)
    }

    /// Interfaces whose name starts with `prefix` in one of the lab's namespaces.
    pub fn links_in(&self, part: &str, prefix: &str) -> Vec<String> {
        let o = self.in_ns(part, &["ip", "-o", "link", "show"]);
        o.stdout
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .filter(|n| n.starts_with(prefix))
            .collect()
    }
}

impl DockerLab {
    /// A plain network namespace named after the lab; deleted with the lab's namespaces.
    pub fn bare_netns(&self, tag: &str) -> String {
        let name = format!("{}-{tag}", self.guard.lab.name);
        // In the plugin's mount namespace, where the plugin and the CLI can see it.
        let ok = self
            .inside(&["ip", "netns", "add", &name])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip netns add {name}");
        self.bare.lock().unwrap().push(name.clone());
        format!("/run/netns/{name}")
    }

    /// The CNI plugin (`mvnet-cni`) on this lab's host, sharing the plugin's state root.
    pub fn cni(&self, command: &str, netns: &str, ifname: &str, id: &str, conf: &str) -> Out {
        use std::io::Write;
        let mut c = self.inside(&[bin("mvnet-cni").to_str().unwrap()]);
        c.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", "/usr/lib/cni")
            .env("MVNET_ROOT", self.root())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("mvnet-cni");
        let _ = child.stdin.take().unwrap().write_all(conf.as_bytes());
        child.wait_with_output().unwrap().into()
    }
}

/// Gratuitous ARPs announcing `ip` (sender and target address both `ip`) that arrive on
/// the lab peer's eth0 until `stop` is set: (when, source MAC).
pub fn arp_announcements(
    lab: &DockerLab,
    ip: &str,
    stop: &std::sync::atomic::AtomicBool,
) -> Vec<(Instant, [u8; 6])> {
    let want: std::net::Ipv4Addr = ip.parse().unwrap();
    let sniffer =
        mvnet_lab::testkit::Sniffer::open(&lab.guard.lab.netns_path("peer"), "eth0", 0x0806);
    let mut out = Vec::new();
    let mut buf = [0u8; 128];
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let Some((n, _)) = sniffer.recv(&mut buf) else {
            continue;
        };
        if n < 28 {
            continue;
        }
        let op = u16::from_be_bytes([buf[6], buf[7]]);
        let spa = std::net::Ipv4Addr::new(buf[14], buf[15], buf[16], buf[17]);
        let tpa = std::net::Ipv4Addr::new(buf[24], buf[25], buf[26], buf[27]);
        if op == 1 && spa == want && tpa == want {
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&buf[8..14]);
            out.push((Instant::now(), mac));
        }
    }
    out
}

/// Debian's docker CLI, which matches its dockerd 20.10 (a newer CLI earlier in PATH
/// speaks a newer API, and refuses some 20.10 flags).
pub fn docker_cli() -> &'static str {
    if Path::new("/usr/bin/docker").exists() {
        "/usr/bin/docker"
    } else {
        "docker"
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub fn wait_for(mut f: impl FnMut() -> bool, limit: Duration, what: &str) {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// dnsmasq serving 10.103.19.100-150 (2-minute leases) on a Docker lab's gateway.
pub fn dnsmasq(lab: &DockerLab) -> mvnet_lab::testkit::Dnsmasq {
    mvnet_lab::testkit::Dnsmasq::start(&lab.guard.lab, "10.103.19.100,10.103.19.150", "2m")
}

impl Drop for DockerLab {
    fn drop(&mut self) {
        // Containers first (dockerd stops them on SIGTERM), then the plugin, then the
        // namespace holder; the lab guard removes the LAN after this.
        let _ = Command::new(docker_cli())
            .arg("-H")
            .arg(self.sock())
            .args(["rm", "-f", "-v"])
            .args(
                self.docker(&["ps", "-aq"])
                    .stdout
                    .split_whitespace()
                    .map(str::to_string)
                    .collect::<Vec<_>>(),
            )
            .output();
        self.stop_dockerd();
        self.kill_plugin();
        // Fleet keepers the shared-pool tests started.
        for root in [self.root(), self.second_root()] {
            mvnet_core::fleet::keeper::stop(&root);
        }
        // The DHCP lease agent a DHCP network started (it outlives the plugin).
        if let Some(pid) = std::fs::read_to_string(self.root().join("dhcp/agent.lock"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            // SAFETY: kill(2) only sends a signal.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // Containers the mvnet CLI ran on this lab's root.
        if let Ok(mut engine) = mvnet_core::engine::Engine::open(&self.root()) {
            for c in engine.containers().unwrap_or_default() {
                let _ = mvnet_core::runtime::remove(&mut engine, &c.id, true);
            }
        }
        for name in self.bare.lock().unwrap().iter() {
            let _ = self.inside(&["ip", "netns", "del", name]).status();
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        if std::env::var_os("MVNET_KEEP_TEST_DIR").is_none() {
            remove_tree(&self.dir);
        }
    }
}

fn remove_tree(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}
