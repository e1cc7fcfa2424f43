//! Harness for real-kernel tests: each test gets its own lab (unique names, so tests run in
//! parallel), runs the real `mvnet` binary on the lab's docker host, and tears it all down on
//! drop, even when the test fails. Needs root.
#![allow(dead_code)]

pub mod dhcpd;

use std::process::{Command, Output};

use mvnet_lab::LabGuard;

pub struct TestLab {
    pub guard: LabGuard,
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
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

/// The outcome of a command that must fail with one line on stderr; returns that line.
pub fn one_line_error(o: Out) -> String {
    assert_ne!(o.code, 0, "should have failed: {}", o.stdout);
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one-line error expected, got: {}", o.stderr);
    lines[0].to_string()
}

pub fn require_root() {
    assert!(
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() } == 0,
        "real-kernel tests need root (CAP_NET_ADMIN, CAP_SYS_ADMIN): run cargo test as root"
    );
}

/// A command that runs inside the namespace at `path`.
pub fn in_netns(path: &std::path::Path, argv: &[&str]) -> Command {
    let mut cmd = mvnet_core::netns::command_in(path, argv[0]).unwrap_or_else(|e| panic!("{e}"));
    cmd.args(&argv[1..]);
    cmd
}

/// A plain network namespace, not a container (for `network connect --netns`), deleted on
/// drop even when the test fails.
pub struct BareNetns {
    pub name: String,
    pub path: String,
}

impl Drop for BareNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

impl TestLab {
    /// A bare namespace named after the lab (so parallel tests never collide).
    pub fn bare_netns(&self, tag: &str) -> BareNetns {
        let name = format!("{}-{tag}", self.name());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip netns add {name}");
        BareNetns {
            path: format!("/run/netns/{name}"),
            name,
        }
    }

    pub fn new() -> TestLab {
        TestLab::with_hosts(1)
    }

    /// A lab with `hosts` docker hosts on its LAN, each with its own state root.
    pub fn with_hosts(hosts: usize) -> TestLab {
        require_root();
        let name = format!("t{}", &mvnet_core::ids::new_id()[..10]);
        TestLab {
            guard: LabGuard::up_with_hosts(&name, hosts).expect("lab comes up"),
        }
    }

    pub fn name(&self) -> &str {
        &self.guard.lab.name
    }

    pub fn root(&self) -> std::path::PathBuf {
        self.guard.lab.state_root()
    }

    /// `mvnet ARGS` on the lab's docker host, with the lab's state root.
    pub fn mvnet(&self, args: &[&str]) -> Out {
        self.mvnet_on(1, args)
    }

    /// `mvnet ARGS` on docker host `host` of a multi-host lab (its own state root and
    /// host name).
    pub fn mvnet_on(&self, host: usize, args: &[&str]) -> Out {
        let mut argv = vec![env!("CARGO_BIN_EXE_mvnet")];
        argv.extend_from_slice(args);
        let lab = &self.guard.lab;
        let mut cmd = in_netns(&lab.netns_path(&mvnet_lab::Lab::host_part(host)), &argv);
        cmd.env("MVNET_ROOT", lab.host_state_root(host))
            .env("MVNET_HOST_NAME", mvnet_lab::Lab::host_part(host))
            .env_remove("MVNET_LOG");
        cmd.output().expect("run mvnet").into()
    }

    /// `mvnet_on` that must succeed; returns stdout.
    pub fn ok_on(&self, host: usize, args: &[&str]) -> String {
        let o = self.mvnet_on(host, args);
        assert_eq!(
            o.code, 0,
            "mvnet {args:?} on host {host} failed: {}{}",
            o.stdout, o.stderr
        );
        o.stdout
    }

    /// `mvnet-cni` (the workspace's build, next to `mvnet`) on the lab's docker host with the
    /// lab's state root: CNI_COMMAND=`command`, the config on stdin.
    pub fn cni(&self, command: &str, netns: &str, ifname: &str, id: &str, conf: &str) -> Out {
        self.cni_with(command, netns, ifname, id, conf, &[])
    }

    /// `cni` with more environment (CNI_ARGS, say).
    pub fn cni_with(
        &self,
        command: &str,
        netns: &str,
        ifname: &str,
        id: &str,
        conf: &str,
        extra: &[(&str, &str)],
    ) -> Out {
        self.cni_on(1, command, netns, ifname, id, conf, extra)
    }

