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
    // mvnet sees the Docker network, under Docker's name, and its endpoint.
    common::wait_for(
        || {
            lab.mvnet(&["network", "ls"])
                .stdout
                .contains("my-macvlan-net")
        },
        std::time::Duration::from_secs(10),
        "mvnet to learn the Docker network's name",
    );
    let ls = lab.mvnet(&["network", "ls"]);
    let row = ls
        .stdout
        .lines()
        .find(|l| l.contains(&id[..12]))
        .unwrap_or_default();
    assert!(
        row.contains("my-macvlan-net") && row.trim_end().ends_with("docker"),
        "{}",
        ls.stdout
    );
    let inspect = lab.mvnet(&["network", "inspect", &id[..12]]);
    assert!(inspect.stdout.contains("10.103.19.2"), "{}", inspect.stdout);
    // mvnet info sees the plugin (in the lab's private /run/docker/plugins).
    let info: serde_json::Value =
        serde_json::from_str(&lab.mvnet(&["info", "--format", "json"]).stdout).unwrap();
    assert_eq!(info["Plugins"]["docker"]["listening"], true, "{info}");
    assert_eq!(info["Plugins"]["docker"]["networks"], 1, "{info}");
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
    let rm = lab.mvnet(&["network", "rm", "my-macvlan-net"]);
    assert_ne!(rm.code, 0);
    assert!(
        rm.stderr.contains("docker network rm my-macvlan-net"),
        "{}",
        rm.stderr
    );
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

/// `kill -9` of the plugin with containers running, then a restart: the containers keep
/// working, and `docker network connect/disconnect`, `docker rm` and `docker network rm`
/// work afterwards, leaving no link, address or row behind.
#[test]
fn plugin_kill_9_and_restart_with_running_containers() {
    let mut lab = DockerLab::up("kill");
    let id = lab.seed_network("knet", &["-o", "probe_ms=0"]);
    lab.docker_ok(&[
        "run",
        "-d",
        "--network",
        "knet",
        "--name",
        "k1",
        IMAGE,
        "sleep",
        "1000",
    ]);
    lab.docker_ok(&[
        "run",
        "-d",
        "--network",
        "knet",
        "--name",
        "k2",
        IMAGE,
        "sleep",
        "1000",
    ]);
    lab.kill_plugin();
    // The containers do not depend on the plugin.
    lab.docker_ok(&["exec", "k1", "ping", "-c", "1", "-W", "2", "10.103.19.1"]);
    lab.start_plugin();
    lab.docker_ok(&["exec", "k2", "ping", "-c", "1", "-W", "2", "10.103.19.1"]);
    lab.docker_ok(&["network", "disconnect", "knet", "k2"]);
    lab.docker_ok(&["network", "connect", "knet", "k2"]);
    lab.docker_ok(&["exec", "k2", "ping", "-c", "1", "-W", "2", "10.103.19.20"]);
    lab.docker_ok(&[
        "run",
        "-d",
        "--network",
        "knet",
        "--name",
        "k3",
        IMAGE,
        "sleep",
        "1000",
    ]);
    lab.docker_ok(&["rm", "-f", "k1", "k2", "k3"]);
    let v: serde_json::Value =
        serde_json::from_str(&lab.mvnet(&["network", "inspect", &id[..12]]).stdout).unwrap();
    assert_eq!(v[0]["Containers"], serde_json::json!({}), "{v}");
    lab.docker_ok(&["network", "rm", "knet"]);
    assert!(lab.links_in("host", "mvd").is_empty());
    let ls = lab.mvnet(&["network", "ls", "-q"]).stdout;
    assert!(!ls.contains(&id[..12]), "{ls}");
}

