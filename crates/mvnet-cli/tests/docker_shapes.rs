//! `mvnet network inspect` and `mvnet inspect` against the shape of real Docker 20.10's
//! output for the same commands (keys and JSON types; the fixture is made by
//! `scripts/docker-shapes.sh` from a private dockerd, so this test needs no Docker). Every
//! difference is either fixed or listed here, with its reason, as in the README.

mod common;

use std::collections::BTreeMap;

use common::TestLab;

/// Docker fields mvnet does not have, by path prefix, with why.
const MISSING_ON_PURPOSE: &[(&str, &str)] = &[
    ("[].HostConfig.", "resources, mounts, devices, security options: mvnet runs no image and sets no limits (HostConfig.AutoRemove and NetworkMode are there)"),
    ("[].GraphDriver", "no image, no storage driver"),
    ("[].Mounts", "no image, no volumes: a container sees the host's file system"),
    ("[].Image", "no image"),
    ("[].Config.Image", "no image"),
    ("[].Config.Env", "the command inherits mvnet run's environment"),
    ("[].Config.Entrypoint", "no image, so no entrypoint"),
    ("[].Config.OnBuild", "no image"),
    ("[].Config.Volumes", "no volumes"),
    ("[].Driver", "no storage driver"),
    ("[].Platform", "no image"),
    ("[].MountLabel", "no SELinux labelling"),
    ("[].ProcessLabel", "no SELinux labelling"),
    ("[].AppArmorProfile", "no AppArmor profile"),
    ("[].ExecIDs", "mvnet exec keeps no exec records"),
    ("[].ResolvConfPath", "containers use the host's resolver: no per-container resolv.conf"),
    ("[].HostnamePath", "the hostname lives in the container's UTS namespace, not a file"),
    ("[].HostsPath", "no per-container hosts file"),
];

/// mvnet fields Docker does not have, with why.
const ADDED_ON_PURPOSE: &[(&str, &str)] = &[
    (
        "[].HostAccess",
        "--host-access: the host's shim into the network",
    ),
    (
        "[].LanConflicts",
        "addresses a LAN device answered for, skipped by the allocator",
    ),
    ("[].EnableIPv4", "--ipv4=false (Docker 27's field)"),
    (
        "[].NetworkSettings.Networks.*.InterfaceName",
        "--ifname (the interface in the container)",
    ),
    (
        "[].NetworkSettings.Networks.*.DHCP",
        "the DHCP lease (networks with --ipam-driver dhcp; null otherwise)",
    ),
];

fn shapes(v: &serde_json::Value) -> BTreeMap<String, String> {
    mvnet_core::views::json_shape(v)
}

fn fixture() -> serde_json::Value {
    let text = include_str!("fixtures/docker-20.10-shapes.json");
    serde_json::from_str(text).unwrap()
}

/// The differences that are not listed: (path, Docker's type, mvnet's type).
fn unlisted(docker: &serde_json::Value, ours: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (path, kind) in docker.as_object().unwrap() {
        let kind = kind.as_str().unwrap();
        let listed = MISSING_ON_PURPOSE.iter().any(|(p, _)| path.starts_with(p));
        match ours.get(path) {
            None if !listed => out.push(format!("missing {path} ({kind})")),
            // Docker prints null for an empty list or map: any type is its equal.
            Some(mine) if mine != kind && kind != "null" && mine != "null" && !listed => {
                out.push(format!("{path}: Docker has {kind}, mvnet {mine}"))
            }
            _ => {}
        }
    }
    for (path, mine) in ours {
        if docker.get(path).is_none() && !ADDED_ON_PURPOSE.iter().any(|(p, _)| path.starts_with(p))
        {
            out.push(format!("added {path} ({mine})"));
        }
    }
    out
}

#[test]
fn inspect_output_has_dockers_shape() {
    let lab = TestLab::new();
    let f = fixture();
    assert!(f["docker_version"].as_str().unwrap().starts_with("20.10"));
    lab.ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet=10.103.19.0/24",
        "--gateway=10.103.19.1",
        "--ip-range=10.103.19.0/25",
        "--aux-address=router=10.103.19.5",
        "-o",
        "parent=eth0",
        "--label",
        "env=lab",
        "shapes-net",
    ]);
    lab.container(
        "shapes-box",
        "shapes-net",
        &["--label", "tier=front", "--hostname", "box"],
    );
    let net: serde_json::Value =
        serde_json::from_str(&lab.ok(&["network", "inspect", "shapes-net"])).unwrap();
    let ctr: serde_json::Value = serde_json::from_str(&lab.ok(&["inspect", "shapes-box"])).unwrap();
    let mut problems = unlisted(&f["network_inspect"], &shapes(&net));
    problems.extend(unlisted(&f["inspect"], &shapes(&ctr)));
    assert!(
        problems.is_empty(),
        "differences from Docker 20.10 that are neither fixed nor listed:\n{}",
        problems.join("\n")
    );
}
