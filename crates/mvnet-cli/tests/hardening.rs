//! Regression tests for the defects of the hardening issue (#19), in the sandbox lab. Each
//! test names its item; each failed before its fix.

mod common;
use common::{one_line_error, Scratch, TestLab};

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

/// The pids of processes whose network namespace is `netns_path`'s.
fn pids_in_netns(netns_path: &str) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(ns) = std::fs::metadata(netns_path) else {
        return Vec::new();
    };
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| m.ino() == ns.ino() && m.dev() == ns.dev())
        })
        .collect()
}

fn alive(pid: i32) -> bool {
    // A zombie still has a /proc entry; only a running process counts.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let st = s[s.rfind(')').unwrap() + 2..].chars().next().unwrap();
            st != 'Z' && st != 'X'
        })
        .unwrap_or(false)
}

fn sandbox_key(lab: &TestLab, c: &str) -> String {
    lab.inspect(c)["NetworkSettings"]["SandboxKey"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Item 2: the host's own address (10.103.19.10) is never handed out, and asking for it
/// by name is refused with the interface that holds it.
#[test]
fn item02_host_address_is_never_given_to_a_container() {
    let lab = TestLab::new();
    lab.seed_network("base", &["--ip-range=10.103.19.8/30", "-o", "probe_ms=0"]);
    let e = lab.fails(&[
        "run",
        "-d",
        "--network",
        "base",
        "--ip",
        "10.103.19.10",
        "--",
        "sleep",
        "1000",
    ]);
    assert!(
        e.contains("10.103.19.10") && e.contains("eth0") && e.contains("this host"),
        "{e}"
    );
    let mut got = Vec::new();
    for n in ["a", "b", "c"] {
        lab.container(n, "base", &[]);
        got.push(lab.ip_of(n, "base"));
    }
    assert!(!got.contains(&"10.103.19.10".to_string()), "{got:?}");
    assert_eq!(got, ["10.103.19.8", "10.103.19.9", "10.103.19.11"]);
    assert!(
        lab.machine_reaches("host", "10.103.19.1"),
        "the host kept its LAN"
    );
}

/// Item 3: when `rm -f` returns, the container's address is gone from the LAN: nothing
/// announces it afterwards, so the address can be used again at once with another MAC.
#[test]
fn item03_rm_takes_the_address_off_the_lan_at_once() {
    let lab = TestLab::new();
    lab.seed_network("base", &[]);
    for round in 0..3 {
        let name = format!("c{round}");
        lab.container(&name, "base", &["--ip", "10.103.19.50"]);
        lab.ok(&["rm", "-f", &name]);
        // Probing is on (30 ms): a late announcement from the old MAC would be seen here.
        let again = format!("d{round}");
        lab.container(
            &again,
            "base",
            &["--ip", "10.103.19.50", "--mac-address", "02:00:00:00:aa:01"],
        );
        lab.ok(&["rm", "-f", &again]);
    }
}

/// Item 4: `rm -f` kills every process of the container, also children that left its
/// process group, and its namespace and link go with them.
#[test]
fn item04_rm_kills_the_whole_container() {
    let lab = TestLab::new();
    lab.seed_network("base", &[]);
    lab.ok(&[
        "run",
        "-d",
        "--network",
        "base",
        "--name",
        "t",
        "--",
        "sh",
        "-c",
        "setsid sleep 1000 & sleep 1000 & wait",
    ]);
    let key = sandbox_key(&lab, "t");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut pids = pids_in_netns(&key);
    while pids.len() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        pids = pids_in_netns(&key);
    }
    assert!(pids.len() >= 3, "sh and two sleeps expected: {pids:?}");
    lab.ok(&["rm", "-f", "t"]);
    let left: Vec<i32> = pids.into_iter().filter(|p| alive(*p)).collect();
    assert!(left.is_empty(), "still running after rm -f: {left:?}");
    assert!(!std::path::Path::new(&key).exists(), "namespace file gone");
    assert!(
        lab.machine_reaches("peer", "10.103.19.1") && !lab.machine_reaches("peer", "10.103.19.2"),
        "the container's address is off the LAN"
    );
}

/// Item 5: `mvnet run` killed at random moments leaves nothing that blocks later runs: the
/// next runs succeed, abandoned `Created` containers are cleaned up, no orphan link stays.
#[test]
fn item05_killed_runs_do_not_block_later_ones() {
    let lab = TestLab::new();
    lab.seed_network("base", &["-o", "probe_ms=0"]);
    let mvnet = env!("CARGO_BIN_EXE_mvnet");
    let host = lab.guard.lab.host_netns();
    let mut seed = 0x9e37_79b9u32;
    for i in 0..25 {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let delay = Duration::from_millis((seed % 50) as u64);
        let mut cmd = mvnet_core::netns::command_in(&host, mvnet).unwrap();
        cmd.args([
            "run",
            "-d",
            "--network",
            "base",
            "--name",
            &format!("k{i}"),
            "--",
            "sleep",
            "1000",
        ])
        .env("MVNET_ROOT", lab.root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
    }
    for i in 0..5 {
        lab.container(&format!("after{i}"), "base", &[]);
    }
    let ps: Vec<serde_json::Value> = lab
        .ok(&["ps", "-a", "--format", "json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let created: Vec<&serde_json::Value> = ps
        .iter()
        .filter(|c| c["Status"].as_str() == Some("Created"))
        .collect();
    assert!(
        created.is_empty(),
        "abandoned Created containers: {created:?}"
    );
    // Every container namespace that exists belongs to a listed container, and holds at
    // most its own eth0.
    let orphans = common::orphan_container_netns();
    assert!(orphans.is_empty(), "{orphans:?}");
    for c in &ps {
        let name = c["Names"].as_str().unwrap();
        let key = sandbox_key(&lab, name);
        if let Err(e) = mvnet_core::netns::Netns::open(&key) {
            panic!("{name} ({c}) has no usable namespace at {key}: {e}");
        }
        let links = lab.ip_json(&key, &["link"]);
        let macvlans = links
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["ifname"] != "lo")
            .count();
        assert!(macvlans <= 1, "{name}: {links}");
    }
}

/// Item 7: the state root is private (0700, files 0600), and a writer waiting for a held
/// lock gives up with a message naming the holder instead of hanging.
#[test]
fn item07_state_root_is_private_and_the_lock_times_out() {
    let lab = TestLab::new();
    lab.seed_network("base", &[]);
    let root = lab.root();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&root), 0o700);
    for f in ["mvnet.db", "mvnet.lock", "mvnet.db-wal", "mvnet.db-shm"] {
        assert_eq!(mode(&root.join(f)), 0o600, "{f}");
    }
    // Hold the write lock from another process, as a stuck (or hostile) one would.
    let mut holder = Command::new("flock")
        .args([root.join("mvnet.lock").to_str().unwrap(), "sleep", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let mut cmd =
        mvnet_core::netns::command_in(&lab.guard.lab.host_netns(), env!("CARGO_BIN_EXE_mvnet"))
            .unwrap();
    cmd.args([
        "network",
        "create",
        "--subnet=10.9.0.0/24",
        "-o",
        "parent=eth0",
        "other",
    ])
    .env("MVNET_ROOT", &root)
    .env("MVNET_LOCK_TIMEOUT", "1");
    let e = one_line_error(cmd.output().unwrap().into());
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(e.contains("locked by process") && e.contains("kill"), "{e}");
}

/// Item 8: a link planted in the state root is never followed.
#[test]
fn item08_planted_links_are_not_followed() {
    let lab = TestLab::new();
    lab.seed_network("base", &[]);
    let root = lab.root();
    let target = Scratch::new("mvnet-victim");
    std::fs::remove_file(root.join("mvnet.keeper")).ok();
    std::os::unix::fs::symlink(&target, root.join("mvnet.keeper")).unwrap();
    std::fs::remove_file(root.join("mvnet.lock")).unwrap();
    std::os::unix::fs::symlink(&target, root.join("mvnet.lock")).unwrap();
    let e = lab.fails(&["network", "ls"]);
    assert!(e.contains("symbolic link"), "{e}");
    assert!(
        !target.exists(),
        "nothing was created where the link points"
    );
}

/// Item 9: a crafted container row cannot make `rm -f` delete files or kill processes
/// that are not the container's.
#[test]
fn item09_crafted_rows_cannot_steer_rm() {
    let lab = TestLab::new();
    lab.seed_network("base", &[]);
    lab.container("real", "base", &[]);
    let dir = Scratch::new("mvnet-victim");
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    std::fs::write(dir.join("file"), "keep").unwrap();
    std::fs::write(dir.join("logs/log"), "keep").unwrap();
    let mut bystander = Command::new("sleep").arg("1000").spawn().unwrap();
    let db = rusqlite::Connection::open(lab.root().join("mvnet.db")).unwrap();
    let body: String = db
        .query_row("SELECT body FROM containers WHERE name = 'real'", [], |r| {
            r.get(0)
        })
        .unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let real_netns = v["netns"].as_str().unwrap().to_string();
    v["netns"] = dir.join("file").display().to_string().into();
    v["uts"] = dir.join("file").display().to_string().into();
    v["log_path"] = dir.join("logs/log").display().to_string().into();
    v["pid"] = bystander.id().into();
    v["pid_start"] = 0.into();
    db.execute(
        "UPDATE containers SET body = ?1 WHERE name = 'real'",
        [v.to_string()],
    )
    .unwrap();
    drop(db);
    lab.ok(&["rm", "-f", "real"]);
    let bystander_alive = bystander.try_wait().unwrap().is_none();
    let _ = bystander.kill();
    let _ = bystander.wait();
    assert!(
        bystander_alive,
        "rm -f killed a process that was not the container's"
    );
    assert!(dir.join("file").exists() && dir.join("logs/log").exists());
    std::fs::remove_dir_all(&dir).unwrap();
    // The container's own namespace (named after its id, not after the crafted row)
    // went too.
    assert!(
        !std::path::Path::new(&real_netns).exists(),
        "{real_netns} was left behind"
    );
}

/// Item 10: processes mvnet leaves behind hold none of the caller's descriptors (a shell's
/// command substitution returns at once), and the keeper has no capabilities.
#[test]
fn item10_no_inherited_descriptors_and_a_powerless_keeper() {
    let lab = TestLab::new();
    lab.seed_network("base", &[]);
    // A fresh root, so that this command starts the keeper itself.
    let root = Scratch::new("mvnet-fd");
    let script = format!(
        "out=$(MVNET_ROOT={} {} network ls 9>&1); echo done",
        root.display(),
        env!("CARGO_BIN_EXE_mvnet")
    );
    let started = Instant::now();
    let o = lab.on("host", &["bash", "-c", &script]);
    assert_eq!(o.stdout.trim(), "done", "{}", o.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the shell waited {:?} for a leftover process holding its pipe",
        started.elapsed()
    );
    // The keeper of that root: find it by its environment.
    let want = format!("MVNET_STORE_KEEPER={}", root.display());
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut keeper = None;
    while keeper.is_none() && Instant::now() < deadline {
        keeper = std::fs::read_dir("/proc").unwrap().find_map(|e| {
            let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            env.split(|b| *b == 0)
                .any(|kv| kv == want.as_bytes())
                .then_some(pid)
        });
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = keeper.expect("a keeper runs for the new root");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let cap = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
            .unwrap()
    };
    assert_eq!(cap("CapEff:"), "0000000000000000");
    assert_eq!(cap("CapPrm:"), "0000000000000000");
    // The keeper leaves as soon as its root goes.
    std::fs::remove_dir_all(&root).unwrap();
}

/// Item 11: the CNI plugin refuses its own namespace as CNI_NETNS, and DEL deletes only a
/// macvlan it made, never another link that happens to have the name.
#[test]
fn item11_cni_refuses_its_own_netns_and_deletes_only_its_links() {
    let lab = TestLab::new();
    let conf = r#"{"cniVersion":"1.1.0","name":"cninet","type":"mvnet-cni","master":"eth0",
        "ipam":{"type":"mvnet","subnet":"10.103.19.0/24","rangeStart":"10.103.19.100"}}"#;
    let o = lab.cni("ADD", "/proc/self/ns/net", "eth9", "ctr1", conf);
    assert_eq!(o.code, 1, "{}", o.stdout);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["code"], 4, "{v}");
    assert!(
        v["msg"].as_str().unwrap().contains("own network namespace"),
        "{v}"
    );
    assert!(!lab.host_links().contains(&"eth9".to_string()));
    // A foreign veth named eth0 in a container namespace survives DEL.
    let ns = lab.bare_netns("foreign");
    let ok = Command::new("ip")
        .args([
            "-n", &ns.name, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
        ])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let o = lab.cni("DEL", &ns.path, "eth0", "ctr2", conf);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let links = lab.ip_json(&ns.path, &["link"]);
    let names: Vec<&str> = links
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"eth0") && names.contains(&"peer0"),
        "{names:?}"
    );
}