/// A dockerd restart with `--restart always` containers: they come back on the network.
/// One started with `--ip` has the same address and MAC again. (Docker 20.10 releases every
/// address at shutdown and asks for new ones at start without naming the container, so
/// the others get a free address, with the MAC that goes with it; `--live-restore` keeps
/// them all, see the next test.) Nothing is left of the old endpoints.
#[test]
fn dockerd_restart_brings_restart_always_containers_back() {
    let mut lab = DockerLab::up("rst");
    let id = lab.seed_network("rnet", &["-o", "probe_ms=0"]);
    lab.docker_ok(&[
        "run",
        "-d",
        "--restart",
        "always",
        "--network",
        "rnet",
        "--ip",
        "10.103.19.40",
        "--name",
        "r1",
        IMAGE,
        "sleep",
        "100000",
    ]);
    lab.docker_ok(&[
        "run",
        "-d",
        "--restart",
        "always",
        "--network",
        "rnet",
        "--name",
        "r2",
        IMAGE,
        "sleep",
        "100000",
    ]);
    let before = address_and_mac(&lab, "r1", "rnet");
    assert_eq!(before, ("10.103.19.40".into(), "02:42:0a:67:13:28".into()));
    lab.stop_dockerd();
    lab.start_dockerd();
    for name in ["r1", "r2"] {
        common::wait_for(
            || lab.inspect(name, "{{.State.Running}}") == "true",
            std::time::Duration::from_secs(60),
            "the container to come back",
        );
        lab.docker_ok(&["exec", name, "ping", "-c", "1", "-W", "2", "10.103.19.1"]);
    }
    assert_eq!(address_and_mac(&lab, "r1", "rnet"), before);
    let (ip2, mac2) = address_and_mac(&lab, "r2", "rnet");
    let last: u8 = ip2.rsplit('.').next().unwrap().parse().unwrap();
    assert_eq!(
        mac2,
        format!("02:42:0a:67:13:{last:02x}"),
        "the MAC follows the address"
    );
    let v: serde_json::Value =
        serde_json::from_str(&lab.mvnet(&["network", "inspect", &id[..12]]).stdout).unwrap();
    assert_eq!(v[0]["Containers"].as_object().unwrap().len(), 2, "{v}");
    assert!(lab.links_in("host", "mvd").is_empty());
}

/// With `--live-restore`, containers keep running through a dockerd restart: same address
/// and MAC, and disconnect / rm work afterwards.
#[test]
fn dockerd_live_restore_keeps_every_address() {
    let mut lab = DockerLab::up("live");
    lab.stop_dockerd();
    lab.start_dockerd_with(&["--live-restore"]);
    let id = lab.seed_network("lnet", &["-o", "probe_ms=0"]);
    let mut before = Vec::new();
    for name in ["l1", "l2", "l3"] {
        lab.docker_ok(&[
            "run",
            "-d",
            "--network",
            "lnet",
            "--name",
            name,
            IMAGE,
            "sleep",
            "100000",
        ]);
        before.push(address_and_mac(&lab, name, "lnet"));
    }
    lab.stop_dockerd();
    lab.start_dockerd_with(&["--live-restore"]);
    for (i, name) in ["l1", "l2", "l3"].iter().enumerate() {
        assert_eq!(address_and_mac(&lab, name, "lnet"), before[i], "{name}");
        lab.docker_ok(&["exec", name, "ping", "-c", "1", "-W", "2", "10.103.19.1"]);
    }
    lab.docker_ok(&["network", "disconnect", "lnet", "l1"]);
    lab.docker_ok(&["rm", "-f", "l1", "l2", "l3"]);
    let v: serde_json::Value =
        serde_json::from_str(&lab.mvnet(&["network", "inspect", &id[..12]]).stdout).unwrap();
    assert_eq!(v[0]["Containers"], serde_json::json!({}), "{v}");
    lab.docker_ok(&["network", "rm", "lnet"]);
}

fn address_and_mac(lab: &DockerLab, name: &str, net: &str) -> (String, String) {
    (
        lab.inspect(
            name,
            &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"),
        ),
        lab.inspect(
            name,
            &format!("{{{{(index .NetworkSettings.Networks \"{net}\").MacAddress}}}}"),
        ),
    )
}

