//! The README's first command must keep working: `mvnet demo` checks every step itself and
//! exits non-zero if any misbehaves (root).

mod common;

#[test]
fn demo_runs_green_and_cleans_up() {
    common::require_root();
    let name = format!("d{}", &mvnet_core::ids::new_id()[..10]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mvnet"))
        .args(["demo", "--name", &name])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The error line and the transcript's end first: CI logs keep a failure's head and tail.
    let tail: Vec<&str> = stdout.lines().rev().take(40).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    assert!(
        out.status.success(),
        "demo failed: {}\n--- last lines of the transcript ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        tail.join("\n")
    );
    for line in [
        "\"IPAddress\": \"10.103.19.2\"",
        "\"MacAddress\": \"02:42:0a:67:13:02\"",
        "default via 10.103.19.1 dev eth0",
        "inet 10.103.19.2/24",
    ] {
        assert!(stdout.contains(line), "transcript lacks {line}");
    }
    assert!(
        !std::path::Path::new(&format!("/run/netns/{name}-host")).exists(),
        "lab removed"
    );
}
