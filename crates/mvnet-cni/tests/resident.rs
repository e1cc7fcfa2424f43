//! The resident agent (root): every command it serves prints byte-for-byte what the plugin
//! prints when it does the work itself, errors and rollbacks included; it is left for the
//! plugin itself when it is gone, out of date or in another environment; it leaves with its
//! state root.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::{ip, World, PLUGIN};

/// The agent of `root`, if one runs: found by the state root in its environment.
fn agent_pid(root: &Path) -> Option<u32> {
    let want = format!("MVNET_AGENT_CNI_ROOT={}", root.display());
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        env.split(|b| *b == 0)
            .any(|v| v == want.as_bytes())
            .then_some(pid)
    })
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(5), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (command, target, ifname, config, extra environment)
type Step = (
    &'static str,
    String,
    &'static str,
    Value,
    Vec<(&'static str, String)>,
);

/// The same commands, against a fresh state root each time.
fn script(w: &mut World) -> Vec<Step> {
    let t1 = w.netns("t1");
    let t2 = w.netns("t2");
    let t3 = w.netns("t3");
    // t3 already has an eth0: the link fails after the address was reserved.
    ip(&[
        "-n", &t3, "link", "add", "eth0", "type", "veth", "peer", "name", "x0",
    ]);
    let c = json!({"cniVersion": "1.1.0", "name": "resnet", "type": "mvnet-cni", "master": "lan0",
                   "ipam": {"type": "mvnet", "subnet": "10.1.7.0/24", "gateway": "10.1.7.1",
                            "routes": [{"dst": "0.0.0.0/0"}]}});
    let mut bad_master = c.clone();
    bad_master["master"] = json!("nope0");
    let mut bad_ipam = c.clone();
    bad_ipam["ipam"] = json!({"type": "mvnet"});
    let none = Vec::new;
    vec![
        // A DEL of nothing: the first command, which starts the agent on that side.
        ("DEL", t1.clone(), "eth0", c.clone(), none()),
        ("ADD", t1.clone(), "eth0", c.clone(), none()),
        (
            "ADD",
            t2.clone(),
            "eth0",
            c.clone(),
            vec![("CNI_ARGS", "IP=10.1.7.50".into())],
        ),
        // The same address again: taken.
        (
            "ADD",
            t3.clone(),
            "eth1",
            c.clone(),
            vec![("CNI_ARGS", "IP=10.1.7.50".into())],
        ),
        ("ADD", t3.clone(), "eth0", c.clone(), none()),
        ("ADD", t3.clone(), "eth1", bad_master, none()),
        ("ADD", t3.clone(), "eth1", bad_ipam, none()),
        ("ADD", t3.clone(), "x/y", c.clone(), none()),
        (
            "ADD",
            t3.clone(),
            "eth1",
            c.clone(),
            vec![("CNI_ARGS", "IP=nonsense".into())],
        ),
        ("CHECK", t1.clone(), "eth0", c.clone(), none()),
        ("DEL", t2.clone(), "eth0", c.clone(), none()),
        ("DEL", t2.clone(), "eth0", c.clone(), none()),
        ("ADD", t2.clone(), "eth0", c.clone(), none()),
        ("DEL", t1.clone(), "eth0", c.clone(), none()),
        ("DEL", t2.clone(), "eth0", c, none()),
    ]
}

/// Runs the script against `root`; `prev` gives CHECK the previous ADD's result.
fn play(w: &World, steps: &[Step], root: &Path, via_agent: bool) -> Vec<(i32, String, String)> {
    let mut out = Vec::new();
    let mut last_add: Option<Value> = None;
    for (i, (cmd, target, ifname, conf, extra)) in steps.iter().enumerate() {
        let mut env: Vec<(&str, String)> = vec![("MVNET_ROOT", root.display().to_string())];
        if via_agent && i > 0 {
            // From the second command on, the agent must serve every one.
            env.push(("MVNET_AGENT_REQUIRED", "1".into()));
        }
        if !via_agent {
            env.push(("MVNET_NO_AGENT", "1".into()));
        }
        env.extend(extra.iter().cloned());
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut conf = conf.clone();
        if *cmd == "CHECK" {
            conf["prevResult"] = last_add.clone().unwrap();
        }
        let (code, stdout, stderr) = w.exec_raw(PLUGIN, cmd, target, ifname, &conf, &env);
        let stdout = String::from_utf8(stdout).unwrap();
        if *cmd == "ADD" && code == 0 {
            last_add = serde_json::from_str(&stdout).ok();
        }
        out.push((code, stdout, stderr));
        if via_agent && i == 0 {
            wait_for("the agent's socket", || {
                root.join("cni-agent.sock").exists()
            });
        }
    }
    out
}

#[test]
fn the_agent_prints_what_the_plugin_prints() {
    let mut w = World::new();
    let steps = script(&mut w);
    let here = w.root.join("here");
    let agent = w.root.join("agent");
    std::fs::create_dir_all(&here).unwrap();
    std::fs::create_dir_all(&agent).unwrap();
    let a = play(&w, &steps, &here, false);
    assert!(agent_pid(&here).is_none(), "MVNET_NO_AGENT starts none");
    let b = play(&w, &steps, &agent, true);
    assert!(agent_pid(&agent).is_some(), "the agent served");
    // On a machine with several CPUs, the agent has a socket per CPU beside the shared one
    // (each caller knocks on its own CPU's).
    if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 {
        let doors: Vec<String> = std::fs::read_dir(&agent)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("cni-agent.cpu") && n.ends_with(".sock"))
            .collect();
        assert!(
            !doors.is_empty(),
            "no per-CPU sockets in {}",
            agent.display()
        );
    }
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x, y, "step {i} {:?} differs", steps[i].0);
    }
    // The script exercised successes and several kinds of error.
    let codes: Vec<i32> = a.iter().map(|r| r.0).collect();
    assert!(codes.contains(&0) && codes.contains(&1), "{codes:?}");
    assert!(a.iter().filter(|r| r.0 != 0).count() >= 5, "{a:?}");
    assert!(
        a[3].1.contains("10.1.7.50"),
        "the taken address is named: {}",
        a[3].1
    );
    // Nothing left behind by either: the last DELs removed every link.
    for t in ["t1", "t2", "t3"] {
        let ns = format!("cni-{}-{t}", w.tag);
        let links = std::process::Command::new("ip")
            .args(["-n", &ns, "-j", "link", "show", "type", "macvlan"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&links.stdout).trim(), "[]", "{t}");
    }
}