/// 20 parallel `docker run --network` get 20 distinct addresses.
#[test]
fn twenty_parallel_runs_get_distinct_addresses() {
    let lab = DockerLab::up("par");
    lab.seed_network("pnet", &[]);
    std::thread::scope(|s| {
        for i in 0..20 {
            let lab = &lab;
            s.spawn(move || {
                let name = format!("p{i}");
                lab.docker_ok(&[
                    "run",
                    "-d",
                    "--network",
                    "pnet",
                    "--name",
                    &name,
                    IMAGE,
                    "sleep",
                    "1000",
                ]);
            });
        }
    });
    let mut ips = Vec::new();
    for i in 0..20 {
        ips.push(lab.inspect(
            &format!("p{i}"),
            "{{(index .NetworkSettings.Networks \"pnet\").IPAddress}}",
        ));
    }
    let mut distinct = ips.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 20, "{ips:?}");
}

/// Each bad input fails with one clear line and leaves nothing behind: no link, no
/// allocation, no row.
#[test]
fn bad_input_fails_with_one_line_and_changes_nothing() {
    let lab = DockerLab::up("bad");
    // A parent that does not exist.
    let o = lab.docker(&[
        "network",
        "create",
        "-d",
        "mvnet",
        "--ipam-driver",
        "mvnet",
        "--subnet=10.103.19.0/24",
        "-o",
        "parent=nope0",
        "badparent",
    ]);
    assert!(!o.ok());
    assert!(o.stderr.contains("nope0"), "{}", o.stderr);
    assert_eq!(o.stderr.trim().lines().count(), 1, "{}", o.stderr);
    assert!(lab.mvnet(&["network", "ls", "-q"]).stdout.trim().is_empty());
    // No subnet.
    let o = lab.docker(&[
        "network",
        "create",
        "-d",
        "mvnet",
        "--ipam-driver",
        "mvnet",
        "-o",
        "parent=eth0",
        "nosub",
    ]);
    assert!(!o.ok());
    assert!(o.stderr.contains("--subnet"), "{}", o.stderr);
    // An unknown option.
    let o = lab.docker(&[
        "network",
        "create",
        "-d",
        "mvnet",
        "--ipam-driver",
        "mvnet",
        "--subnet=10.103.19.0/24",
        "-o",
        "parent=eth0",
        "-o",
        "macvlan_mode=bogus",
        "badmode",
    ]);
    assert!(!o.ok());
    assert!(o.stderr.contains("bogus"), "{}", o.stderr);

    let id = lab.seed_network("bnet", &["-o", "probe_ms=0"]);
    let rows = || {
        let v: serde_json::Value =
            serde_json::from_str(&lab.mvnet(&["network", "inspect", &id[..12]]).stdout).unwrap();
        v[0]["Containers"].as_object().map(|m| m.len()).unwrap_or(0)
    };
    lab.docker_ok(&[
        "run",
        "-d",
        "--network",
        "bnet",
        "--ip",
        "10.103.19.7",
        "--name",
        "b1",
        IMAGE,
        "sleep",
        "1000",
    ]);
    // The same address again.
    let o = lab.docker(&[
        "run",
        "-d",
        "--network",
        "bnet",
        "--ip",
        "10.103.19.7",
        "--name",
        "b2",
        IMAGE,
        "sleep",
        "1000",
    ]);
    assert!(!o.ok());
    assert!(o.stderr.contains("10.103.19.7"), "{}", o.stderr);
    // An address outside the subnet.
    let o = lab.docker(&[
        "run",
        "-d",
        "--network",
        "bnet",
        "--ip",
        "10.9.9.9",
        "--name",
        "b3",
        IMAGE,
        "sleep",
        "1000",
    ]);
    assert!(!o.ok());
    assert!(o.stderr.contains("10.9.9.9"), "{}", o.stderr);
    // The host's own address.
    let o = lab.docker(&[
        "run",
        "-d",
        "--network",
        "bnet",
        "--ip",
        "10.103.19.10",
        "--name",
        "b4",
        IMAGE,
        "sleep",
        "1000",
    ]);
    assert!(!o.ok());
    assert!(o.stderr.contains("10.103.19.10"), "{}", o.stderr);
    assert_eq!(rows(), 1, "only b1's endpoint may exist");
    let links = lab.links_in("host", "mvd");
    assert!(links.is_empty(), "{links:?}");
    // Removing the parent under a network: a clear line naming it.
    lab.docker_ok(&["rm", "-f", "b1"]);
    assert_eq!(rows(), 0);
}

// ----- moby's integration/network/macvlan cases, run against -d mvnet ---------------------

