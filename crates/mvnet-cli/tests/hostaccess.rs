//! Host access: the host reaches its own macvlan containers through a shim that mvnet keeps
//! in step and restores after a reboot (root, real traffic in the lab).

mod common;
use common::TestLab;

fn shim(lab: &TestLab, net: &str) -> (String, String) {
    let v: serde_json::Value = serde_json::from_str(&lab.ok(&["network", "inspect", net])).unwrap();
    let h = &v[0]["HostAccess"];
    (
        h["Interface"].as_str().unwrap().to_string(),
        h["IPv4Address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string(),
    )
}

fn host_routes(lab: &TestLab) -> String {
    lab.on("host", &["ip", "-4", "route"]).stdout
}

/// TCP from the lab host to a container's HTTP server.
fn host_http(lab: &TestLab, ip: &str) -> bool {
    let url = format!("http://{ip}:8000/");
    let code = format!(
        "import urllib.request,sys; urllib.request.urlopen('{url}', timeout=2); sys.exit(0)"
    );
    lab.on("host", &["python3", "-c", &code]).code == 0
}

#[test]
fn host_reaches_containers_only_with_host_access_and_it_survives_a_reboot() {
    let lab = TestLab::new();
    lab.seed_network("n", &[]);
    lab.ok(&[
        "run",
        "-d",
        "--network",
        "n",
        "--name",
        "web",
        "--",
        "python3",
        "-m",
        "http.server",
        "8000",
        "--bind",
        "0.0.0.0",
    ]);
    let web = lab.ip_of("web", "n");
    // The seed's rule: without host access the host cannot reach its container.
    assert!(!lab.machine_reaches("host", &web));
    let lan_route_before = lab
        .on("host", &["ip", "route", "get", "10.103.19.20"])
        .stdout;

    lab.ok(&["network", "update", "--host-access", "on", "n"]);
    let (ifname, shim_ip) = shim(&lab, "n");
    assert!(ifname.starts_with("mvh-"), "{ifname}");
    assert!(lab.machine_reaches("host", &web), "host -> container");
    assert!(lab.container_reaches("web", &shim_ip), "container -> host");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !host_http(&lab, &web) {
        assert!(
            std::time::Instant::now() < deadline,
            "TCP from host to container"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // The host's way to the rest of the LAN is unchanged.
    assert!(lab.machine_reaches("host", "10.103.19.20"));
    assert_eq!(
        lab.on("host", &["ip", "route", "get", "10.103.19.20"])
            .stdout,
        lan_route_before
    );
    // Routes follow containers.
    lab.container("late", "n", &[]);
    let late = lab.ip_of("late", "n");
    assert!(host_routes(&lab).contains(&format!("{late} dev {ifname}")));
    assert!(lab.machine_reaches("host", &late));
    lab.ok(&["rm", "-f", "late"]);
    assert!(
        !host_routes(&lab).contains(&format!("{late} dev")),
        "route removed with the container"
    );

    // Off again: back to the kernel's isolation, shim gone.
    lab.ok(&["network", "update", "--host-access", "off", "n"]);
    assert!(!lab.machine_reaches("host", &web));
    assert!(!lab
        .on("host", &["ip", "-o", "link"])
        .stdout
        .contains(&ifname));

    // A reboot (simulated: the shim vanishes behind mvnet's back), then `mvnet restore`.
    lab.ok(&["network", "update", "--host-access", "on", "n"]);
    let (ifname, _) = shim(&lab, "n");
    assert_eq!(lab.on("host", &["ip", "link", "del", &ifname]).code, 0);
    assert!(!lab.machine_reaches("host", &web));
    let out = lab.ok(&["restore"]);
    assert!(out.contains("host access for network n"), "{out}");
    assert!(lab.machine_reaches("host", &web), "restored");

    // The shim goes with its network.
    lab.ok(&["rm", "-f", "web"]);
    lab.ok(&["network", "rm", "n"]);
    assert!(!lab
        .on("host", &["ip", "-o", "link"])
        .stdout
        .contains("mvh-"));
}

#[test]
fn host_access_at_create_with_a_range_uses_one_route() {
    let lab = TestLab::new();
    lab.ok(&[
        "network",
        "create",
        "--subnet=10.103.19.0/24",
        "--gateway=10.103.19.1",
        "--ip-range=10.103.19.128/26",
        "--host-access",
        "--host-access-ip",
        "10.103.19.250",
        "-o",
        "parent=eth0",
        "r",
    ]);
    let (ifname, ip) = shim(&lab, "r");
    assert_eq!(ip, "10.103.19.250");
    assert!(
        host_routes(&lab).contains(&format!("10.103.19.128/26 dev {ifname}")),
        "{}",
        host_routes(&lab)
    );
    lab.container("a", "r", &[]);
    assert!(lab.machine_reaches("host", &lab.ip_of("a", "r")));
    // Modes that cannot carry it are refused up front, and nothing is created.
    let e = lab.fails(&[
        "network",
        "create",
        "--subnet=10.99.0.0/24",
        "--host-access",
        "-o",
        "parent=eth0",
        "-o",
        "macvlan_mode=private",
        "p",
    ]);
    assert!(e.contains("needs a macvlan network in bridge mode"), "{e}");
    assert!(!lab.ok(&["network", "ls"]).contains(" p "));
}

/// The shim is a LAN member too: its address is probed like a container's. The lab peer
/// holds 10.103.19.20, where this range starts.
#[test]
fn the_shim_address_is_probed_like_a_container_address() {
    let lab = TestLab::new();
    let o = lab.mvnet(&[
        "network",
        "create",
        "--subnet=10.103.19.0/24",
        "--gateway=10.103.19.1",
        "--ip-range=10.103.19.20/30",
        "--host-access",
        "-o",
        "parent=eth0",
        "h",
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("10.103.19.20 is already used on the LAN by the device with MAC")
            && o.stderr.contains("using 10.103.19.21 instead"),
        "{}",
        o.stderr
    );
    let (ifname, ip) = shim(&lab, "h");
    assert_eq!(ip, "10.103.19.21");
    let link = lab.ip_json(
        lab.guard.lab.host_netns().to_str().unwrap(),
        &["addr", "show", &ifname],
    );
    assert_eq!(
        link[0]["address"], "02:42:0a:67:13:15",
        "the shim's MAC follows its address"
    );
    assert_eq!(link[0]["addr_info"][0]["local"], "10.103.19.21");
    // The host still reaches the peer (through the parent) and a container (through the shim).
    assert!(lab.machine_reaches("host", "10.103.19.20"));
    lab.container("a", "h", &[]);
    assert_eq!(lab.ip_of("a", "h"), "10.103.19.22");
    assert!(lab.machine_reaches("host", "10.103.19.22"));
    // A --host-access-ip the LAN answers for is refused, and the network is not created.
    let e = lab.fails(&[
        "network",
        "create",
        "--subnet=10.103.19.0/24",
        "--ip-range=10.103.19.64/26",
        "--host-access",
        "--host-access-ip",
        "10.103.19.20",
        "-o",
        "parent=eth0",
        "g",
    ]);
    assert!(e.contains("pick another --host-access-ip"), "{e}");
    assert!(!lab.ok(&["network", "ls"]).contains(" g "));
    let v: serde_json::Value = serde_json::from_str(&lab.ok(&["network", "inspect", "h"])).unwrap();
    assert_eq!(
        v[0]["LanConflicts"][0]["IPAddress"], "10.103.19.20",
        "still recorded: {v}"
    );
}
