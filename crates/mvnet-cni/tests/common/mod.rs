//! Namespaces for CNI tests: an "origin" namespace that holds the master (like a host) and
//! target namespaces (containers), all removed on drop even when a test fails.
#![allow(dead_code)]

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use serde_json::Value;

pub const PLUGIN: &str = env!("CARGO_BIN_EXE_mvnet-cni");
/// The full plugin the forwarder (`PLUGIN`) runs from its own directory.
pub const FULL_PLUGIN: &str = env!("CARGO_BIN_EXE_mvnet-cni-full");

/// The plugin under test: this build's, or the package's static build when
/// scripts/test.sh runs the tests again with it (`MVNET_TEST_CNI_PLUGIN`).
pub fn chosen_plugin() -> String {
    std::env::var("MVNET_TEST_CNI_PLUGIN").unwrap_or_else(|_| PLUGIN.to_string())
}

/// Named namespaces for one test, deleted on drop.
pub struct World {
    pub tag: String,
    pub made: Vec<String>,
    pub root: std::path::PathBuf,
}

impl Drop for World {
    fn drop(&mut self) {
        for n in &self.made {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

pub fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

impl World {
    /// An origin namespace with `lan0` (master, up, 192.0.2.5) and a default route through
    /// it, so default-master detection has something safe to find. The far end of its
    /// cable, `lan1`, is another device on the LAN, in its own namespace, holding
    /// 192.0.2.10 (the probe tests need a LAN device that is not the host itself).
    pub fn new() -> World {
        // SAFETY: geteuid has no preconditions and cannot fail.
        assert_eq!(unsafe { libc::geteuid() }, 0, "needs root");
        let tag = mvnet_core::ids::new_id()[..8].to_string();
        let mut w = World {
            tag: tag.clone(),
            made: vec![],
            root: std::env::temp_dir().join(format!("mvnet-cni-{tag}")),
        };
        let origin = w.netns("o");
        ip(&[
            "-n", &origin, "link", "add", "lan0", "type", "veth", "peer", "name", "lan1",
        ]);
        let lan = w.netns("lan");
        ip(&["-n", &origin, "link", "set", "lan1", "netns", &lan]);
        ip(&["-n", &origin, "link", "set", "lan0", "up"]);
        ip(&["-n", &lan, "link", "set", "lan1", "up"]);
        ip(&["-n", &origin, "addr", "add", "192.0.2.5/24", "dev", "lan0"]);
        ip(&["-n", &lan, "addr", "add", "192.0.2.10/24", "dev", "lan1"]);
        ip(&["-n", &origin, "route", "add", "default", "via", "192.0.2.1"]);
        w
    }

    pub fn netns(&mut self, suffix: &str) -> String {
        let name = format!("cni-{}-{suffix}", self.tag);
        ip(&["netns", "add", &name]);
        self.made.push(name.clone());
        name
    }

    pub fn origin(&self) -> String {
        format!("cni-{}-o", self.tag)
    }

    /// The namespace of the LAN device at the far end of the master's cable.
    pub fn lan(&self) -> String {
        format!("cni-{}-lan", self.tag)
    }

    /// Runs a plugin binary inside the origin namespace with the CNI environment: its
    /// exit code and its stdout as JSON (`Null` if it printed none).
    pub fn exec(
        &self,
        plugin: &str,
        cmd: &str,
        target: &str,
        ifname: &str,
        conf: &Value,
        extra_env: &[(&str, &str)],
    ) -> (i32, Value) {
        let (code, stdout, _) = self.exec_raw(plugin, cmd, target, ifname, conf, extra_env);
        (code, serde_json::from_slice(&stdout).unwrap_or(Value::Null))
    }

    /// `exec` with stdout as the plugin printed it, byte for byte, and its stderr.
    pub fn exec_raw(
        &self,
        plugin: &str,
        cmd: &str,
        target: &str,
        ifname: &str,
        conf: &Value,
        extra_env: &[(&str, &str)],
    ) -> (i32, Vec<u8>, String) {
        let child = self.spawn(plugin, cmd, target, ifname, conf, extra_env);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code().unwrap_or(-1), out.stdout, stderr)
    }

    /// Starts the plugin as a runtime does: in the origin namespace, with the CNI
    /// environment for `target` and `conf` on stdin (stdout and stderr piped). `PLUGIN`
    /// means the plugin under test (`chosen_plugin`).
    pub fn spawn(
        &self,
        plugin: &str,
        cmd: &str,
        target: &str,
        ifname: &str,
        conf: &Value,
        extra_env: &[(&str, &str)],
    ) -> std::process::Child {
        let ns = std::fs::File::open(format!("/run/netns/{}", self.origin())).unwrap();
        let chosen = chosen_plugin();
        let plugin = if plugin == PLUGIN { &chosen } else { plugin };
        let mut c = Command::new(plugin);
        c.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", format!("ctr-{target}"))
            .env(
                "CNI_NETNS",
                if target.is_empty() {
                    String::new()
                } else {
                    format!("/run/netns/{target}")
                },
            )
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", "/usr/lib/cni")
            .env("MVNET_ROOT", &self.root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in extra_env {
            c.env(k, v);
        }
        // SAFETY: setns(2) on an fd that is open for the call; it changes only this thread's namespace.
        unsafe {
            c.pre_exec(move || {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = c.spawn().unwrap();
        // A plugin may reject its environment and exit before reading stdin.
        let _ = child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.to_string().as_bytes());
        child
    }

    pub fn ok(&self, cmd: &str, target: &str, conf: &Value) -> Value {
        let (code, v) = self.exec(PLUGIN, cmd, target, "eth0", conf, &[]);
        assert_eq!(code, 0, "{cmd} {conf}: {v}");
        v
    }

    pub fn link(&self, ns: &str, ifname: &str) -> Option<Value> {
        let o = Command::new("ip")
            .args(["-n", ns, "-j", "-d", "addr", "show", ifname])
            .output()
            .unwrap();
        if !o.status.success() {
            return None;
        }
        serde_json::from_slice::<Value>(&o.stdout)
            .ok()
            .and_then(|v| v.get(0).cloned())
    }
}

/// Whether the running kernel can create an ipvlan link (checked with iproute2).
pub fn kernel_has_ipvlan() -> bool {
    let ns = format!("kip-{}", &mvnet_core::ids::new_id()[..8]);
    let run = |a: &[&str]| {
        Command::new("ip")
            .args(a)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    run(&["netns", "add", &ns]);
    let ok = run(&[
        "-n", &ns, "link", "add", "p0", "type", "veth", "peer", "name", "p1",
    ]) && run(&[
        "-n", &ns, "link", "add", "link", "p0", "name", "x0", "type", "ipvlan",
    ]);
    run(&["netns", "del", &ns]);
    ok
}