/// moby `testMacvlanNilParent`: no `-o parent`. Docker's driver makes a private dummy link;
/// mvnet takes the interface of the default route (the lab host's eth0), as the mvnet CLI
/// does, and containers reach each other.
#[test]
fn moby_macvlan_nil_parent() {
    let lab = DockerLab::up("nilp");
    lab.docker_ok(&[
        "network",
        "create",
        "-d",
        "mvnet",
        "--ipam-driver",
        "mvnet",
        "--subnet=10.103.19.0/24",
        "--gateway=10.103.19.1",
        "dm-nil-parent",
    ]);
    lab.docker_ok(&[
        "run",
        "-d",
        "--network",
        "dm-nil-parent",
        "--name",
        "n1",
        IMAGE,
        "sleep",
        "1000",
    ]);
    lab.docker_ok(&[
        "run",
        "-d",
        "--network",
        "dm-nil-parent",
        "--name",
        "n2",
        IMAGE,
        "sleep",
        "1000",
    ]);
    let ip1 = lab.inspect(
        "n1",
        "{{(index .NetworkSettings.Networks \"dm-nil-parent\").IPAddress}}",
    );
    lab.docker_ok(&["exec", "n2", "ping", "-c", "1", "-W", "2", &ip1]);
    assert!(
        lab.plugin_log().contains("no -o parent given: using eth0"),
        "{}",
        lab.plugin_log()
    );
}

/// moby `testMacvlanInternalMode`: `--internal` has no gateway; containers reach each other
/// and nothing outside.
#[test]
fn moby_macvlan_internal_mode() {
    let lab = DockerLab::up("intl");
    lab.seed_network("dm-internal", &["--internal"]);
    lab.docker_ok(&[
        "run",
        "-d",
        "--network",
        "dm-internal",
        "--name",
        "i1",
        IMAGE,
        "sleep",
        "1000",
    ]);
    lab.docker_ok(&[
        "run",
        "-d",
        "--network",
        "dm-internal",
        "--name",
        "i2",
        IMAGE,
        "sleep",
        "1000",
    ]);
    let gw = lab.inspect(
        "i1",
        "{{(index .NetworkSettings.Networks \"dm-internal\").Gateway}}",
    );
    assert_eq!(gw, "");
    let route = lab.docker_ok(&["exec", "i1", "ip", "route"]);
    assert!(!route.contains("default"), "{route}");
    let out = lab.docker(&["exec", "i1", "ping", "-c", "1", "-W", "1", "198.51.100.10"]);
    assert!(!out.ok(), "an internal network must not reach outside");
    let ip1 = lab.inspect(
        "i1",
        "{{(index .NetworkSettings.Networks \"dm-internal\").IPAddress}}",
    );
    lab.docker_ok(&["exec", "i2", "ping", "-c", "1", "-W", "2", &ip1]);
}

