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

/// One address book per LAN: a Docker container, an `mvnet run` container and a CNI ADD on
/// the same parent and subnet get distinct addresses (their networks split the subnet with
/// disjoint ranges, Docker's rule for networks on one parent), and an address one front
/// end holds is refused to the others, even asked for by name; `docker run --ip --mac-address` and
/// `docker network connect --ip` / `disconnect` work; a LAN device holding the next
/// address makes Docker's container skip it, with a warning in the plugin's log and the
/// address recorded in mvnet's LanConflicts.
#[test]
fn one_address_book_static_addresses_and_the_conflict_probe() {
    let lab = DockerLab::up("book");
    let id = lab.seed_network("dnet", &["--ip-range=10.103.19.0/26"]);
    lab.docker_ok(&[
        "run",
        "-d",
        "--network",
        "dnet",
        "--name",
        "ca",
        IMAGE,
        "sleep",
        "1000",
    ]);
    assert_eq!(
        lab.inspect(
            "ca",
            "{{(index .NetworkSettings.Networks \"dnet\").IPAddress}}"
        ),
        "10.103.19.2"
    );
    // The mvnet CLI on the same LAN: another network, the same address book.
    let o = lab.mvnet(&[
        "network",
        "create",
        "--subnet",
        "10.103.19.0/24",
        "--gateway",
        "10.103.19.1",
        "--ip-range=10.103.19.64/26",
        "-o",
        "parent=eth0",
        "clinet",
    ]);
    assert!(o.ok(), "{}", o.stderr);
    let o = lab.mvnet(&[
        "run",
        "-d",
        "--network",
        "clinet",
        "--name",
        "c",
        "--",
        "sleep",
        "1000",
    ]);
    assert!(o.ok(), "{}", o.stderr);
    let o = lab.mvnet(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        "c",
    ]);
    let cli_ip = o.stdout.trim().to_string();
    assert!(
        o.ok() && cli_ip.starts_with("10.103.19."),
        "{}{}",
        o.stdout,
        o.stderr
    );
    assert_ne!(cli_ip, "10.103.19.2");
    // And the CNI plugin.
    let ns = lab.bare_netns("cni");
    let conf = r#"{"cniVersion":"1.1.0","name":"cninet","type":"mvnet-cni","master":"eth0",
        "ipam":{"type":"mvnet","subnet":"10.103.19.0/24","gateway":"10.103.19.1",
                "rangeStart":"10.103.19.128","rangeEnd":"10.103.19.190"}}"#;
    let o = lab.cni("ADD", &ns, "eth0", "cni1", conf);
    assert!(o.ok(), "{}{}", o.stdout, o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let cni_ip = v["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let mut seen = vec!["10.103.19.2".to_string(), cli_ip.clone(), cni_ip.clone()];
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 3, "distinct addresses expected: {seen:?}");

    // Static address and MAC.
    lab.docker_ok(&[
        "run",
        "-d",
        "--network",
        "dnet",
        "--ip",
        "10.103.19.50",
        "--mac-address",
        "02:00:00:00:00:50",
        "--name",
        "cb",
        IMAGE,
        "sleep",
        "1000",
    ]);
    let link = lab.docker_ok(&["exec", "cb", "ip", "-o", "addr", "show", "eth0"]);
    assert!(link.contains("10.103.19.50/24"), "{link}");
    let link = lab.docker_ok(&["exec", "cb", "ip", "link", "show", "eth0"]);
    assert!(link.contains("02:00:00:00:00:50"), "{link}");
    // The address is mvnet's too: the CLI cannot take it.
    let o = lab.mvnet(&[
        "run",
        "-d",
        "--network",
        "clinet",
        "--ip",
        "10.103.19.50",
        "--name",
        "c2",
        "--",
        "sleep",
        "1000",
    ]);
    assert!(!o.ok(), "10.103.19.50 is Docker's: {}", o.stdout);
    // ... and Docker cannot take the CLI container's address.
    let o = lab.docker(&[
        "run",
        "-d",
        "--network",
        "dnet",
        "--ip",
        &cli_ip,
        "--name",
        "taken",
        IMAGE,
        "sleep",
        "1000",
    ]);
    assert!(!o.ok(), "{cli_ip} is the CLI container's");
    assert!(o.stderr.contains(&cli_ip), "{}", o.stderr);

    // connect / disconnect on a running container.
    lab.docker_ok(&[
        "run",
        "-d",
        "--network",
        "dnet",
        "--name",
        "other",
        IMAGE,
        "sleep",
        "1000",
    ]);
    lab.docker_ok(&["network", "disconnect", "dnet", "other"]);
    lab.docker_ok(&[
        "network",
        "connect",
        "--ip",
        "10.103.19.51",
        "dnet",
        "other",
    ]);
    let addr = lab.docker_ok(&["exec", "other", "ip", "-o", "addr"]);
    assert!(addr.contains("10.103.19.51/24"), "{addr}");
    lab.docker_ok(&["exec", "other", "ping", "-c", "1", "-W", "2", "10.103.19.1"]);
    let inspect = lab.mvnet(&["network", "inspect", &id[..12]]).stdout;
    assert!(inspect.contains("10.103.19.51"), "{inspect}");
    lab.docker_ok(&["network", "disconnect", "dnet", "other"]);
    let inspect = lab.mvnet(&["network", "inspect", &id[..12]]).stdout;
    assert!(!inspect.contains("10.103.19.51"), "{inspect}");
    // A second connect gets the address again.
    lab.docker_ok(&[
        "network",
        "connect",
        "--ip",
        "10.103.19.51",
        "dnet",
        "other",
    ]);
    lab.docker_ok(&["network", "disconnect", "dnet", "other"]);
}

/// The conflict probe for Docker containers: a LAN peer holding .2 makes Docker's first
/// container get .3, with a warning in the plugin's log and .2 in mvnet's LanConflicts.
#[test]
fn a_lan_peer_holding_the_next_address_makes_docker_skip_it() {
    let lab = DockerLab::up("probe");
    let o = lab.in_ns(
        "peer",
        &["ip", "addr", "add", "10.103.19.2/24", "dev", "eth0"],
    );
    assert!(o.ok(), "{}", o.stderr);
    let id = lab.seed_network("pnet", &[]);
    lab.docker_ok(&[
        "run",
        "-d",
        "--network",
        "pnet",
        "--name",
        "cp",
        IMAGE,
        "sleep",
        "1000",
    ]);
    let got = lab.inspect(
        "cp",
        "{{(index .NetworkSettings.Networks \"pnet\").IPAddress}}",
    );
    assert_eq!(got, "10.103.19.3", "the probe must skip 10.103.19.2");
    let mac = lab.inspect(
        "cp",
        "{{(index .NetworkSettings.Networks \"pnet\").MacAddress}}",
    );
    assert_eq!(mac, "02:42:0a:67:13:03", "the MAC follows the address");
    let log = lab.plugin_log();
    assert!(
        log.lines()
            .any(|l| l.contains("warning") && l.contains("10.103.19.2")),
        "a warning naming 10.103.19.2 expected in the plugin log:\n{log}"
    );
    let inspect = lab.mvnet(&["network", "inspect", &id[..12]]).stdout;
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert!(
        v[0]["LanConflicts"].to_string().contains("10.103.19.2"),
        "{inspect}"
    );
    lab.docker_ok(&["exec", "cp", "ping", "-c", "1", "-W", "2", "10.103.19.20"]);
}
