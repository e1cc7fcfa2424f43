//! A bounded, seeded fuzzer of `mvnet-cni` configurations and environments and of `mvnet`
//! arguments (issue 19's items 12-15 were found this way: panics on long names and on a
//! route without a gateway, unvalidated names, a FIFO that hung open(2)). Every input must
//! end within a time bound with success or a clean one-line error, never a panic, a signal
//! or a hang, and the lab must be left as it was found. `MVNET_FUZZ_SEED` and
//! `MVNET_FUZZ_CASES` replay or widen a run.

mod common;
use common::{Scratch, TestLab};

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs `cmd` with `stdin`, killing it after `limit`.
fn run_bounded(mut cmd: Command, stdin: &[u8], limit: Duration) -> Run {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn");
    let _ = child.stdin.take().unwrap().write_all(stdin);
    loop {
        if child.try_wait().unwrap().is_some() || started.elapsed() > limit {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut where_stuck = String::new();
    if child.try_wait().unwrap().is_none() {
        // Say where it hangs before killing it: the kernel's wait channel and stack.
        let pid = child.id();
        for f in ["wchan", "stack", "syscall"] {
            let v = std::fs::read_to_string(format!("/proc/{pid}/{f}")).unwrap_or_default();
            where_stuck.push_str(&format!("\n{f}: {}", v.trim()));
        }
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned() + &where_stuck,
        took: started.elapsed(),
    }
}

const LIMIT: Duration = Duration::from_secs(20);

/// What every outcome must satisfy, whatever the input.
fn check_outcome(what: &str, r: &Run) {
    assert!(
        r.took < LIMIT,
        "{what}: hung ({:?}); stderr: {}",
        r.took,
        r.stderr.chars().take(500).collect::<String>()
    );
    let code = r
        .code
        .unwrap_or_else(|| panic!("{what}: killed by a signal\n{}", r.stderr));
    assert!(
        !r.stderr.contains("panicked"),
        "{what}: panicked\n{}",
        r.stderr
    );
    assert!(
        code == 0 || code == 1,
        "{what}: exit code {code}\n{}",
        r.stderr
    );
}

#[test]
fn fuzz_cni_and_cli_inputs() {
    let lab = TestLab::new();
    lab.seed_network("base", &[]);
    let seed: u64 = std::env::var("MVNET_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6d76_6e65_7431);
    let cases: usize = std::env::var("MVNET_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let mut rng = Rng(seed | 1);
    let links_before = lab.host_links();

    let bare = lab.bare_netns("fz");
    let scratch = Scratch::new("mvnet-fuzz");
    std::fs::create_dir_all(&scratch).unwrap();
    let fifo = scratch.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: the path is a live NUL-terminated string for the length of the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let plain = scratch.join("plain");
    std::fs::write(&plain, b"").unwrap();

    let long = "x".repeat(70_000);
    let names: Vec<Value> = vec![
        json!("fz-ok"),
        json!(""),
        json!("a\nb"),
        json!("$(id)"),
        json!(long.clone()),
        json!("2"),
        json!("base"),
        json!(7),
    ];
    let masters: Vec<Value> = vec![
        json!("eth0"),
        json!(""),
        json!("eth0123456789012"),
        json!(long.clone()),
        json!("eth0.x"),
        json!("lo"),
        json!("nosuchif"),
        json!("a/b"),
        json!("eth0.4095"),
    ];
    let ipams: Vec<Value> = vec![
        json!({"type": "mvnet", "subnet": "10.103.19.0/24", "rangeStart": "10.103.19.100"}),
        json!({"type": "mvnet", "subnet": "10.103.19.0/24", "routes": [{"dst": "::/0"}]}),
        json!({"type": "mvnet", "subnet": "10.103.19.0/24", "routes": [{"dst": "0.0.0.0/0"}]}),
        json!({"type": "mvnet", "subnet": "224.0.0.0/24"}),
        json!({"type": "mvnet", "subnet": "999.1.1.1/99"}),
        json!({"type": "mvnet"}),
        json!({}),
        json!("mvnet"),
        json!([]),
        Value::Null,
    ];
    let netns: Vec<String> = vec![
        bare.path.clone(),
        fifo.display().to_string(),
        plain.display().to_string(),
        "/proc/self/ns/net".into(),
        scratch.join("missing").display().to_string(),
        String::new(),
    ];
    let ifnames = ["eth0", "net1", "abcdefghijklmnopq", "a/b", ""];
    let args = [
        "",
        "IP=10.103.19.77",
        "IP=xyz",
        "MAC=zz",
        "FOO=1",
        "IgnoreUnknown=1;FOO=1",
    ];
    let modes = ["", "bridge", "private", "vepa", "bogus"];
    let versions = ["1.1.0", "0.3.1", "", "9.9.9"];
    let plugin = std::path::Path::new(env!("CARGO_BIN_EXE_mvnet")).with_file_name("mvnet-cni");

    let mut added = 0;
    for case in 0..cases {
        let mut conf = json!({
            "cniVersion": "1.1.0", "name": "fz-ok", "type": "mvnet-cni", "master": "eth0",
            "ipam": ipams[0].clone(),
        });
        if rng.chance(40) {
            conf["name"] = rng.pick(&names).clone();
        }
        if rng.chance(40) {
            conf["master"] = rng.pick(&masters).clone();
        }
        if rng.chance(40) {
            conf["ipam"] = rng.pick(&ipams).clone();
        }
        if rng.chance(20) {
            conf["mode"] = json!(rng.pick(&modes));
        }
        if rng.chance(15) {
            conf["cniVersion"] = json!(rng.pick(&versions));
        }
        if rng.chance(10) {
            conf["mtu"] = json!(rng.pick(&[0u64, 1400, 70_000]));
        }
        if rng.chance(10) {
            conf["probeMs"] = json!(rng.pick(&[0u64, 10, 99_999]));
        }
        let ns = if rng.chance(30) {
            rng.pick(&netns).clone()
        } else {
            bare.path.clone()
        };
        let ifname = if rng.chance(20) {
            *rng.pick(&ifnames)
        } else {
            "eth0"
        };
        let cni_args = if rng.chance(20) { *rng.pick(&args) } else { "" };
        let raw = conf.to_string();
        let run = |command: &str| {
            let mut cmd =
                mvnet_core::netns::command_in(&lab.guard.lab.host_netns(), &plugin).unwrap();
            cmd.env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .env("CNI_COMMAND", command)
                .env("CNI_CONTAINERID", format!("fz{case}"))
                .env("CNI_NETNS", &ns)
                .env("CNI_IFNAME", ifname)
                .env("CNI_ARGS", cni_args)
                .env("CNI_PATH", "/usr/lib/cni")
                .env("MVNET_ROOT", lab.root());
            run_bounded(cmd, raw.as_bytes(), LIMIT)
        };
        let summary = |cmd: &str| {
            format!(
                "case {case} (seed {seed}) {cmd}: netns {ns:?} ifname {ifname:?} args {cni_args:?} conf {}",
                raw.chars().take(300).collect::<String>()
            )
        };
        let add = run("ADD");
        if std::env::var_os("MVNET_FUZZ_VERBOSE").is_some() {
            eprintln!(
                "{}\n  -> {:?} {}",
                summary("ADD"),
                add.code,
                add.stdout.chars().take(300).collect::<String>()
            );
        }
        check_outcome(&summary("ADD"), &add);
        if add.code == Some(0) {
            added += 1;
        } else {
            let v: Value = serde_json::from_str(&add.stdout)
                .unwrap_or_else(|_| panic!("{}: no JSON error: {}", summary("ADD"), add.stdout));
            let msg = v["msg"].as_str().unwrap_or_default();
            assert!(v["code"].is_u64(), "{}: {v}", summary("ADD"));
            assert!(
                !msg.contains('\n') && msg.len() < 2200,
                "{}: {msg}",
                summary("ADD")
            );
        }
        // DEL always runs, as a runtime would after a failed ADD; it must clean up.
        let del = run("DEL");
        check_outcome(&summary("DEL"), &del);
        if add.code == Some(0) {
            assert_eq!(del.code, Some(0), "{}: {}", summary("DEL"), del.stdout);
        }
        let inside = lab.ip_json(&bare.path, &["link"]);
        let leftover: Vec<&Value> = inside
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["ifname"] != "lo")
            .collect();
        assert!(
            leftover.is_empty(),
            "{}: left {leftover:?}",
            summary("ADD+DEL")
        );
    }
    assert!(
        added > 0,
        "no case succeeded: the fuzzer only tested refusals"
    );

    // The CLI with hostile arguments.
    let bad_values: Vec<String> = vec![
        long.clone(),
        "eth0123456789012".into(),
        "a\nb".into(),
        "$(id)".into(),
        "".into(),
    ];
    for case in 0..cases / 2 {
        let v = rng.pick(&bad_values).clone();
        let argv: Vec<String> = match rng.next() % 5 {
            0 => vec![
                "network".into(),
                "create".into(),
                "--subnet=10.1.0.0/24".into(),
                "-o".into(),
                format!("parent={v}"),
                "fzn".into(),
            ],
            1 => vec![
                "network".into(),
                "create".into(),
                "--subnet=10.1.0.0/24".into(),
                "-o".into(),
                "parent=eth0".into(),
                v.clone(),
            ],
            2 => vec![
                "network".into(),
                "connect".into(),
                "--netns".into(),
                rng.pick(&netns).clone(),
                "base".into(),
            ],
            3 => vec![
                "run".into(),
                "-d".into(),
                "--network".into(),
                "base".into(),
                "--name".into(),
                v.clone(),
                "--".into(),
                "sleep".into(),
                "1".into(),
            ],
            _ => vec!["inspect".into(), v.clone()],
        };
        let mut cmd =
            mvnet_core::netns::command_in(&lab.guard.lab.host_netns(), env!("CARGO_BIN_EXE_mvnet"))
                .unwrap();
        cmd.args(&argv).env("MVNET_ROOT", lab.root());
        let r = run_bounded(cmd, b"", LIMIT);
        let what = format!(
            "CLI case {case} (seed {seed}): {:?}",
            argv.iter()
                .map(|a| a.chars().take(40).collect::<String>())
                .collect::<Vec<_>>()
        );
        check_outcome(&what, &r);
        if r.code == Some(1) {
            let lines: Vec<&str> = r.stderr.lines().filter(|l| l.contains("error")).collect();
            assert_eq!(
                lines.len(),
                1,
                "{what}: {}",
                r.stderr.chars().take(500).collect::<String>()
            );
            assert!(lines[0].len() < 2200, "{what}: {} bytes", lines[0].len());
        } else {
            // Something that worked (a container named oddly, say): undo it.
            let _ = lab.mvnet(&["rm", "-f", &v]);
            let _ = lab.mvnet(&["network", "disconnect", "base", &v]);
        }
    }
    // The bare namespace may have been connected by the CLI cases: disconnect it again.
    let _ = lab.mvnet(&["network", "disconnect", "base", &bare.path]);
    std::fs::remove_dir_all(&scratch).unwrap();
    assert_eq!(lab.host_links(), links_before, "host links changed");
    assert!(common::orphan_container_netns().is_empty());
    assert_eq!(lab.mvnet(&["network", "ls"]).code, 0);
}