/// moby `testMacvlanMultiSubnet`: two IPv4 and two IPv6 subnets on one network, `--ip`
/// and `--ip6` on each, pings over both families, and the gateways (inferred .1, or given).
#[test]
fn moby_macvlan_multi_subnet() {
    let lab = DockerLab::up("msub");
    lab.docker_ok(&[
        "network",
        "create",
        "-d",
        "mvnet",
        "--ipam-driver",
        "mvnet",
        "-o",
        "parent=eth0",
        "--ipv6",
        "--subnet=172.28.100.0/24",
        "--subnet=172.28.102.0/24",
        "--gateway=172.28.102.254",
        "--subnet=2001:db8:abc2::/64",
        "--subnet=2001:db8:abc4::/64",
        "--gateway=2001:db8:abc4::254",
        "dualstackbridge",
    ]);
    let run = |name: &str, v4: &str, v6: &str| {
        lab.docker_ok(&[
            "run",
            "-d",
            "--network",
            "dualstackbridge",
            "--ip",
            v4,
            "--ip6",
            v6,
            "--name",
            name,
            IMAGE,
            "sleep",
            "1000",
        ]);
    };
    run("m1", "172.28.100.20", "2001:db8:abc2::20");
    run("m2", "172.28.100.21", "2001:db8:abc2::21");
    let f = |name: &str, field: &str| {
        lab.inspect(
            name,
            &format!("{{{{(index .NetworkSettings.Networks \"dualstackbridge\").{field}}}}}"),
        )
    };
    assert_eq!(f("m1", "IPAddress"), "172.28.100.20");
    assert_eq!(f("m1", "GlobalIPv6Address"), "2001:db8:abc2::20");
    lab.docker_ok(&["exec", "m2", "ping", "-c", "1", "-W", "2", "172.28.100.20"]);
    lab.docker_ok(&[
        "exec",
        "m2",
        "ping",
        "-6",
        "-c",
        "1",
        "-W",
        "3",
        "2001:db8:abc2::20",
    ]);
    run("m3", "172.28.102.20", "2001:db8:abc4::20");
    run("m4", "172.28.102.21", "2001:db8:abc4::21");
    lab.docker_ok(&["exec", "m4", "ping", "-c", "1", "-W", "2", "172.28.102.20"]);
    lab.docker_ok(&[
        "exec",
        "m4",
        "ping",
        "-6",
        "-c",
        "1",
        "-W",
        "3",
        "2001:db8:abc4::20",
    ]);
    assert_eq!(f("m1", "Gateway"), "172.28.100.1");
    assert_eq!(f("m1", "IPv6Gateway"), "2001:db8:abc2::1");
    assert_eq!(f("m3", "Gateway"), "172.28.102.254");
    assert_eq!(f("m3", "IPv6Gateway"), "2001:db8:abc4::254");
}

/// moby `testMacvlanAddressing`: dual stack without static addresses; the default routes
/// use the inferred IPv4 gateway and the given IPv6 one.
#[test]
fn moby_macvlan_addressing() {
    let lab = DockerLab::up("addr");
    lab.docker_ok(&[
        "network",
        "create",
        "-d",
        "mvnet",
        "--ipam-driver",
        "mvnet",
        "-o",
        "parent=eth0",
        "--ipv6",
        "-o",
        "macvlan_mode=bridge",
        "--subnet=172.28.130.0/24",
        "--subnet=2001:db8:abca::/64",
        "--gateway=2001:db8:abca::254",
        "dualstackbridge",
    ]);
    lab.docker_ok(&[
        "run",
        "-d",
        "--network",
        "dualstackbridge",
        "--name",
        "a1",
        IMAGE,
        "sleep",
        "1000",
    ]);
    let r4 = lab.docker_ok(&["exec", "a1", "ip", "route"]);
    assert!(r4.contains("default via 172.28.130.1 dev eth0"), "{r4}");
    let r6 = lab.docker_ok(&["exec", "a1", "ip", "-6", "route"]);
    assert!(
        r6.contains("default via 2001:db8:abca::254 dev eth0"),
        "{r6}"
    );
    // Two more, in parallel: each gets its own IPv4 and IPv6 address.
    std::thread::scope(|s| {
        for name in ["a2", "a3"] {
            let lab = &lab;
            s.spawn(move || {
                lab.docker_ok(&[
                    "run",
                    "-d",
                    "--network",
                    "dualstackbridge",
                    "--name",
                    name,
                    IMAGE,
                    "sleep",
                    "1000",
                ]);
            });
        }
    });
    let mut v6: Vec<String> = ["a1", "a2", "a3"]
        .iter()
        .map(|n| {
            lab.inspect(
                n,
                "{{(index .NetworkSettings.Networks \"dualstackbridge\").GlobalIPv6Address}}",
            )
        })
        .collect();
    v6.sort();
    v6.dedup();
    assert_eq!(v6.len(), 3, "{v6:?}");
    assert!(
        v6.iter().all(|a| a.starts_with("2001:db8:abca::")),
        "{v6:?}"
    );
}

