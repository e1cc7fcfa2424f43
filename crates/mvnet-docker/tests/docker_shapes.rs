//! Generates `crates/mvnet-cli/tests/fixtures/docker-20.10-shapes.json`: the shape (paths
//! and JSON types, no values) of real Docker 20.10's `docker network inspect` and
//! `docker inspect` for the same create/run commands that `crates/mvnet-cli/tests/
//! docker_shapes.rs` gives mvnet. Run by `scripts/docker-shapes.sh` (needs root and
//! docker.io); the comparison itself runs in CI without Docker, from the fixture.

mod common;

use common::{DockerLab, IMAGE};

#[test]
#[ignore = "writes the fixture; run through scripts/docker-shapes.sh"]
fn generate_docker_shapes_fixture() {
    let lab = DockerLab::up("shp");
    // Docker's own macvlan driver, as the seed uses it.
    lab.docker_ok(&[
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
    lab.docker_ok(&[
        "run",
        "-d",
        "--network",
        "shapes-net",
        "--name",
        "shapes-box",
        "--label",
        "tier=front",
        "--hostname",
        "box",
        IMAGE,
        "sleep",
        "1000",
    ]);
    let net: serde_json::Value =
        serde_json::from_str(&lab.docker_ok(&["network", "inspect", "shapes-net"])).unwrap();
    let ctr: serde_json::Value =
        serde_json::from_str(&lab.docker_ok(&["inspect", "shapes-box"])).unwrap();
    let version = lab.docker_ok(&["version", "--format", "{{.Server.Version}}"]);
    let fixture = serde_json::json!({
        "docker_version": version,
        "commands": [
            "docker network create -d macvlan --subnet=10.103.19.0/24 --gateway=10.103.19.1 --ip-range=10.103.19.0/25 --aux-address=router=10.103.19.5 -o parent=eth0 --label env=lab shapes-net",
            "docker run -d --network shapes-net --name shapes-box --label tier=front --hostname box busybox sleep 1000",
        ],
        "network_inspect": mvnet_core::views::json_shape(&net),
        "inspect": mvnet_core::views::json_shape(&ctr),
    });
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../mvnet-cli/tests/fixtures/docker-20.10-shapes.json");
    std::fs::write(&out, serde_json::to_string_pretty(&fixture).unwrap() + "\n").unwrap();
    eprintln!("wrote {}", out.display());
}