fn conf_for(subnet: &str) -> Value {
    json!({"cniVersion": "1.1.0", "name": "resnet2", "type": "mvnet-cni", "master": "lan0",
           "ipam": {"type": "mvnet", "subnet": subnet}})
}

fn start_agent(w: &World, t: &str, root: &Path, c: &Value) {
    let root_s = root.display().to_string();
    let (code, _) = w.exec(PLUGIN, "DEL", t, "eth0", c, &[("MVNET_ROOT", &root_s)]);
    assert_eq!(code, 0);
    wait_for("the agent's socket", || {
        root.join("cni-agent.sock").exists()
    });
}

#[test]
fn a_killed_or_foreign_agent_leaves_the_work_to_the_plugin_and_it_leaves_with_its_root() {
    let mut w = World::new();
    let t = w.netns("t");
    let root = w.root.join("k");
    std::fs::create_dir_all(&root).unwrap();
    let root_s = root.display().to_string();
    let c = conf_for("10.1.8.0/24");
    start_agent(&w, &t, &root, &c);
    let pid = agent_pid(&root).expect("an agent runs");

    // Another MVNET_ environment is not served by it.
    let (code, r) = w.exec(
        PLUGIN,
        "ADD",
        &t,
        "eth0",
        &c,
        &[
            ("MVNET_ROOT", &root_s),
            ("MVNET_LOCK_TIMEOUT", "7"),
            ("MVNET_AGENT_REQUIRED", "1"),
        ],
    );
    assert_eq!(code, 1);
    assert_eq!(r["code"], 11, "{r}");
    assert!(w.link(&t, "eth0").is_none(), "nothing done: {r}");

    // kill -9: the next command is served by the plugin itself, which starts a new agent.
    // SAFETY: kill(2) of the agent this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_for("the agent gone", || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z"))
    });
    let (code, r) = w.exec(PLUGIN, "ADD", &t, "eth0", &c, &[("MVNET_ROOT", &root_s)]);
    assert_eq!(code, 0, "{r}");
    assert!(w.link(&t, "eth0").is_some());
    wait_for("a new agent", || {
        agent_pid(&root).is_some_and(|p| p != pid) && root.join("cni-agent.sock").exists()
    });
    let (code, r) = w.exec(
        PLUGIN,
        "DEL",
        &t,
        "eth0",
        &c,
        &[("MVNET_ROOT", &root_s), ("MVNET_AGENT_REQUIRED", "1")],
    );
    assert_eq!(code, 0, "{r}");
    assert!(w.link(&t, "eth0").is_none());

    // The state root goes away: so does its agent.
    std::fs::remove_dir_all(&root).unwrap();
    wait_for("the agent leaves with its root", || {
        agent_pid(&root).is_none()
    });
}