/// moby `testMacvlanOverlapParent`, the mvnet way: Docker refuses a second network on a
/// parent in use; mvnet allows several networks per parent (one LAN, one address book)
/// but refuses an overlapping subnet. `docker network rm` keeps a parent it did not make.
#[test]
fn moby_macvlan_overlap_parent() {
    let lab = DockerLab::up("ovlp");
    lab.seed_network("dm-first", &[]);
    let o = lab.docker(&[
        "network",
        "create",
        "-d",
        "mvnet",
        "--ipam-driver",
        "mvnet",
        "--subnet=10.103.19.0/24",
        "-o",
        "parent=eth0",
        "dm-parent-net-overlap",
    ]);
    assert!(!o.ok());
    assert!(o.stderr.contains("10.103.19.0/24"), "{}", o.stderr);
    lab.docker_ok(&[
        "network",
        "create",
        "-d",
        "mvnet",
        "--ipam-driver",
        "mvnet",
        "--subnet=10.103.50.0/24",
        "-o",
        "parent=eth0",
        "dm-second",
    ]);
    lab.docker_ok(&["network", "rm", "dm-first", "dm-second"]);
    assert!(lab.links_in("host", "eth0").contains(&"eth0".to_string()));
}

/// After `docker run`, the LAN hears mvnet's announcements for the container's address:
/// RFC 5227 gratuitous ARPs from its MAC, at least three, spread over a second or more
/// (sent from inside the container once Docker has configured the link).
#[test]
fn docker_containers_are_announced_on_the_lan() {
    let lab = DockerLab::up("annc");
    lab.seed_network("anet", &["-o", "probe_ms=0"]);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let seen = std::thread::scope(|s| {
        let listener = s.spawn(|| common::arp_announcements(&lab, "10.103.19.2", &stop));
        std::thread::sleep(std::time::Duration::from_millis(300));
        lab.docker_ok(&[
            "run",
            "-d",
            "--network",
            "anet",
            "--name",
            "an1",
            IMAGE,
            "sleep",
            "1000",
        ]);
        std::thread::sleep(std::time::Duration::from_millis(3500));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        listener.join().unwrap()
    });
    let from_container: Vec<_> = seen
        .iter()
        .filter(|(_, mac)| mac == &[0x02, 0x42, 0x0a, 0x67, 0x13, 0x02])
        .collect();
    assert!(
        from_container.len() >= 3,
        "expected at least 3 announcements of 10.103.19.2 from 02:42:0a:67:13:02, saw {seen:?}"
    );
    let spread = from_container.last().unwrap().0 - from_container[0].0;
    assert!(
        spread >= std::time::Duration::from_millis(1500),
        "{spread:?}"
    );
}

/// `-o host_access=on`: the host reaches its Docker containers through mvnet's shim (the
/// seed's rule says it cannot otherwise), and the shim goes with the network.
#[test]
fn host_access_reaches_docker_containers() {
    let lab = DockerLab::up("hacc");
    lab.seed_network("hnet", &["-o", "host_access=on"]);
    lab.docker_ok(&[
        "run",
        "-d",
        "--network",
        "hnet",
        "--name",
        "h1",
        IMAGE,
        "sleep",
        "1000",
    ]);
    let ip = lab.inspect(
        "h1",
        "{{(index .NetworkSettings.Networks \"hnet\").IPAddress}}",
    );
    let o = lab.in_ns("host", &["ping", "-c", "1", "-W", "2", &ip]);
    assert!(
        o.ok(),
        "the host must reach {ip} through the shim: {}",
        o.stdout
    );
    lab.docker_ok(&["rm", "-f", "h1"]);
    lab.docker_ok(&["network", "rm", "hnet"]);
    assert!(
        lab.links_in("host", "mvh-").is_empty(),
        "the shim goes with the network"
    );
}