    /// `cni_with` on docker host `host` of a multi-host lab.
    #[allow(clippy::too_many_arguments)]
    pub fn cni_on(
        &self,
        host: usize,
        command: &str,
        netns: &str,
        ifname: &str,
        id: &str,
        conf: &str,
        extra: &[(&str, &str)],
    ) -> Out {
        use std::io::Write;
        let plugin = std::path::Path::new(env!("CARGO_BIN_EXE_mvnet")).with_file_name("mvnet-cni");
        let lab = &self.guard.lab;
        let mut cmd = in_netns(
            &lab.netns_path(&mvnet_lab::Lab::host_part(host)),
            &[plugin.to_str().unwrap()],
        );
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", "/usr/lib/cni")
            .env("MVNET_ROOT", lab.host_state_root(host))
            .env("MVNET_HOST_NAME", mvnet_lab::Lab::host_part(host))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("run mvnet-cni");
        let _ = child.stdin.take().unwrap().write_all(conf.as_bytes());
        child.wait_with_output().expect("mvnet-cni output").into()
    }

    /// `mvnet ARGS` that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.mvnet(args);
        assert_eq!(o.code, 0, "mvnet {args:?} failed: {}{}", o.stdout, o.stderr);
        o.stdout
    }

    /// `mvnet ARGS` that must fail with one line on stderr; returns that line.
    pub fn fails(&self, args: &[&str]) -> String {
        one_line_error(self.mvnet(args))
    }

    /// `mvnet inspect NAME` parsed.
    pub fn inspect(&self, container: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["inspect", container])).unwrap();
        v[0].clone()
    }

    /// Runs ARGV in one of the lab's machines ("host", "peer", "gw", "out", "sw").
    pub fn on(&self, machine: &str, argv: &[&str]) -> Out {
        in_netns(&self.guard.lab.netns_path(machine), argv)
            .output()
            .expect("run command in lab")
            .into()
    }

    /// Whether `ping` from a lab machine to `ip` gets an answer.
    pub fn machine_reaches(&self, machine: &str, ip: &str) -> bool {
        self.on(machine, &["ping", "-c", "1", "-W", "1", ip]).code == 0
    }

    /// Whether `ping` from a container to `ip` gets an answer.
    pub fn container_reaches(&self, container: &str, ip: &str) -> bool {
        self.mvnet(&["exec", container, "--", "ping", "-c", "1", "-W", "1", ip])
            .code
            == 0
    }

    pub fn seed_network(&self, name: &str, extra: &[&str]) -> String {
        let mut args = vec![
            "network",
            "create",
            "-d",
            "macvlan",
            "--subnet=10.103.19.0/24",
            "--gateway=10.103.19.1",
            "-o",
            "parent=eth0",
        ];
        args.extend_from_slice(extra);
        args.push(name);
        self.ok(&args).trim().to_string()
    }

    /// Two networks on the lab's LAN that share it without overlapping: `first` with the
    /// range .0/26, `second` with .128/26 (and `extra` options).
    pub fn two_networks(&self, first: &str, second: &str, extra: &[&str]) {
        self.seed_network(first, &["--ip-range=10.103.19.0/26"]);
        let mut args = vec![
            "network",
            "create",
            "-o",
            "parent=eth0",
            "--subnet=10.103.19.0/24",
            "--ip-range=10.103.19.128/26",
        ];
        args.extend_from_slice(extra);
        args.push(second);
        self.ok(&args);
    }

    /// A detached container running `sleep infinity`.
    pub fn container(&self, name: &str, network: &str, extra: &[&str]) -> String {
        let o = self.try_container(name, network, extra);
        assert_eq!(o.code, 0, "mvnet run {name}: {}{}", o.stdout, o.stderr);
        o.stdout.trim().to_string()
    }

    /// `container`, returning the outcome whatever it is (to check warnings or errors).
    pub fn try_container(&self, name: &str, network: &str, extra: &[&str]) -> Out {
        let mut args = vec!["run", "-d", "--network", network, "--name", name];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "sleep", "infinity"]);
        self.mvnet(&args)
    }

    pub fn ip_of(&self, container: &str, network: &str) -> String {
        self.inspect(container)["NetworkSettings"]["Networks"][network]["IPAddress"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// `ip -j` of a lab machine or a path, for checks independent of mvnet.
    pub fn ip_json(&self, netns_path: &str, args: &[&str]) -> serde_json::Value {
        let mut argv = vec!["ip", "-j"];
        argv.extend_from_slice(args);
        let o: Out = in_netns(std::path::Path::new(netns_path), &argv)
            .output()
            .unwrap()
            .into();
        assert_eq!(o.code, 0, "ip {args:?}: {}", o.stderr);
        serde_json::from_str(&o.stdout).unwrap_or(serde_json::Value::Null)
    }

    pub fn host_links(&self) -> Vec<String> {
        let v = self.ip_json(self.guard.lab.host_netns().to_str().unwrap(), &["link"]);
        v.as_array()
            .unwrap()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_string())
            .collect()
    }

    /// What a failed command must leave untouched in this lab: its state and host links.
    pub fn lab_snapshot(&self) -> (String, String, Vec<String>) {
        let (n, p, l, _) = self.snapshot();
        (n, p, l)
    }

    /// Everything a failed command must leave untouched: state listings, host links, and the
    /// container namespaces no store knows (leaked ones). Counts nothing machine-wide, so
    /// it holds while other tests (or other containers) come and go.
    pub fn snapshot(&self) -> (String, String, Vec<String>, Vec<String>) {
        let nets = self.ok(&["network", "ls", "--format", "json"]);
        let ps = self.ok(&["ps", "-a", "--format", "json"]);
        (nets, ps, self.host_links(), orphan_container_netns())
    }
}