#[test]
fn twenty_parallel_adds_through_the_agent_get_twenty_addresses() {
    let mut w = World::new();
    let root = w.root.join("p");
    std::fs::create_dir_all(&root).unwrap();
    let root_s = root.display().to_string();
    let c = conf_for("10.1.9.0/24");
    let targets: Vec<String> = (0..20).map(|i| w.netns(&format!("p{i}"))).collect();
    start_agent(&w, &targets[0], &root, &c);
    let results: Vec<(i32, Value)> = std::thread::scope(|s| {
        let hs: Vec<_> = targets
            .iter()
            .map(|t| {
                let (w, c, root_s) = (&w, &c, &root_s);
                s.spawn(move || {
                    w.exec(
                        PLUGIN,
                        "ADD",
                        t,
                        "eth0",
                        c,
                        &[("MVNET_ROOT", root_s), ("MVNET_AGENT_REQUIRED", "1")],
                    )
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ips: Vec<String> = results
        .iter()
        .map(|(code, r)| {
            assert_eq!(*code, 0, "{r}");
            r["ips"][0]["address"].as_str().unwrap().to_string()
        })
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 20, "{ips:?}");
    for t in &targets {
        let (code, r) = w.exec(
            PLUGIN,
            "DEL",
            t,
            "eth0",
            &c,
            &[("MVNET_ROOT", &root_s), ("MVNET_AGENT_REQUIRED", "1")],
        );
        assert_eq!(code, 0, "{r}");
        assert!(w.link(t, "eth0").is_none());
    }
}

/// The agent's worker threads that wait for `lock` (flock), from /proc/locks: a waiter
/// shows as "-> FLOCK ... WRITE <pid> <dev>:<inode> ...".
fn waiting_for_lock(agent: u32, lock: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(lock).unwrap().ino();
    let tids: Vec<String> = std::fs::read_dir(format!("/proc/{agent}/task"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    std::fs::read_to_string("/proc/locks")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("->") && l.contains("FLOCK"))
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // "N: -> FLOCK ADVISORY WRITE PID MAJ:MIN:INODE START END"
            let (pid, id) = (f.get(5).copied(), f.get(6).copied());
            pid.is_some_and(|p| p == agent.to_string() || tids.iter().any(|t| t == p))
                && id.is_some_and(|i| i.rsplit(':').next() == Some(&ino.to_string()))
        })
}

/// A running agent on its own state root, with the store's write lock held by the test:
/// an ADD it takes stops at its reservation until `release` (or drop).
struct AgentHeldAtReserve {
    w: World,
    root: std::path::PathBuf,
    root_s: String,
    c: Value,
    t: String,
    agent: u32,
    lock_path: std::path::PathBuf,
    lock: std::cell::Cell<Option<std::fs::File>>,
}

impl AgentHeldAtReserve {
    fn new(name: &str, subnet: &str) -> AgentHeldAtReserve {
        use std::os::fd::AsRawFd;
        let mut w = World::new();
        let root = w.root.join(name);
        std::fs::create_dir_all(&root).unwrap();
        let c = conf_for(subnet);
        let t = w.netns(name);
        start_agent(&w, &t, &root, &c);
        let agent = agent_pid(&root).expect("an agent runs");
        let lock_path = root.join("mvnet.lock");
        let lock = std::fs::File::open(&lock_path).unwrap();
        // SAFETY: flock(2) on an fd this test owns.
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
        AgentHeldAtReserve {
            root_s: root.display().to_string(),
            w,
            root,
            c,
            t,
            agent,
            lock_path,
            lock: std::cell::Cell::new(Some(lock)),
        }
    }

    /// Waits until the agent has taken a request and waits for the store.
    fn wait_until_taken(&self) {
        wait_for("the agent to take the ADD and wait for the store", || {
            waiting_for_lock(self.agent, &self.lock_path)
        });
    }

    /// The plugin's environment: this root, and no doing the work itself.
    fn env(&self) -> [(&str, &str); 2] {
        [("MVNET_ROOT", &self.root_s), ("MVNET_AGENT_REQUIRED", "1")]
    }

    fn release(&self) {
        drop(self.lock.take());
    }

    /// An ADD of eth0 that the agent takes and holds at its reservation, whose plugin is
    /// then killed and reaped, as a runtime's timeout does. (The plugin under test: the
    /// agent serves only its own binary, the one start_agent ran.)
    fn add_and_kill_its_caller(&self) {
        let mut add = self
            .w
            .spawn(PLUGIN, "ADD", &self.t, "eth0", &self.c, &self.env());
        self.wait_until_taken();
        add.kill().unwrap();
        assert!(!add.wait().unwrap().success());
    }

    /// `command` (started after the held ADD's caller was killed) must not return while
    /// that ADD is still in the agent; once it is let go, the command succeeds and
    /// nothing of the ADD is left. No waiting after it: what it leaves is what the runtime
    /// sees.
    fn waits_for_the_held_add(&self, mut command: std::process::Child, what: &str) {
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            command.try_wait().unwrap().is_none(),
            "{what} returned while the killed plugin's ADD was still in the agent"
        );
        self.release();
        let out = command.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_nothing_left(&self.w, &self.root, &self.t);
    }
}

/// The store of `root` is consistent and holds no endpoint of the tests' network, and `t`
/// has no eth0.
fn assert_nothing_left(w: &World, root: &Path, t: &str) {
    let mut store = mvnet_core::store::SqliteStore::open(root).unwrap();
    use mvnet_core::store::Store;
    assert_eq!(store.check_consistency().unwrap(), Vec::<String>::new());
    // A rolled-back ADD may take the network it made with it.
    let left = match store.network("resnet2") {
        Ok(net) => store.endpoints_of_network(&net.id).unwrap(),
        Err(_) => Vec::new(),
    };
    assert!(
        left.is_empty(),
        "an endpoint nobody believes in stayed: {:?}",
        left.iter().map(|e| &e.container_id).collect::<Vec<_>>()
    );
    assert!(w.link(t, "eth0").is_none(), "a link stayed in {t}");
}

/// A runtime that kills a plugin mid-ADD counts that attachment as never made, and may run
/// GC at once. The agent still serving the ADD must not commit it behind that GC, and the
/// GC must not return while that ADD may still change anything: the runtime looks at the
/// result right after. Made deterministic by holding the store's write lock: the agent has
/// taken the ADD and waits to reserve the address, the caller is killed and reaped, GC
/// starts and must wait; the lock is let go, and once GC has returned nothing is left.
#[test]
fn an_add_whose_caller_was_killed_is_not_committed_behind_the_runtimes_gc() {
    let h = AgentHeldAtReserve::new("g", "10.1.10.0/24");
    let env = h.env();
    h.add_and_kill_its_caller();

    // The runtime's GC: no attachment is valid.
    let mut gc = h.c.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    let gc = h.w.spawn(PLUGIN, "GC", "", "eth0", &gc, &env[..1]);
    h.waits_for_the_held_add(gc, "GC");
}

/// An agent killed after it took an ADD: the plugin says "try again" (code 11), as the
/// spec asks of a transient failure, and the runtime's DEL then leaves nothing behind.
/// The agent is caught mid-ADD by holding the store's write lock.
#[test]
fn an_agent_killed_mid_add_makes_the_plugin_say_try_again_and_del_cleans_up() {
    let h = AgentHeldAtReserve::new("l", "10.1.11.0/24");
    let env = h.env();
    let (code, r) = std::thread::scope(|s| {
        let add = s.spawn(|| h.w.exec(PLUGIN, "ADD", &h.t, "eth0", &h.c, &env));
        h.wait_until_taken();
        // SAFETY: kill(2) of the agent this test started.
        unsafe { libc::kill(h.agent as i32, libc::SIGKILL) };
        add.join().unwrap()
    });
    h.release();
    assert_eq!(code, 1, "{r}");
    assert_eq!(r["code"], 11, "{r}");
    assert!(r["msg"].as_str().unwrap().contains("agent ended"), "{r}");
    let (code, r) = h.w.exec(PLUGIN, "DEL", &h.t, "eth0", &h.c, &env[..1]);
    assert_eq!(code, 0, "DEL: {r}");
    assert_nothing_left(&h.w, &h.root, &h.t);
}

/// A runtime that kills a plugin mid-ADD runs DEL next, and may retry the ADD. The DEL
/// must not return while the killed plugin's ADD still runs in the agent: that ADD would
/// go on to make its link after the runtime was told the interface is gone, and its
/// rollback could then take the link of the retried ADD. The agent runs the commands of
/// one container interface in turn; those of another interface do not wait. The agent is
/// caught mid-ADD by holding the store's write lock.
#[test]
fn a_del_waits_for_the_killed_plugins_add_of_the_same_interface() {
    let h = AgentHeldAtReserve::new("k", "10.1.12.0/24");
    let env = h.env();
    h.add_and_kill_its_caller();

    // Another interface's command is not held up.
    let mut other = h.w.spawn(PLUGIN, "DEL", &h.t, "eth1", &h.c, &env);
    let started = std::time::Instant::now();
    while other.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a DEL of another interface waited for the held ADD"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(other.wait().unwrap().success());

    let del = h.w.spawn(PLUGIN, "DEL", &h.t, "eth0", &h.c, &env);
    h.waits_for_the_held_add(del, "DEL");

    // The runtime's retry is made, and stays.
    let (code, r) = h.w.exec(PLUGIN, "ADD", &h.t, "eth0", &h.c, &env);
    assert_eq!(code, 0, "{r}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        h.w.link(&h.t, "eth0").is_some(),
        "the retried ADD's link went"
    );
}