/// Issue 14's Docker form: `--ipam-driver null -o dhcp=on`. The container's address comes
/// from the LAN's DHCP server (dnsmasq on the lab's gateway), through CreateEndpoint; the
/// lease then moves into the container with the link and carries the container's hostname;
/// `docker rm` releases it; a container started again with the same --mac-address gets
/// the same address back; bad combinations fail with one line each.
#[test]
fn dhcp_network_through_docker() {
    let lab = DockerLab::up("dhcp");
    let dnsmasq = common::dnsmasq(&lab);
    // Bad combinations first: nothing is made.
    let e = lab.docker(&[
        "network",
        "create",
        "-d",
        "mvnet",
        "--ipam-driver",
        "null",
        "-o",
        "parent=eth0",
        "bad1",
    ]);
    assert!(!e.ok() && e.stderr.contains("-o dhcp=on"), "{}", e.stderr);
    let e = lab.docker(&[
        "network",
        "create",
        "-d",
        "mvnet",
        "--ipam-driver",
        "mvnet",
        "--subnet",
        "10.103.19.0/24",
        "-o",
        "dhcp=on",
        "-o",
        "parent=eth0",
        "bad2",
    ]);
    assert!(
        !e.ok() && e.stderr.contains("--ipam-driver null"),
        "{}",
        e.stderr
    );
    lab.docker_ok(&[
        "network",
        "create",
        "-d",
        "mvnet",
        "--ipam-driver",
        "null",
        "-o",
        "dhcp=on",
        "-o",
        "parent=eth0",
        "lan",
    ]);
    lab.docker_ok(&[
        "run",
        "-d",
        "--network",
        "lan",
        "--name",
        "printer",
        IMAGE,
        "sleep",
        "1000",
    ]);
    let net = |name: &str, field: &str| {
        lab.inspect(
            name,
            &format!("{{{{(index .NetworkSettings.Networks \"lan\").{field}}}}}"),
        )
    };
    let ip = net("printer", "IPAddress");
    let octet: u8 = ip
        .strip_prefix("10.103.19.")
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    assert!((100..=150).contains(&octet), "{ip}");
    assert_eq!(net("printer", "Gateway"), "10.103.19.1");
    assert_eq!(net("printer", "IPPrefixLen"), "24");
    let mac = net("printer", "MacAddress");
    let addr = lab.docker_ok(&["exec", "printer", "ip", "-o", "addr", "show", "eth0"]);
    assert!(addr.contains(&format!("{ip}/24")), "{addr}");
    let route = lab.docker_ok(&["exec", "printer", "ip", "route"]);
    assert!(route.contains("default via 10.103.19.1"), "{route}");
    for target in ["10.103.19.1", "198.51.100.10"] {
        lab.docker_ok(&["exec", "printer", "ping", "-c", "1", "-W", "2", target]);
    }
    // The server's lease: this MAC, then (once the lease has moved into the container)
    // the container's hostname.
    let hostname = lab.inspect("printer", "{{.Config.Hostname}}");
    common::wait_for(
        || {
            dnsmasq
                .leases()
                .lines()
                .any(|l| l.contains(&ip) && l.contains(&mac) && l.contains(&hostname))
        },
        std::time::Duration::from_secs(10),
        "the lease with the container's hostname",
    );
    let agent_log = std::fs::read_to_string(lab.root().join("dhcp/agent.log")).unwrap_or_default();
    assert!(
        agent_log.contains("moved with its interface"),
        "{agent_log}"
    );
    // mvnet shows the lease on the Docker network.
    let inspect = lab.mvnet(&["network", "inspect", "lan"]);
    assert!(inspect.stdout.contains(&ip), "{}", inspect.stdout);
    // rm releases it.
    lab.docker_ok(&["rm", "-f", "printer"]);
    common::wait_for(
        || !dnsmasq.leases().contains(&ip),
        std::time::Duration::from_secs(5),
        "the release on docker rm",
    );
    assert!(dnsmasq.log().contains("DHCPRELEASE"), "{}", dnsmasq.log());
    assert!(lab.links_in("host", "mvd").is_empty());
    // The same --mac-address, the same address.
    let run_fixed = || {
        lab.docker_ok(&[
            "run",
            "-d",
            "--network",
            "lan",
            "--mac-address",
            "02:aa:bb:cc:dd:01",
            "--name",
            "fixed",
            IMAGE,
            "sleep",
            "1000",
        ]);
        net("fixed", "IPAddress")
    };
    let first = run_fixed();
    lab.docker_ok(&["rm", "-f", "fixed"]);
    assert_eq!(run_fixed(), first);
    assert_eq!(net("fixed", "MacAddress"), "02:aa:bb:cc:dd:01");
    lab.docker_ok(&["rm", "-f", "fixed"]);
    lab.docker_ok(&["network", "rm", "lan"]);
}

