//! `mvnet doctor` tells the truth about the kernel and the parent (root). Run on both this
//! machine's kernel and, through scripts/vm-tests.sh, Debian's full kernel.

mod common;
use common::{kernel_has, TestLab};

fn checks(lab: &TestLab, args: &[&str]) -> (i32, Vec<serde_json::Value>) {
    let mut a = vec!["doctor", "--format", "json"];
    a.extend_from_slice(args);
    let o = lab.mvnet(&a);
    let v: serde_json::Value =
        serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", o.stdout));
    (o.code, v.as_array().unwrap().clone())
}

fn find<'a>(c: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    c.iter()
        .find(|x| x["check"].as_str().unwrap().starts_with(name))
        .unwrap_or_else(|| panic!("no check {name}: {c:?}"))
}

#[test]
fn kernel_lines_match_what_the_kernel_really_does() {
    let lab = TestLab::new();
    let (_, c) = checks(&lab, &["--parent", "eth0"]);
    for (check, kind, module) in [
        ("kernel: macvlan", "macvlan", "macvlan"),
        ("kernel: 802.1Q", "vlan", "8021q"),
        ("kernel: ipvlan", "ipvlan", "ipvlan"),
        ("kernel: macvtap", "macvtap", "macvtap"),
    ] {
        let x = find(&c, check);
        if kernel_has(kind) {
            assert_eq!(x["status"], "OK", "{x}");
        } else {
            assert_ne!(x["status"], "OK", "{x}");
            assert!(
                x["fix"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("modprobe {module}")),
                "{x}"
            );
            assert!(x["detail"].as_str().unwrap().contains("CONFIG_"), "{x}");
        }
    }
}

#[test]
fn parent_checks_and_exit_status() {
    let lab = TestLab::new();
    let (code, c) = checks(&lab, &[]);
    assert_eq!(code, 0, "nothing fails on the lab host: {c:?}");
    assert_eq!(find(&c, "privileges")["status"], "OK");
    assert_eq!(
        find(&c, "parent eth0")["status"],
        "OK",
        "default-route parent of the lab host"
    );
    let host = find(&c, "host access");
    assert_eq!(host["status"], "WARN");
    assert!(
        host["detail"].as_str().unwrap().contains("10.103.19.10/24"),
        "{host}"
    );

    let (code, c) = checks(&lab, &["--parent", "nope0"]);
    assert_eq!(code, 1, "a missing parent FAILs");
    let p = find(&c, "parent nope0");
    assert_eq!(p["status"], "FAIL");
    assert!(
        p["fix"].as_str().unwrap().contains("eth0"),
        "lists real interfaces: {p}"
    );

    // A trunk VLAN parent that does not exist yet: fine with 8021q, FAIL naming it without.
    let (code, c) = checks(&lab, &["--parent", "eth0.1318"]);
    let p = find(&c, "parent eth0.1318");
    if kernel_has("vlan") {
        assert_eq!((code, p["status"].as_str().unwrap()), (0, "OK"), "{p}");
    } else {
        assert_eq!((code, p["status"].as_str().unwrap()), (1, "FAIL"), "{p}");
        assert!(p["fix"].as_str().unwrap().contains("modprobe 8021q"));
    }

    // An enslaved parent: the lab switch's port is a bridge port.
    let o = lab.on(
        "sw",
        &[
            env!("CARGO_BIN_EXE_mvnet"),
            "--root",
            lab.root().join("sw").to_str().unwrap(),
            "doctor",
            "--parent",
            "p-host",
            "--format",
            "json",
        ],
    );
    let c: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let role = find(c.as_array().unwrap(), "p-host role");
    assert!(
        role["detail"]
            .as_str()
            .unwrap()
            .contains("a bridge port of br0"),
        "{role}"
    );

    // Text form: one line per check with OK/WARN/FAIL.
    let text = lab.ok(&["doctor", "--parent", "eth0"]);
    assert!(
        text.lines().any(|l| l.starts_with("OK    parent eth0")),
        "{text}"
    );
}