/// Container namespaces (`/run/netns/mvnet-*`) that no state root on this machine lists:
/// leaked ones. mvnet writes a container's row before its namespace and removes it after,
/// so a namespace of a container that is being made or removed elsewhere is never counted.
pub fn orphan_container_netns() -> Vec<String> {
    // A container being removed elsewhere loses its namespace, then its row: one pass can
    // see the namespace before and miss the row after. Only what two passes agree on, and
    // still exists, counts.
    let first = orphan_pass();
    if first.is_empty() {
        return first;
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let second = orphan_pass();
    first
        .into_iter()
        .filter(|n| second.contains(n) && std::path::Path::new("/run/netns").join(n).exists())
        .collect()
}

fn orphan_pass() -> Vec<String> {
    let names = |dir: &str| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut candidates: Vec<String> = names("/run/netns")
        .into_iter()
        .filter(|n| n.starts_with("mvnet-"))
        .collect();
    if candidates.is_empty() {
        return candidates;
    }
    // Every state root a test may be using right now, not only this test's: another test
    // binary (or a benchmark run) may run beside this one, and its container is no orphan.
    // Tests keep their roots in labs (/run/mvnet/lab/NAME, and NAME/hosts/PART for more
    // hosts) or under the temp directory (the benchmark's smoke run, DHCP and Docker labs).
    let mut roots = Vec::new();
    state_roots_under(std::path::Path::new("/run/mvnet/lab"), 3, &mut roots);
    state_roots_under(&std::env::temp_dir(), 3, &mut roots);
    roots.push(mvnet_core::engine::DEFAULT_ROOT.to_string());
    for root in &roots {
        // Read in place, never created: another test's lab may be going away right now,
        // and `mvnet ps` on a root removed a moment ago would make it again.
        use mvnet_core::store::Store;
        let Ok(mut store) =
            mvnet_core::store::SqliteStore::open_existing(std::path::Path::new(root))
        else {
            continue;
        };
        let ids: Vec<String> = store
            .containers()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .collect();
        candidates.retain(|n| {
            let short = n.trim_start_matches("mvnet-");
            !ids.iter().any(|id| id.starts_with(short))
        });
    }
    candidates.sort();
    candidates
}

/// The directories under `dir`, down to `depth` levels, that hold an mvnet state
/// (`mvnet.db`). Symbolic links are not followed.
fn state_roots_under(dir: &std::path::Path, depth: usize, roots: &mut Vec<String>) {
    if dir.join("mvnet.db").is_file() {
        roots.push(dir.display().to_string());
    }
    if depth == 0 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            state_roots_under(&e.path(), depth - 1, roots);
        }
    }
}

#[allow(unused_imports)]
pub use mvnet_lab::testkit::kernel_has;

/// For tests that need a kernel feature this machine may lack (see
/// `mvnet_lab::testkit::full_kernel_or_skip`); needs root.
pub fn full_kernel_or_skip(kind: &str, test: &str) -> bool {
    require_root();
    mvnet_lab::testkit::full_kernel_or_skip(kind, test)
}

/// A fresh path under the temp directory (not created), removed with whatever the test
/// put there when the guard goes, even when the test fails.
pub struct Scratch(pub std::path::PathBuf);

impl Scratch {
    pub fn new(prefix: &str) -> Scratch {
        Scratch(std::env::temp_dir().join(format!("{prefix}-{}", mvnet_core::ids::new_id())))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0).or_else(|_| std::fs::remove_file(&self.0));
    }
}

impl std::ops::Deref for Scratch {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for Scratch {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}
