//! A tiny run of the whole benchmark, so it cannot rot: every section runs and writes its
//! outputs. No assertion on times: machines are noisy, and speed is the benchmark's job.
//! Docker is left out here (the full run, scripts/bench.sh, includes it).

#[test]
fn benchmark_smoke_run_writes_all_outputs() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    assert_eq!(unsafe { libc::geteuid() }, 0, "needs root");
    let out = std::env::temp_dir().join(format!("mvnet-bench-smoke-{}", std::process::id()));
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_mvnet-bench"));
    // The mvnet and mvnet-cni binaries of this build sit next to the bench binary.
    let o = std::process::Command::new(bin)
        .args([
            "--n",
            "3",
            "--scale",
            "100",
            "--parallel",
            "5",
            "--teardown",
            "5",
            "--iperf-secs",
            "1",
            "--no-docker",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for f in ["results.json", "table.md", "latency.svg", "scale.svg"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    for contestant in [
        "mvnet-cni (built-in IPAM)",
        "reference macvlan + host-local",
        "netavark (static IP)",
        "iproute2 floor (no IPAM)",
        "mvnet network connect (CLI, probe off)",
        "mvnet network connect (CLI, probe 30 ms = default)",
        "mvnet-cni (built-in IPAM, probe 30 ms)",
    ] {
        assert_eq!(
            v["latency"][contestant]["errors"], 0,
            "{contestant} had errors: {}",
            v["latency"][contestant]
        );
        assert_eq!(v["latency"][contestant]["add_ms"]["n"], 3);
    }
    assert!(
        v["dataplane"]["mvnet macvlan (bridge mode)"]["container_to_container_gbit_s"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(stdout.contains("| target |"));
    assert!(
        stdout.contains("Conflict probing (window 30 ms"),
        "{stdout}"
    );
    std::fs::remove_dir_all(&out).unwrap();
}
