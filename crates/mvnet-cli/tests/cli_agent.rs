//! The CLI's resident agent (`network connect|disconnect`) answers exactly as the command
//! does in its own process: exit status, stdout and stderr, for parse errors and for
//! engine errors, twice in a row (the agent keeps clap's command tree between requests).
//! Nothing here touches a link: every command fails before the kernel. Root.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const MVNET: &str = env!("CARGO_BIN_EXE_mvnet");

fn mvnet(root: &Path, args: &[&str], no_agent: bool) -> (i32, String, String) {
    let mut cmd = Command::new(MVNET);
    // MVNET_TIMING: the forwarding path says so ("mvnet forward timing"), which shows the
    // agent served the command; timing lines are left out of the comparison.
    cmd.args(args)
        .env("MVNET_ROOT", root)
        .env("MVNET_TIMING", "1")
        .env_remove("MVNET_LOG");
    if no_agent {
        cmd.env("MVNET_NO_AGENT", "1");
    } else {
        cmd.env_remove("MVNET_NO_AGENT");
    }
    let o = cmd.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn is_timing(line: &str) -> bool {
    ["mvnet timing", "mvnet agent ", "mvnet forward timing"]
        .iter()
        .any(|p| line.starts_with(p))
}

/// (status, stdout, stderr without timing lines, whether the agent served it)
fn outcome(o: (i32, String, String)) -> (i32, String, String, bool) {
    let forwarded = o.2.lines().any(|l| l.starts_with("mvnet forward timing"));
    let stderr: String =
        o.2.lines()
            .filter(|l| !is_timing(l))
            .map(|l| format!("{l}\n"))
            .collect();
    (o.0, o.1, stderr, forwarded)
}

/// Stops the agent of `root` and removes the root, even when the test fails.
struct Root(std::path::PathBuf);
impl Drop for Root {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(self.0.join("cli-agent.lock"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            // SAFETY: kill(2) of the agent this test started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_agent_answers_like_the_command_itself() {
    let root = Root(std::env::temp_dir().join(format!(
        "mvnet-cli-agent-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    )));
    std::fs::create_dir_all(&root.0).unwrap();
    // Create the store; the first forwardable command then starts the agent.
    let (code, _, e) = mvnet(&root.0, &["network", "ls"], true);
    assert_eq!(code, 0, "{e}");
    mvnet(
        &root.0,
        &[
            "network",
            "disconnect",
            "nonet",
            "--netns",
            "/proc/self/ns/net",
        ],
        false,
    );
    let started = Instant::now();
    while !root.0.join("cli-agent.sock").exists() {
        assert!(started.elapsed() < Duration::from_secs(10), "no agent");
        std::thread::sleep(Duration::from_millis(20));
    }
    let cases: [&[&str]; 4] = [
        // clap: an unknown flag, then a missing argument
        &["network", "connect", "nonet", "--netns", "/x", "--bogus"],
        &["network", "connect", "--ip", "10.0.0.2", "nonet"],
        // the engine: no such network
        &[
            "network",
            "connect",
            "nonet",
            "--netns",
            "/proc/self/ns/net",
        ],
        &[
            "network",
            "disconnect",
            "nonet",
            "--netns",
            "/proc/self/ns/net",
        ],
    ];
    for args in cases {
        let here = outcome(mvnet(&root.0, args, true));
        assert!(!here.3);
        assert_ne!(here.0, 0, "{args:?} should fail: {here:?}");
        assert!(!here.2.is_empty(), "{args:?}: no message");
        for round in 0..2 {
            let there = outcome(mvnet(&root.0, args, false));
            assert!(there.3, "{args:?}, round {round}: not served by the agent");
            assert_eq!(
                (there.0, &there.1, &there.2),
                (here.0, &here.1, &here.2),
                "{args:?}, round {round} through the agent"
            );
        }
    }
}

/// The commands mvnet starts in the background (a container's monitor, the fleet keeper)
/// may wake up after their state root was removed (a lab torn down): they leave it removed.
#[test]
fn background_commands_leave_a_removed_root_removed() {
    let root = std::env::temp_dir().join(format!("mvnet-gone-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for args in [&["__monitor", "0123456789ab"][..], &["fleet-keeper"][..]] {
        let o = Command::new(MVNET)
            .arg("--root")
            .arg(&root)
            .args(args)
            .env("MVNET_NO_KEEPER", "1")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{args:?}: {o:?}");
        assert!(!root.exists(), "{args:?} created {}", root.display());
    }
}

/// `mvnet` is a small forwarder that runs `mvnet-full` for everything the agent does not
/// serve: without it beside, it says so and what to do.
#[test]
fn the_forwarder_says_when_the_full_cli_is_missing() {
    let dir = std::env::temp_dir().join(format!("mvnet-lone-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let lone = dir.join("mvnet");
    std::fs::copy(MVNET, &lone).unwrap();
    let o = Command::new(&lone).arg("version").output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("mvnet: error: cannot run ")
            && err.contains("mvnet needs mvnet-full in the same directory; reinstall mvnet")
            && err.lines().count() == 1,
        "{err}"
    );
}

/// When the agent that took a command ends mid-way, the forwarder hands the command to the
/// full CLI with MVNET_AGENT_LOST set, which reports it as when it forwards itself (and
/// does not run the command a second time).
#[test]
fn the_full_cli_reports_an_agent_lost_by_the_forwarder() {
    let root = std::env::temp_dir().join(format!("mvnet-lost-{}", std::process::id()));
    let o = Command::new(env!("CARGO_BIN_EXE_mvnet-full"))
        .args(["network", "connect", "n", "--netns", "/proc/self/ns/net"])
        .env("MVNET_ROOT", &root)
        .env("MVNET_AGENT_LOST", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("mvnet: error: the mvnet agent ended while it ran this command"),
        "{err}"
    );
    assert!(
        !root.exists(),
        "the command ran: {} was made",
        root.display()
    );
}
