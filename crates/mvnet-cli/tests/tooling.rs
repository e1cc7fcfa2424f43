//! The tool around the commands: version, info, system prune, shell completions (bash
//! completes network names) and man pages, all made from the same clap definitions.

mod common;
use common::TestLab;

use std::process::Command;

fn mvnet(args: &[&str]) -> common::Out {
    Command::new(env!("CARGO_BIN_EXE_mvnet"))
        .args(args)
        .output()
        .unwrap()
        .into()
}

#[test]
fn version_completions_and_man_pages() {
    let o = mvnet(&["version", "--format", "json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(v["Version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        mvnet(&["version", "--format", "{{.Version}}"])
            .stdout
            .trim(),
        env!("CARGO_PKG_VERSION")
    );
    for shell in ["bash", "zsh", "fish"] {
        let o = mvnet(&["completion", shell]);
        assert_eq!(o.code, 0, "{shell}: {}", o.stderr);
        assert!(
            o.stdout.contains("network") && o.stdout.contains("--subnet"),
            "{shell}: the subcommands and their options are in it"
        );
    }
    let dir = std::env::temp_dir().join(format!("mvnet-man-{}", mvnet_core::ids::new_id()));
    let o = mvnet(&["__man", dir.to_str().unwrap()]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    for page in [
        "mvnet.1",
        "mvnet-network-create.1",
        "mvnet-run.1",
        "mvnet-network-connect.1",
    ] {
        let text = std::fs::read_to_string(dir.join(page)).unwrap_or_else(|_| panic!("{page}"));
        assert!(text.contains(".TH"), "{page}");
    }
    let create = std::fs::read_to_string(dir.join("mvnet-network-create.1")).unwrap();
    assert!(
        create.contains("subnet") && create.contains("ipv4"),
        "options are documented"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bash_completes_network_names_and_info_and_prune_work() {
    let lab = TestLab::new();
    lab.two_networks("base", "backup", &[]);
    // Completion in bash, on the lab host, for `mvnet network inspect b<TAB>`.
    let script = lab.ok(&["completion", "bash"]);
    let file = std::env::temp_dir().join(format!("mvnet-compl-{}", mvnet_core::ids::new_id()));
    std::fs::write(&file, script).unwrap();
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_mvnet"))
        .parent()
        .unwrap();
    let probe = format!(
        "export PATH={}:$PATH MVNET_ROOT={}; source {}; COMP_WORDS=(mvnet network inspect b); COMP_CWORD=3; _mvnet_with_networks; echo \"${{COMPREPLY[*]}}\"",
        bin_dir.display(),
        lab.root().display(),
        file.display()
    );
    let o = lab.on("host", &["bash", "-c", &probe]);
    std::fs::remove_file(&file).unwrap();
    let mut got: Vec<&str> = o.stdout.split_whitespace().collect();
    got.sort();
    assert_eq!(got, ["backup", "base"], "{}", o.stderr);

    // info
    lab.container("up", "base", &[]);
    lab.ok(&["run", "--network", "base", "--name", "done", "--", "true"]);
    let info: serde_json::Value =
        serde_json::from_str(lab.ok(&["info", "--format", "json"]).trim()).unwrap();
    assert_eq!(info["Networks"], 2);
    assert_eq!(info["Containers"], 2);
    assert_eq!(info["ContainersRunning"], 1);
    assert_eq!(info["Kernel"]["macvlan"], true);
    assert_eq!(info["StateRoot"], lab.root().display().to_string());

    // system prune: the stopped container and the unused network go, the rest stays.
    let out = lab.ok(&["system", "prune", "-f"]);
    assert!(out.contains("Deleted Containers:\ndone"), "{out}");
    assert!(out.contains("Deleted Networks:\nbackup"), "{out}");
    let left = lab.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert_eq!(left.trim(), "up");
    let nets = lab.ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert_eq!(nets.trim(), "base");
}
