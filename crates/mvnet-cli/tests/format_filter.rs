//! Docker's `--format` (Go templates, `table`, `json`) and `-f/--filter` on the listing and
//! inspect commands, in the lab.

mod common;
use common::TestLab;

fn lines(s: &str) -> Vec<String> {
    s.lines().map(str::to_string).collect()
}

#[test]
fn templates_and_filters_work_as_in_docker() {
    let lab = TestLab::new();
    lab.two_networks("base", "other", &["--label", "env=lab"]);
    lab.container("web", "base", &["--label", "tier=front", "-l", "team"]);
    lab.ok(&["run", "--network", "other", "--name", "done", "--", "true"]);

    // network ls
    let mut names = lines(&lab.ok(&["network", "ls", "--format", "{{.Name}}"]));
    names.sort();
    assert_eq!(names, ["base", "other"]);
    assert_eq!(
        lines(&lab.ok(&["network", "ls", "-f", "name=bas", "--format", "{{.Name}}"])),
        ["base"]
    );
    assert_eq!(
        lines(&lab.ok(&[
            "network",
            "ls",
            "-f",
            "label=env=lab",
            "--format",
            "{{.Name}}"
        ])),
        ["other"]
    );
    assert_eq!(
        lines(&lab.ok(&[
            "network",
            "ls",
            "-f",
            "name=base",
            "-f",
            "name=other",
            "-f",
            "driver=ipvlan",
            "--format",
            "{{.Name}}"
        ])),
        Vec::<String>::new(),
        "different keys must all match"
    );
    let table = lines(&lab.ok(&["network", "ls", "--format", "table {{.ID}}\\t{{.Name}}"]));
    assert!(
        table[0].starts_with("NETWORK ID") && table[0].ends_with("NAME"),
        "{table:?}"
    );
    assert_eq!(table.len(), 3);

    // network inspect
    let config = lab.ok(&["network", "inspect", "-f", "{{json .IPAM.Config}}", "base"]);
    let v: serde_json::Value = serde_json::from_str(config.trim()).unwrap();
    assert_eq!(v[0]["Subnet"], "10.103.19.0/24", "{config}");
    let ips = lab.ok(&[
        "network",
        "inspect",
        "-f",
        "{{range .Containers}}{{.IPv4Address}} {{end}}",
        "base",
    ]);
    assert_eq!(ips.trim(), "10.103.19.2/24");

    // ps and inspect
    assert_eq!(lines(&lab.ok(&["ps", "--format", "{{.Names}}"])), ["web"]);
    assert_eq!(
        lines(&lab.ok(&[
            "ps",
            "-f",
            "status=exited",
            "--format",
            "{{.Names}} {{.Status}}"
        ])),
        ["done Exited (0)"]
    );
    assert_eq!(
        lines(&lab.ok(&["ps", "-a", "-f", "network=other", "--format", "{{.Names}}"])),
        ["done"]
    );
    // Container labels, as in Docker: label=KEY or label=KEY=VALUE.
    for (f, want) in [
        ("label=tier", vec!["web"]),
        ("label=tier=front", vec!["web"]),
        ("label=team", vec!["web"]),
        ("label=tier=back", vec![]),
    ] {
        assert_eq!(
            lines(&lab.ok(&["ps", "-a", "-f", f, "--format", "{{.Names}}"])),
            want,
            "{f}"
        );
    }
    assert_eq!(
        lab.ok(&["inspect", "-f", "{{json .Config.Labels}}", "web"])
            .trim(),
        r#"{"team":"","tier":"front"}"#
    );
    assert_eq!(
        lines(&lab.ok(&["ps", "--format", "{{.Labels}}"])),
        ["team=,tier=front"]
    );
    let e = lab.fails(&[
        "run",
        "-d",
        "--network",
        "base",
        "--label",
        "=x",
        "--",
        "sleep",
        "1",
    ]);
    assert!(e.contains("--label"), "{e}");
    let key = lab.ok(&["inspect", "-f", "{{.NetworkSettings.SandboxKey}}", "web"]);
    assert!(key.trim().starts_with("/run/netns/mvnet-"), "{key}");

    // Bad input: one line, what is known.
    let e = lab.fails(&["network", "ls", "-f", "colour=red"]);
    assert!(e.contains("name, id, driver, label, scope, type"), "{e}");
    let e = lab.fails(&["ps", "--format", "{{.Names"]);
    assert!(e.contains("invalid --format template"), "{e}");
}