/// Issue 15's Docker form: `--ipam-opt pool=NAME --ipam-opt etcd=...` with mvnet's IPAM.
/// A Docker container's address is claimed in etcd (the shared pool's record names it),
/// an `mvnet run` on another host's state root on the same LAN gets another address from
/// the same pool, and `docker rm` releases the claim.
#[test]
fn docker_networks_share_a_pool_through_etcd() {
    let lab = DockerLab::up("fleet");
    let etcd = mvnet_lab::testkit::EtcdCluster::start(&lab.guard.lab, 1);
    let etcd_opt = format!("etcd={}", etcd.endpoints());
    lab.docker_ok(&[
        "network",
        "create",
        "-d",
        "mvnet",
        "--ipam-driver",
        "mvnet",
        "--subnet",
        "10.103.19.0/24",
        "--gateway",
        "10.103.19.1",
        "--ip-range",
        "10.103.19.128/25",
        "--ipam-opt",
        "pool=office",
        "--ipam-opt",
        &etcd_opt,
        "-o",
        "parent=eth0",
        "lan",
    ]);
    // A mistake in --ipam-opt fails the create with one line.
    let bad = lab.docker(&[
        "network",
        "create",
        "-d",
        "mvnet",
        "--ipam-driver",
        "mvnet",
        "--subnet",
        "10.103.20.0/24",
        "--ipam-opt",
        "pool=bad name",
        "-o",
        "parent=eth0",
        "bad",
    ]);
    assert!(
        !bad.ok() && bad.stderr.contains("pool name"),
        "{}",
        bad.stderr
    );
    lab.docker_ok(&[
        "run",
        "-d",
        "--network",
        "lan",
        "--name",
        "web",
        IMAGE,
        "sleep",
        "1000",
    ]);
    let ip = lab.inspect(
        "web",
        "{{(index .NetworkSettings.Networks \"lan\").IPAddress}}",
    );
    let claim = etcd.etcdctl(&[
        "get",
        &format!("/mvnet/v1/pools/office/ip/{ip}"),
        "--print-value-only",
    ]);
    let claim = String::from_utf8_lossy(&claim.stdout).to_string();
    assert!(
        claim.contains("\"host\""),
        "{ip} is not claimed in etcd: {claim}"
    );
    // Another host (state root) on the LAN, with the CLI.
    let other = lab.second_root();
    let o = lab.mvnet_on_root(
        &other,
        &[
            "network",
            "create",
            "--subnet=10.103.19.0/24",
            "--gateway=10.103.19.1",
            "--ip-range=10.103.19.128/25",
            "-o",
            "parent=eth0",
            "--ipam-opt",
            "pool=office",
            "--ipam-opt",
            &etcd_opt,
            "lan",
        ],
    );
    assert!(o.ok(), "{}", o.stderr);
    let o = lab.mvnet_on_root(
        &other,
        &[
            "run",
            "-d",
            "--network",
            "lan",
            "--name",
            "cli",
            "--",
            "sleep",
            "1000",
        ],
    );
    assert!(o.ok(), "{}", o.stderr);
    let o = lab.mvnet_on_root(
        &other,
        &[
            "inspect",
            "-f",
            "{{.NetworkSettings.Networks.lan.IPAddress}}",
            "cli",
        ],
    );
    let cli_ip = o.stdout.trim().to_string();
    assert!(
        cli_ip.starts_with("10.103.19.") && cli_ip != ip,
        "{cli_ip} vs {ip}"
    );
    let o = lab.mvnet_on_root(&other, &["pool", "inspect", "office"]);
    assert!(
        o.stdout.contains(&ip) && o.stdout.contains(&cli_ip),
        "{}",
        o.stdout
    );
    // docker rm releases the claim.
    lab.docker_ok(&["rm", "-f", "web"]);
    common::wait_for(
        || {
            let g = etcd.etcdctl(&[
                "get",
                &format!("/mvnet/v1/pools/office/ip/{ip}"),
                "--print-value-only",
            ]);
            g.stdout.iter().all(|b| b.is_ascii_whitespace())
        },
        std::time::Duration::from_secs(10),
        "the release of the Docker container's address",
    );
    let o = lab.mvnet_on_root(&other, &["rm", "-f", "cli"]);
    assert!(o.ok(), "{}", o.stderr);
    lab.docker_ok(&["network", "rm", "lan"]);
}
