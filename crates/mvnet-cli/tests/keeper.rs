//! The store keeper (root): after an mvnet command, one background process holds the
//! database open so the next process skips SQLite's WAL-index rebuild; it pins none of the
//! caller's namespaces, and leaves when its state directory goes away.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Processes running as the keeper of `root` (found by their environment).
fn keepers_of(root: &Path) -> Vec<u32> {
    let want = format!("MVNET_STORE_KEEPER={}", root.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|kv| kv == want.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

fn mvnet(root: &Path, extra_env: &[(&str, &str)]) {
    let o = Command::new(env!("CARGO_BIN_EXE_mvnet"))
        .args(["network", "ls"])
        .env("MVNET_ROOT", root)
        .envs(extra_env.iter().copied())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct TempRoot(PathBuf);

impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_root(tag: &str) -> TempRoot {
    TempRoot(std::env::temp_dir().join(format!(
        "mvnet-keeper-{tag}-{}",
        &mvnet_core::ids::new_id()[..10]
    )))
}

#[test]
fn one_keeper_holds_the_store_and_leaves_with_it() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    assert_eq!(unsafe { libc::geteuid() }, 0, "needs root");
    let root = temp_root("k");
    mvnet(&root.0, &[]);
    mvnet(&root.0, &[]);
    wait_until("a keeper", || keepers_of(&root.0).len() == 1);
    let pid = keepers_of(&root.0)[0];
    // It holds the database open, and not our network namespace.
    let fds: Vec<PathBuf> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .collect();
    assert!(fds.contains(&root.0.join("mvnet.db")), "{fds:?}");
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/net")).unwrap();
    assert_ne!(
        ns(&pid.to_string()),
        ns("self"),
        "the keeper pins no caller namespace"
    );
    // More commands reuse it.
    mvnet(&root.0, &[]);
    assert_eq!(keepers_of(&root.0), [pid]);
    // The state directory goes: so does the keeper.
    std::fs::remove_dir_all(&root.0).unwrap();
    wait_until("the keeper to leave", || keepers_of(&root.0).is_empty());
}

#[test]
fn mvnet_no_keeper_turns_it_off() {
    let root = temp_root("off");
    mvnet(&root.0, &[("MVNET_NO_KEEPER", "1")]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(keepers_of(&root.0).is_empty());
}