/// Item 1: CNI GC (by exact name, or a name that prefixes a network's id) never touches
/// endpoints the CLI made.
#[test]
fn item01_cni_gc_leaves_cli_containers_alone() {
    let lab = TestLab::new();
    let id = lab.seed_network("base", &[]);
    lab.container("cli", "base", &[]);
    for name in ["base", &id[..1], &id[..2]] {
        let conf = format!(
            r#"{{"cniVersion":"1.1.0","name":"{name}","type":"mvnet-cni","master":"eth0",
            "ipam":{{"type":"mvnet","subnet":"10.103.19.0/24"}},
            "cni.dev/valid-attachments":[]}}"#
        );
        let o = lab.cni("GC", "", "", "", &conf);
        assert_eq!(o.code, 0, "{name}: {}{}", o.stdout, o.stderr);
    }
    assert_eq!(lab.ip_of("cli", "base"), "10.103.19.2");
    let key = sandbox_key(&lab, "cli");
    let links = lab.ip_json(&key, &["link"]).to_string();
    assert!(links.contains("\"eth0\""), "{links}");
    assert!(lab.machine_reaches("peer", "10.103.19.2"));
}

/// Item 15: a FIFO given as a namespace fails at once with a one-line error (CLI) or CNI
/// code 4, instead of hanging in open(2).
#[test]
fn item15_a_fifo_is_no_namespace() {
    let lab = TestLab::new();
    lab.seed_network("base", &[]);
    let fifo = Scratch::new("mvnet-fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: the path is a live NUL-terminated string for the length of the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let started = Instant::now();
    let e = lab.fails(&[
        "network",
        "connect",
        "--netns",
        fifo.to_str().unwrap(),
        "base",
    ]);
    assert!(e.contains("not a network namespace"), "{e}");
    let conf = r#"{"cniVersion":"1.1.0","name":"fifonet","type":"mvnet-cni","master":"eth0",
        "ipam":{"type":"mvnet","subnet":"10.103.19.0/24"}}"#;
    let o = lab.cni("ADD", fifo.to_str().unwrap(), "eth0", "ctr", conf);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["code"], 4, "{v}");
    assert!(started.elapsed() < Duration::from_secs(10));
    std::fs::remove_file(&fifo).unwrap();
}

