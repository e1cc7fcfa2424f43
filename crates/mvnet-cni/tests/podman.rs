//! A real container runtime: podman (CNI backend, runc) runs a busybox container on an
//! mvnet-cni network in the sandbox lab, and the container pings the lab gateway (root).
//!
//! The recipe, kept here on purpose: the image is a busybox-static root file system brought
//! in with `podman import` (no registry); podman runs on the lab's docker host (so the CNI
//! master `eth0` is the lab's); storage is vfs under a temporary root; containers.conf
//! selects the CNI backend, our plugin directory and runc, and empties default_ulimits
//! (the defaults exceed this machine's hard limits).

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use mvnet_lab::LabGuard;

struct Workdir(PathBuf);

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

#[test]
fn podman_runs_a_busybox_container_on_an_mvnet_cni_network() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    assert_eq!(unsafe { libc::geteuid() }, 0, "needs root");
    let tag = mvnet_core::ids::new_id()[..8].to_string();
    let lab = LabGuard::up(&format!("pm{tag}")).unwrap();
    let w = Workdir(std::env::temp_dir().join(format!("mvnet-podman-{tag}")));
    let dir = |p: &str| w.0.join(p);
    for d in ["cni-bin", "net.d", "rootfs/bin", "state"] {
        std::fs::create_dir_all(dir(d)).unwrap();
    }
    std::fs::copy(env!("CARGO_BIN_EXE_mvnet-cni"), dir("cni-bin/mvnet-cni")).unwrap();
    std::fs::copy(
        env!("CARGO_BIN_EXE_mvnet-cni-full"),
        dir("cni-bin/mvnet-cni-full"),
    )
    .unwrap();
    std::fs::copy("/bin/busybox", dir("rootfs/bin/busybox")).expect("busybox-static is installed");
    for applet in ["sh", "ip", "ping", "cat", "sleep"] {
        std::os::unix::fs::symlink("busybox", dir(&format!("rootfs/bin/{applet}"))).unwrap();
    }
    let tar = Command::new("tar")
        .arg("-C")
        .arg(dir("rootfs"))
        .arg("-cf")
        .arg(dir("rootfs.tar"))
        .arg(".")
        .status()
        .unwrap();
    assert!(tar.success());
    write(&dir("containers.conf"), &format!(
        "[containers]\ndefault_ulimits = []\n[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\", \"/usr/lib/cni\"]\nnetwork_config_dir = \"{}\"\n[engine]\nruntime = \"runc\"\n",
        dir("cni-bin").display(), dir("net.d").display()));
    write(
        &dir("net.d/mvlan.conflist"),
        &format!(
            r#"{{"cniVersion":"1.0.0","name":"mvlan","plugins":[{{"type":"mvnet-cni","master":"eth0","ipam":{{"type":"mvnet","subnet":"10.103.19.0/24","gateway":"10.103.19.1","rangeStart":"10.103.19.100","routes":[{{"dst":"0.0.0.0/0"}}],"dataDir":"{}"}}}}]}}"#,
            dir("state").display()
        ),
    );

    let podman = |args: &[&str]| {
        let ns = std::fs::File::open(lab.lab.host_netns()).unwrap();
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", dir("containers.conf"))
            .arg("--root")
            .arg(dir("root"))
            .arg("--runroot")
            .arg(dir("runroot"))
            .args(["--storage-driver", "vfs", "--network-config-dir"])
            .arg(dir("net.d"))
            .args(args);
        // SAFETY: setns(2) on an fd that is open for the call; it changes only this thread's namespace.
        unsafe {
            c.pre_exec(move || {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let o = c.output().expect("podman is installed");
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, _, err) = podman(&[
        "import",
        dir("rootfs.tar").to_str().unwrap(),
        "mvnet-busybox",
    ]);
    assert_eq!(code, 0, "podman import: {err}");
    let (code, out, err) = podman(&[
        "run",
        "--rm",
        "--network",
        "mvlan",
        "mvnet-busybox",
        "sh",
        "-c",
        "ip addr show eth0 && ip route && ping -c 2 -W 2 10.103.19.1",
    ]);
    assert_eq!(code, 0, "podman run: {out}\n{err}");
    assert!(out.contains("inet 10.103.19.100/24"), "{out}");
    assert!(
        out.contains("link/ether 02:42:0a:67:13:64"),
        "MAC rule through podman: {out}"
    );
    assert!(out.contains("default via 10.103.19.1 dev eth0"), "{out}");
    assert!(out.contains("2 packets received"), "{out}");
    // podman called DEL on --rm: the store holds nothing for the network any more.
    use mvnet_core::store::Store;
    let mut store = mvnet_core::store::SqliteStore::open(&dir("state")).unwrap();
    let net = store.network("mvlan").unwrap();
    assert!(store.endpoints_of_network(&net.id).unwrap().is_empty());
    let _ = podman(&["rmi", "-af"]);
}
