//! The Docker plugin against a real Docker engine (dockerd 20.10 from Debian's docker.io),
//! on a lab LAN made of network namespaces. Each test has its own lab, dockerd and plugin.

mod common;

use common::{DockerLab, IMAGE};

/// The seed's scenario through Docker: `docker network create -d mvnet --ipam-driver mvnet`,
/// `docker run`, the address .2 with MAC 02:42:0a:67:13:02 and default via .1; the
/// container reaches the gateway and the outside, the LAN peer reaches the container, and
/// the host cannot (the macvlan rule).
#[test]
fn seed_scenario_through_docker() {
    let lab = DockerLab::up("seed");
    let id = lab.seed_network("my-macvlan-net", &[]);
    assert_eq!(id.len(), 64, "{id}");
    lab.docker_ok(&[
        "run",
        "-d",
        "--network",
        "my-macvlan-net",
        "--name",
        "web",
        IMAGE,
        "sleep",
        "1000",
    ]);
    let ip = lab.inspect(
        "web",
        "{{(index .NetworkSettings.Networks \"my-macvlan-net\").IPAddress}}",
    );
    assert_eq!(ip, "10.103.19.2");
    let mac = lab.inspect(
        "web",
        "{{(index .NetworkSettings.Networks \"my-macvlan-net\").MacAddress}}",
    );
    assert_eq!(mac, "02:42:0a:67:13:02");
    let gw = lab.inspect(
        "web",
        "{{(index .NetworkSettings.Networks \"my-macvlan-net\").Gateway}}",
    );
    assert_eq!(gw, "10.103.19.1");
    // Inside the container: eth0 with the address and MAC, default via .1.
    let addr = lab.docker_ok(&["exec", "web", "ip", "-o", "addr", "show", "eth0"]);
    assert!(addr.contains("10.103.19.2/24"), "{addr}");
    let link = lab.docker_ok(&["exec", "web", "ip", "link", "show", "eth0"]);
    assert!(link.contains("02:42:0a:67:13:02"), "{link}");
    let route = lab.docker_ok(&["exec", "web", "ip", "route"]);
    assert!(route.contains("default via 10.103.19.1"), "{route}");
    for target in ["10.103.19.1", "198.51.100.10", "10.103.19.20"] {
        lab.docker_ok(&["exec", "web", "ping", "-c", "1", "-W", "2", target]);
    }
    let peer = lab.in_ns("peer", &["ping", "-c", "1", "-W", "2", "10.103.19.2"]);
    assert!(
        peer.ok(),
        "the peer must reach the container: {}",
        peer.stdout
    );
    let host = lab.in_ns("host", &["ping", "-c", "1", "-W", "1", "10.103.19.2"]);
    assert!(!host.ok(), "the host must not reach its macvlan container");
    // mvnet sees the Docker network and its endpoint.
    let ls = lab.mvnet(&["network", "ls"]);
    assert!(ls.stdout.contains(&id[..12]), "{}", ls.stdout);
    let inspect = lab.mvnet(&["network", "inspect", &id[..12]]);
    assert!(inspect.stdout.contains("10.103.19.2"), "{}", inspect.stdout);
    // Docker moved the link into the container: nothing of it is left on the host.
    assert!(lab.links_in("host", "mvd").is_empty());
    lab.docker_ok(&["rm", "-f", "web"]);
    assert!(lab.links_in("host", "mvd").is_empty());
    let inspect = lab.mvnet(&["network", "inspect", &id[..12]]);
    assert!(
        !inspect.stdout.contains("10.103.19.2"),
        "{}",
        inspect.stdout
    );
    // mvnet refuses to remove Docker's network; docker network rm does.
    let rm = lab.mvnet(&["network", "rm", &id[..12]]);
    assert_ne!(rm.code, 0);
    assert!(rm.stderr.contains("docker network rm"), "{}", rm.stderr);
    lab.docker_ok(&["network", "rm", "my-macvlan-net"]);
    let ls = lab.mvnet(&["network", "ls"]);
    assert!(!ls.stdout.contains(&id[..12]), "{}", ls.stdout);
}