/// Item 16: a failed CNI ADD takes away the network record it created, so it blocks
/// nothing later.
#[test]
fn item16_failed_cni_add_leaves_no_network_record() {
    let lab = TestLab::new();
    let ns = lab.bare_netns("c");
    let conf = r#"{"cniVersion":"1.1.0","name":"fails","type":"mvnet-cni","master":"eth0",
        "ipam":{"type":"mvnet","subnet":"10.103.19.0/24"}}"#;
    // An address outside the subnet fails the ADD after the network record was made.
    let o = lab.cni_with(
        "ADD",
        &ns.path,
        "eth0",
        "ctr",
        conf,
        &[("CNI_ARGS", "IP=10.99.0.5")],
    );
    assert_eq!(o.code, 1, "expected a failure: {}", o.stdout);
    let o = lab.mvnet(&["network", "ls", "--format", "json"]);
    assert!(!o.stdout.contains("\"fails\""), "{}", o.stdout);
    // The same name with another subnet works now (the failed ADD left no record to clash).
    let conf2 = conf.replace("10.103.19.0/24", "10.103.19.0/25");
    let o = lab.cni("ADD", &ns.path, "eth0", "ctr", &conf2);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let o = lab.cni("DEL", &ns.path, "eth0", "ctr", &conf2);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
}

/// Item 17: one corrupt network row does not break other commands, and `network rm` of
/// it works.
#[test]
fn item17_a_corrupt_row_is_skipped_and_removable() {
    let lab = TestLab::new();
    lab.seed_network("base", &[]);
    lab.ok(&[
        "network",
        "create",
        "--subnet=10.50.0.0/24",
        "-o",
        "parent=eth0",
        "broken",
    ]);
    lab.container("c", "base", &[]);
    let db = rusqlite::Connection::open(lab.root().join("mvnet.db")).unwrap();
    let body: String = db
        .query_row("SELECT body FROM networks WHERE name = 'broken'", [], |r| {
            r.get(0)
        })
        .unwrap();
    db.execute(
        "UPDATE networks SET body = ?1 WHERE name = 'broken'",
        [body.replace("10.50.0.0/24", "999.1.1.1/99")],
    )
    .unwrap();
    drop(db);
    let o = lab.mvnet(&["network", "ls"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("base"), "{}", o.stdout);
    assert!(
        o.stderr.contains("broken") && o.stderr.contains("network rm"),
        "{}",
        o.stderr
    );
    assert_eq!(lab.mvnet(&["ps", "-a"]).code, 0);
    lab.ok(&["network", "rm", "broken"]);
    let o = lab.mvnet(&["network", "ls"]);
    assert!(!o.stderr.contains("broken"), "{}", o.stderr);
    // The store is consistent again.
    lab.container("d", "base", &[]);
}

/// Item 18: on a full disk, `ps -a` and `inspect` still work, and a process killed by a
/// signal is never shown as "Exited (0)".
#[test]
fn item18_reads_work_on_a_full_disk() {
    let lab = TestLab::new();
    // Under /run/mvnet/lab, where the other tests' leak check looks for state roots.
    let root = std::path::PathBuf::from(format!("/run/mvnet/lab/{}-full", lab.name()));
    std::fs::create_dir_all(&root).unwrap();
    let mounted = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=8m",
            "tmpfs",
            root.to_str().unwrap(),
        ])
        .status()
        .unwrap()
        .success();
    assert!(mounted);
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount")
                .args(["-l", self.0.to_str().unwrap()])
                .status();
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _unmount = Unmount(root.clone());
    let state = root.clone();
    let run = |args: &[&str]| -> common::Out {
        let mut cmd =
            mvnet_core::netns::command_in(&lab.guard.lab.host_netns(), env!("CARGO_BIN_EXE_mvnet"))
                .unwrap();
        cmd.args(args).env("MVNET_ROOT", &state);
        cmd.output().unwrap().into()
    };
    let ok = |args: &[&str]| {
        let o = run(args);
        assert_eq!(o.code, 0, "{args:?}: {}", o.stderr);
        o.stdout
    };
    ok(&[
        "network",
        "create",
        "--subnet=10.103.19.0/24",
        "--gateway=10.103.19.1",
        "-o",
        "parent=eth0",
        "base",
    ]);
    ok(&[
        "run",
        "-d",
        "--network",
        "base",
        "--name",
        "victim",
        "--",
        "sleep",
        "1000",
    ]);
    ok(&[
        "run",
        "-d",
        "--network",
        "base",
        "--name",
        "killed",
        "--",
        "sleep",
        "1000",
    ]);
    let pid_of = |c: &str| -> i32 {
        let v: serde_json::Value = serde_json::from_str(&ok(&["inspect", c])).unwrap();
        v[0]["State"]["Pid"].as_i64().unwrap() as i32
    };
    // Killed while the disk has room: the monitor records 128+9.
    // SAFETY: kill(2) only sends a signal; no memory is involved.
    unsafe { libc::kill(pid_of("killed"), libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(500));
    let ps = ok(&["ps", "-a"]);
    assert!(
        ps.lines()
            .any(|l| l.contains("killed") && l.contains("Exited (137)")),
        "{ps}"
    );
    // Fill the disk, then kill the other one: nobody can record its end.
    let _ = Command::new("dd")
        .args([
            "if=/dev/zero",
            &format!("of={}", root.join("fill").display()),
            "bs=1M",
            "count=64",
        ])
        .stderr(std::process::Stdio::null())
        .status();
    // SAFETY: kill(2) only sends a signal; no memory is involved.
    unsafe { libc::kill(pid_of("victim"), libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(500));
    let ps = ok(&["ps", "-a"]);
    let line = ps
        .lines()
        .find(|l| l.contains("victim"))
        .unwrap()
        .to_string();
    assert!(
        line.contains("Exited") && !line.contains("Exited (0)"),
        "{ps}"
    );
    let v: serde_json::Value = serde_json::from_str(&ok(&["inspect", "victim"])).unwrap();
    assert_eq!(v[0]["State"]["Running"], false, "{v}");
    std::fs::remove_file(root.join("fill")).unwrap();
    ok(&["rm", "-f", "victim", "killed"]);
    assert!(!ps.contains("Exited (0)"));
    ok(&["network", "rm", "base"]);
}

/// Item 19: a container made from another mount namespace (here `unshare -m`) can still
/// be reached by `mvnet exec` from the host's.
#[test]
fn item19_containers_made_in_another_mount_namespace_work() {
    let lab = TestLab::new();
    lab.seed_network("base", &[]);
    let o = lab.on(
        "host",
        &[
            "env",
            &format!("MVNET_ROOT={}", lab.root().display()),
            "unshare",
            "-m",
            "--propagation",
            "private",
            env!("CARGO_BIN_EXE_mvnet"),
            "run",
            "-d",
            "--network",
            "base",
            "--name",
            "elsewhere",
            "--",
            "sleep",
            "1000",
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = lab.mvnet(&["exec", "elsewhere", "--", "hostname"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(lab.container_reaches("elsewhere", "10.103.19.1"));
    lab.ok(&["rm", "-f", "elsewhere"]);
}

/// Items 20 and 21: special-purpose subnets are refused (or warned about), and a parent
/// that is itself a macvlan shares its lower device's LAN.
#[test]
fn item20_21_special_subnets_and_macvlan_parents() {
    let lab = TestLab::new();
    for subnet in ["224.0.0.0/24", "127.0.0.0/24", "0.0.0.0/8", "ff02::/64"] {
        let mut args = vec!["network", "create", "-o", "parent=eth0"];
        let flag = format!("--subnet={subnet}");
        args.push(&flag);
        if subnet.contains(':') {
            args.push("--ipv6");
        }
        args.push("special");
        let e = lab.fails(&args);
        assert!(e.contains("no LAN uses"), "{subnet}: {e}");
    }
    let o = lab.mvnet(&[
        "network",
        "create",
        "--subnet=240.0.0.0/8",
        "-o",
        "parent=eth0",
        "odd",
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stderr.contains("warning") && o.stderr.contains("240.0.0.0/8"),
        "{}",
        o.stderr
    );
    lab.ok(&["network", "rm", "odd"]);

    lab.seed_network("base", &[]);
    let ok = lab.on(
        "host",
        &[
            "ip", "link", "add", "link", "eth0", "name", "mv0", "type", "macvlan", "mode", "bridge",
        ],
    );
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let e = lab.fails(&[
        "network",
        "create",
        "--subnet=10.103.19.0/24",
        "-o",
        "parent=mv0",
        "onmv",
    ]);
    assert!(e.contains("overlaps") && e.contains("base"), "{e}");
    let o = lab.mvnet(&[
        "network",
        "create",
        "--subnet=10.104.0.0/24",
        "-o",
        "parent=mv0",
        "onmv",
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stderr.contains("itself a macvlan of eth0"),
        "{}",
        o.stderr
    );
}

/// Item 22: without privileges every command says so first; the doctor reports it as a
/// check; CNI STATUS says the plugin is not available.
#[test]
fn item22_unprivileged_users_are_told_what_is_needed() {
    let lab = TestLab::new();
    lab.seed_network("base", &[]);
    let as_nobody = |argv: &[&str]| -> common::Out {
        let mut full = vec![
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ];
        full.extend_from_slice(argv);
        lab.on("host", &full)
    };
    let mvnet = env!("CARGO_BIN_EXE_mvnet");
    let root = format!("MVNET_ROOT={}", lab.root().display());
    let e = one_line_error(as_nobody(&["env", &root, mvnet, "network", "ls"]));
    assert!(
        e.contains("mvnet needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN)"),
        "{e}"
    );
    let o = as_nobody(&["env", &root, mvnet, "doctor", "--parent", "eth0"]);
    assert_ne!(o.code, 0);
    assert!(o.stdout.contains("privileges"), "{}{}", o.stdout, o.stderr);
    let plugin = std::path::Path::new(mvnet).with_file_name("mvnet-cni");
    let o = as_nobody(&[
        "sh",
        "-c",
        &format!(
            "echo '{{\"cniVersion\":\"1.1.0\",\"name\":\"n\",\"type\":\"mvnet-cni\",\"master\":\"eth0\"}}' | CNI_COMMAND=STATUS CNI_PATH=/usr/lib/cni {}",
            plugin.display()
        ),
    ]);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["code"], 50, "{v}");
}

/// Item 23: errors quote and cut what the user typed, stay on one line; `lab up --root`
/// is refused instead of ignored.
#[test]
fn item23_errors_stay_one_short_line() {
    let lab = TestLab::new();
    let e = lab.fails(&["network", "inspect", "a\nb"]);
    assert!(e.contains("a\\nb"), "{e}");
    let huge = "x".repeat(100_000);
    let e = lab.fails(&[
        "network",
        "create",
        "--subnet=10.1.0.0/24",
        "-o",
        &format!("parent={huge}"),
        "n",
    ]);
    assert!(e.len() < 2200, "{} bytes", e.len());
    let o = Command::new(env!("CARGO_BIN_EXE_mvnet"))
        .args(["--root", "/tmp/x", "lab", "up", "--name", "nolab"])
        .output()
        .unwrap();
    let e = one_line_error(o.into());
    assert!(e.contains("--root does not apply"), "{e}");
    assert!(!std::path::Path::new("/run/netns/nolab-host").exists());
}

/// Item 6: an empty (0-byte) database is refused with the path and a way out, not taken
/// for a new store.
#[test]
fn item06_an_empty_database_is_refused() {
    let lab = TestLab::new();
    lab.seed_network("base", &[]);
    let db = lab.root().join("mvnet.db");
    for side in ["mvnet.db-wal", "mvnet.db-shm"] {
        let _ = std::fs::remove_file(lab.root().join(side));
    }
    std::fs::write(&db, b"").unwrap();
    let e = lab.fails(&["network", "ls"]);
    assert!(
        e.contains("is empty (0 bytes)") && e.contains(db.to_str().unwrap()),
        "{e}"
    );
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0, "left as it was");
}
