//! The CNI plugin against the real kernel (root): the reference macvlan plugin's test cases,
//! ported, across config versions and linkInContainer settings; a differential run against
//! /usr/lib/cni/macvlan; 100 parallel ADDs; kill -9 faults.
//!
//! Each test builds its own namespaces ("origin" holds the master, like a host; targets are
//! containers) and removes them on drop, even on failure. Nothing touches real interfaces.

use std::process::Command;

use serde_json::{json, Value};

mod common;
use common::{ip, World, PLUGIN};
const REFERENCE: &str = "/usr/lib/cni/macvlan";
const ALL_VERSIONS: [&str; 7] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

fn conf(version: &str, ipam: Value, extra: Value) -> Value {
    let mut c = json!({"cniVersion": version, "name": "mynet", "type": "mvnet-cni", "master": "lan0", "ipam": ipam});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn host_local(w: &World, subnet: &str) -> Value {
    json!({"type": "host-local", "subnet": subnet, "dataDir": w.root.join("host-local")})
}

/// Debian's host-local speaks config versions up to 1.0.0; for 1.1.0 the same ranges go to
/// mvnet's built-in IPAM (which the plugin serves itself).
fn ipam_for(version: &str, host_local_conf: Value) -> Value {
    if version == "1.1.0" {
        let mut b = host_local_conf;
        b["type"] = json!("mvnet");
        b.as_object_mut().unwrap().remove("dataDir");
        b
    } else {
        host_local_conf
    }
}

/// linkInContainer false / true / absent, as the reference tests do. With true, the master
/// lives in the container's namespace.
const LINK_IN_CONTAINER: [Option<bool>; 3] = [Some(false), Some(true), None];

fn with_lic(mut c: Value, lic: Option<bool>) -> Value {
    if let Some(b) = lic {
        c["linkInContainer"] = json!(b);
    }
    c
}

/// Where the master must be for `lic`: the origin, or inside the target.
fn prepare_target(w: &mut World, suffix: &str, lic: Option<bool>) -> String {
    let t = w.netns(suffix);
    if lic == Some(true) {
        ip(&[
            "-n", &t, "link", "add", "lan0", "type", "veth", "peer", "name", "lan1",
        ]);
        ip(&["-n", &t, "link", "set", "lan0", "up"]);
    }
    t
}

#[test]
fn add_del_with_host_local_every_version() {
    let mut w = World::new();
    for (i, v) in ALL_VERSIONS.iter().enumerate() {
        for (j, lic) in LINK_IN_CONTAINER.iter().enumerate() {
            let t = prepare_target(&mut w, &format!("a{i}{j}"), *lic);
            let c = with_lic(
                conf(v, ipam_for(v, host_local(&w, "10.1.2.0/24")), json!({})),
                *lic,
            );
            let r = w.ok("ADD", &t, &c);
            let link = w.link(&t, "eth0").expect("link created");
            assert_eq!(link["linkinfo"]["info_kind"], "macvlan");
            let addrs: Vec<&Value> = link["addr_info"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["family"] == "inet")
                .collect();
            assert_eq!(addrs.len(), 1, "{v}: one IPv4 address");
            if v.starts_with("0.1") || v.starts_with("0.2") {
                assert!(
                    r["ip4"]["ip"].as_str().unwrap().starts_with("10.1.2."),
                    "{v}: {r}"
                );
            } else {
                assert_eq!(
                    r["interfaces"].as_array().unwrap().len(),
                    1,
                    "{v}: one interface"
                );
                assert_eq!(
                    r["interfaces"][0]["mac"], link["address"],
                    "{v}: result MAC is the link's"
                );
                assert_eq!(r["ips"].as_array().unwrap().len(), 1);
                assert_eq!(r["cniVersion"], *v);
            }
            if *v == "1.1.0" {
                w.ok("STATUS", &t, &c);
            }
            w.ok("DEL", &t, &c);
            assert!(w.link(&t, "eth0").is_none(), "{v}: link gone after DEL");
            w.ok("DEL", &t, &c);
        }
    }
}

#[test]
fn del_of_something_never_added_succeeds() {
    let mut w = World::new();
    let t = w.netns("t");
    for v in ALL_VERSIONS {
        w.ok(
            "DEL",
            &t,
            &conf(v, ipam_for(v, host_local(&w, "10.1.2.0/24")), json!({})),
        );
        w.ok(
            "DEL",
            &t,
            &conf(
                v,
                json!({"type": "mvnet", "subnet": "10.1.3.0/24"}),
                json!({}),
            ),
        );
    }
    // A netns that is gone, or none at all, is success too.
    w.ok("DEL", "", &conf("1.0.0", json!({}), json!({})));
    w.ok("DEL", "no-such-ns", &conf("1.0.0", json!({}), json!({})));
}

#[test]
fn l2_only_and_old_versions_refuse_it() {
    let mut w = World::new();
    for (i, v) in ALL_VERSIONS.iter().enumerate() {
        let t = w.netns(&format!("l{i}"));
        let c = conf(v, json!({}), json!({}));
        let (code, r) = w.exec(PLUGIN, "ADD", &t, "eth0", &c, &[]);
        if v.starts_with("0.1") || v.starts_with("0.2") {
            assert_ne!(code, 0, "{v}: an L2-only result cannot be converted: {r}");
        } else {
            assert_eq!(code, 0, "{v}: {r}");
            assert!(r.get("ips").is_none(), "{v}: no addresses");
            let link = w.link(&t, "eth0").unwrap();
            assert!(link["addr_info"]
                .as_array()
                .unwrap()
                .iter()
                .all(|a| a["family"] != "inet"));
        }
        w.ok("DEL", &t, &c);
    }
}

#[test]
fn add_check_del_with_ranges_and_gateway() {
    let mut w = World::new();
    for (i, v) in ALL_VERSIONS.iter().enumerate() {
        for (j, lic) in LINK_IN_CONTAINER.iter().enumerate() {
            let t = prepare_target(&mut w, &format!("c{i}{j}"), *lic);
            let ipam = json!({"type": "host-local", "ranges": [[{"subnet": "10.1.2.0/24", "gateway": "10.1.2.1"}]],
                              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": w.root.join("hl2")});
            let c = with_lic(conf(v, ipam_for(v, ipam), json!({})), *lic);
            let r = w.ok("ADD", &t, &c);
            let mut check = c.clone();
            check["prevResult"] = r.clone();
            let (code, e) = w.exec(PLUGIN, "CHECK", &t, "eth0", &check, &[]);
            if ["0.1.0", "0.2.0", "0.3.0", "0.3.1"].contains(v) {
                assert_ne!(code, 0);
                assert!(
                    e["msg"]
                        .as_str()
                        .unwrap()
                        .contains("config version does not allow CHECK"),
                    "{e}"
                );
            } else {
                assert_eq!(code, 0, "{v} CHECK: {e}");
                // CHECK notices a change behind its back.
                ip(&["-n", &t, "route", "del", "default"]);
                let (code, e) = w.exec(PLUGIN, "CHECK", &t, "eth0", &check, &[]);
                assert_ne!(code, 0, "{v}: missing route must fail CHECK");
                assert!(e["msg"].as_str().unwrap().contains("route"), "{e}");
            }
            w.ok("DEL", &t, &c);
        }
    }
}

#[test]
fn no_master_uses_the_default_route_interface() {
    let mut w = World::new();
    let t = w.netns("t");
    let mut c = conf("1.0.0", host_local(&w, "10.1.2.0/24"), json!({}));
    c.as_object_mut().unwrap().remove("master");
    w.ok("ADD", &t, &c);
    // The macvlan's lower device (link) is lan0 of the origin, the default-route interface.
    let link = w.link(&t, "eth0").unwrap();
    assert_eq!(link["linkinfo"]["info_kind"], "macvlan");
    let o = Command::new("ip")
        .args(["-n", &w.origin(), "-j", "link", "show", "lan0"])
        .output()
        .unwrap();
    let lan0: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(link["link_index"], lan0[0]["ifindex"]);
    w.ok("DEL", &t, &c);
}

#[test]
fn mac_from_cni_args_and_runtime_config() {
    let mut w = World::new();
    let t = w.netns("a");
    let c = conf("1.0.0", host_local(&w, "10.1.2.0/24"), json!({}));
    let (code, r) = w.exec(
        PLUGIN,
        "ADD",
        &t,
        "eth0",
        &c,
        &[("CNI_ARGS", "IgnoreUnknown=true;MAC=c2:11:22:33:44:55")],
    );
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["interfaces"][0]["mac"], "c2:11:22:33:44:55");
    assert_eq!(w.link(&t, "eth0").unwrap()["address"], "c2:11:22:33:44:55");
    w.ok("DEL", &t, &c);
    let (code, r) = w.exec(PLUGIN, "ADD", &t, "eth0", &c, &[("CNI_ARGS", "FOO=bar")]);
    assert_eq!(
        (code, r["code"].as_u64()),
        (1, Some(4)),
        "unknown CNI_ARGS without IgnoreUnknown: {r}"
    );
    for key in ["runtimeConfig", "RuntimeConfig"] {
        let c = conf(
            "1.0.0",
            host_local(&w, "10.1.2.0/24"),
            json!({key: {"mac": "c2:11:22:33:44:66"}}),
        );
        let r = w.ok("ADD", &t, &c);
        assert_eq!(r["interfaces"][0]["mac"], "c2:11:22:33:44:66", "{key}");
        assert_eq!(w.link(&t, "eth0").unwrap()["address"], "c2:11:22:33:44:66");
        w.ok("DEL", &t, &c);
    }
}

/// (config, extra environment, expected code, phrase the message must contain)
type ErrorCase<'a> = (Value, &'a [(&'a str, &'a str)], u64, &'a str);

#[test]
fn errors_are_spec_json_with_actionable_messages_and_change_nothing() {
    let mut w = World::new();
    let t = w.netns("t");
    let cases: Vec<ErrorCase> = vec![
        (
            json!({"cniVersion": "1.0.0", "name": "n", "type": "x", "master": "nope0", "ipam": {}}),
            &[],
            7,
            "master interface nope0 not found; interfaces here:",
        ),
        (
            json!({"cniVersion": "1.0.0", "name": "n", "type": "x", "master": "lan0", "mode": "fast", "ipam": {}}),
            &[],
            7,
            "valid modes",
        ),
        (
            json!({"cniVersion": "1.0.0", "name": "n", "type": "x", "master": "lan0", "mtu": 9000, "ipam": {}}),
            &[],
            7,
            "invalid MTU 9000",
        ),
        (
            json!({"cniVersion": "7.0.0", "name": "n", "type": "x"}),
            &[],
            1,
            "incompatible CNI versions",
        ),
        (
            json!({"cniVersion": "1.0.0", "name": "n", "type": "x", "master": "lan0", "ipam": {"type": "nope-ipam"}}),
            &[],
            7,
            "not found in CNI_PATH",
        ),
        (
            json!({"cniVersion": "1.0.0", "name": "n", "type": "x", "master": "lan0", "ipam": {"type": "mvnet"}}),
            &[],
            7,
            "needs \"subnet\"",
        ),
        (
            json!({"cniVersion": "1.0.0", "name": "n", "type": "x", "master": "lan0", "ipam": {}}),
            &[("CNI_IFNAME", "x/y")],
            4,
            "invalid CNI_IFNAME",
        ),
        // IPAM succeeds, then the link fails (bad MAC from runtimeConfig is caught first;
        // use a multicast one): no link, and host-local's address is released.
        (
            json!({"cniVersion": "1.0.0", "name": "n", "type": "x", "master": "lan0", "mac": "01:00:5e:00:00:01",
                "ipam": host_local(&w, "10.1.9.0/24")}),
            &[],
            7,
            "multicast",
        ),
    ];
    for (c, env, want_code, want) in cases {
        let (code, r) = w.exec(PLUGIN, "ADD", &t, "eth0", &c, env);
        assert_ne!(code, 0, "{c}");
        assert_eq!(r["code"].as_u64(), Some(want_code), "{c}: {r}");
        assert!(r["msg"].as_str().unwrap().contains(want), "{c}: {r}");
        assert!(w.link(&t, "eth0").is_none(), "{c}: nothing left");
    }
    let (code, r) = w.exec(PLUGIN, "ADD", &t, "eth0", &json!("not an object"), &[]);
    assert_eq!(
        (code, r["code"].as_u64()),
        (1, Some(6)),
        "decode error: {r}"
    );
}

#[test]
fn add_is_atomic_when_the_link_fails_after_ipam() {
    // The reference plugin leaks here; mvnet must not. The interface name is already taken in
    // the target, so the link step fails after IPAM allocated an address.
    let mut w = World::new();
    let t = w.netns("t");
    ip(&[
        "-n", &t, "link", "add", "eth0", "type", "veth", "peer", "name", "x0",
    ]);
    for ipam in [
        host_local(&w, "10.1.4.0/24"),
        json!({"type": "mvnet", "subnet": "10.1.5.0/24"}),
    ] {
        let c = conf("1.0.0", ipam.clone(), json!({}));
        let (code, r) = w.exec(PLUGIN, "ADD", &t, "eth0", &c, &[]);
        assert_ne!(code, 0, "{r}");
        assert!(
            r["msg"]
                .as_str()
                .unwrap()
                .contains("already has an interface named eth0"),
            "{r}"
        );
        // The address was given back: host-local keeps one file per address, mvnet a row.
        if ipam["type"] == "host-local" {
            let dir = w.root.join("host-local").join("mynet");
            let held: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                .collect();
            assert!(held.is_empty(), "host-local still holds {held:?}");
        } else {
            // The failed ADD created the network record, so it took it away again.
            use mvnet_core::store::Store;
            let mut store = mvnet_core::store::SqliteStore::open(&w.root).unwrap();
            assert!(
                store.network("mynet").is_err(),
                "the record of the failed ADD's network is gone, with its address"
            );
            assert!(store.check_consistency().unwrap().is_empty());
        }
        // And the plugin still works for the next container.
        let t2 = w.netns(&format!("t2{}", ipam["type"].as_str().unwrap()));
        w.ok("ADD", &t2, &c);
        w.ok("DEL", &t2, &c);
    }
}

#[test]
fn differential_against_the_reference_plugin() {
    let mut w = World::new();
    let configs = [
        json!({"type": "host-local", "subnet": "10.7.0.0/24"}),
        json!({"type": "host-local", "ranges": [[{"subnet": "10.7.1.0/24", "gateway": "10.7.1.254", "rangeStart": "10.7.1.50", "rangeEnd": "10.7.1.60"}]], "routes": [{"dst": "0.0.0.0/0"}, {"dst": "198.51.100.0/24", "gw": "10.7.1.9"}]}),
        json!({}),
    ];
    let mut n = 0;
    for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0"] {
        for (ci, ipam) in configs.iter().enumerate() {
            for mode in ["bridge", "private", "vepa"] {
                n += 1;
                let (ta, tb) = (w.netns(&format!("r{n}")), w.netns(&format!("m{n}")));
                let mk = |dir: &str| {
                    let mut i = ipam.clone();
                    if i.get("type").is_some() {
                        i["dataDir"] = json!(w.root.join(format!("{dir}{ci}")));
                    }
                    json!({"cniVersion": v, "name": format!("diff{ci}"), "type": "macvlan", "master": "lan0", "mode": mode, "mtu": 1400, "ipam": i})
                };
                let (ca, cb) = (mk("ref"), mk("ours"));
                let (code_a, ra) = w.exec(REFERENCE, "ADD", &ta, "eth0", &ca, &[]);
                let (code_b, rb) = w.exec(PLUGIN, "ADD", &tb, "eth0", &cb, &[]);
                assert_eq!(
                    (code_a, code_b),
                    (0, 0),
                    "{v} {ipam} {mode}: ref {ra} ours {rb}"
                );
                // Results: identical except the MAC (the reference lets the kernel pick a
                // random one; mvnet derives it from the address) and the sandbox path.
                let strip = |mut r: Value| {
                    for i in r["interfaces"].as_array_mut().into_iter().flatten() {
                        i["mac"] = json!("");
                        i["sandbox"] = json!("");
                    }
                    r
                };
                assert_eq!(
                    strip(ra.clone()),
                    strip(rb.clone()),
                    "{v} {ipam} {mode}: result JSON"
                );
                // Kernel state, field by field.
                let (la, lb) = (w.link(&ta, "eth0").unwrap(), w.link(&tb, "eth0").unwrap());
                for f in ["mtu", "operstate", "link_type"] {
                    assert_eq!(la[f], lb[f], "{v} {mode}: link {f}");
                }
                assert_eq!(la["linkinfo"]["info_kind"], lb["linkinfo"]["info_kind"]);
                assert_eq!(
                    la["linkinfo"]["info_data"]["mode"],
                    lb["linkinfo"]["info_data"]["mode"]
                );
                let v4 = |l: &Value| -> Vec<String> {
                    l["addr_info"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|a| a["family"] == "inet")
                        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
                        .collect()
                };
                assert_eq!(v4(&la), v4(&lb), "{v} {mode}: addresses");
                let routes = |t: &str| {
                    let o = Command::new("ip")
                        .args(["-n", t, "-j", "-4", "route"])
                        .output()
                        .unwrap();
                    let mut r: Vec<(String, String)> = serde_json::from_slice::<Value>(&o.stdout)
                        .unwrap()
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| {
                            (
                                x["dst"].as_str().unwrap_or("").to_string(),
                                x["gateway"].as_str().unwrap_or("").to_string(),
                            )
                        })
                        .collect();
                    r.sort();
                    r
                };
                assert_eq!(routes(&ta), routes(&tb), "{v} {ipam} {mode}: routes");
                assert_eq!(w.exec(REFERENCE, "DEL", &ta, "eth0", &ca, &[]).0, 0);
                assert_eq!(w.exec(PLUGIN, "DEL", &tb, "eth0", &cb, &[]).0, 0);
            }
        }
    }
}

#[test]
fn builtin_ipam_is_visible_to_mvnet_and_survives_reuse() {
    let mut w = World::new();
    let c = conf(
        "1.1.0",
        json!({"type": "mvnet", "subnet": "10.1.6.0/24", "rangeStart": "10.1.6.100", "routes": [{"dst": "0.0.0.0/0"}]}),
        json!({}),
    );
    let (a, b) = (w.netns("a"), w.netns("b"));
    let ra = w.ok("ADD", &a, &c);
    let rb = w.ok("ADD", &b, &c);
    assert_eq!(ra["ips"][0]["address"], "10.1.6.100/24");
    assert_eq!(rb["ips"][0]["address"], "10.1.6.101/24");
    assert_eq!(
        ra["ips"][0]["gateway"], "10.1.6.1",
        "host-local's default gateway"
    );
    assert_eq!(
        ra["interfaces"][0]["mac"], "02:42:0a:01:06:64",
        "mvnet's MAC rule"
    );
    // The CLI sees what CNI attached (same store).
    let o = Command::new(env!("CARGO_BIN_EXE_mvnet-cni"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("CNI protocol versions supported"));
    let mut store = mvnet_core::store::SqliteStore::open(&w.root).unwrap();
    use mvnet_core::store::Store;
    let net = store.network("mynet").unwrap();
    assert_eq!(store.endpoints_of_network(&net.id).unwrap().len(), 2);
    let mut check = c.clone();
    check["prevResult"] = ra;
    w.ok("CHECK", &a, &check);
    // GC with only b valid releases a.
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] =
        json!([{"containerID": format!("ctr-{b}"), "ifname": "eth0"}]);
    w.ok("GC", "", &gc);
    assert_eq!(store.endpoints_of_network(&net.id).unwrap().len(), 1);
    assert!(
        w.link(&a, "eth0").is_none(),
        "GC removed the stale link too"
    );
    w.ok("DEL", &b, &c);
    assert!(store.endpoints_of_network(&net.id).unwrap().is_empty());
    // A config that disagrees with the stored network is refused clearly.
    let bad = conf(
        "1.1.0",
        json!({"type": "mvnet", "subnet": "10.9.9.0/24"}),
        json!({}),
    );
    let (code, r) = w.exec(PLUGIN, "ADD", &a, "eth0", &bad, &[]);
    assert_ne!(code, 0);
    assert!(
        r["msg"]
            .as_str()
            .unwrap()
            .contains("already exists with subnets"),
        "{r}"
    );
}

#[test]
fn version_and_status() {
    let w = World::new();
    let (code, v) = w.exec(
        PLUGIN,
        "VERSION",
        "",
        "",
        &json!({"cniVersion": "1.1.0"}),
        &[],
    );
    assert_eq!(code, 0);
    assert_eq!(v["supportedVersions"], json!(ALL_VERSIONS));
    let (code, _) = w.exec(
        PLUGIN,
        "STATUS",
        "",
        "",
        &conf("1.1.0", json!({}), json!({})),
        &[],
    );
    assert_eq!(code, 0);
    let (code, r) = w.exec(
        PLUGIN,
        "STATUS",
        "",
        "",
        &conf("1.1.0", json!({}), json!({"master": "gone0"})),
        &[],
    );
    assert_eq!((code, r["code"].as_u64()), (1, Some(50)), "{r}");
}

#[test]
fn hundred_parallel_adds_then_dels_leave_nothing() {
    let mut w = World::new();
    let targets: Vec<String> = (0..100).map(|i| w.netns(&format!("p{i}"))).collect();
    for ipam in [
        json!({"type": "mvnet", "subnet": "10.2.0.0/16"}),
        host_local(&w, "10.3.0.0/16"),
    ] {
        let c = conf("1.1.0", ipam.clone(), json!({}));
        let c = if ipam["type"] == "host-local" {
            conf("1.0.0", ipam, json!({}))
        } else {
            c
        };
        let results: Vec<(i32, Value)> = std::thread::scope(|s| {
            let hs: Vec<_> = targets
                .iter()
                .map(|t| s.spawn(|| w.exec(PLUGIN, "ADD", t, "eth0", &c, &[])))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut addrs = std::collections::HashSet::new();
        for (code, r) in &results {
            assert_eq!(*code, 0, "{r}");
            addrs.insert(r["ips"][0]["address"].as_str().unwrap().to_string());
        }
        assert_eq!(addrs.len(), 100, "100 distinct addresses");
        std::thread::scope(|s| {
            for t in &targets {
                s.spawn(|| assert_eq!(w.exec(PLUGIN, "DEL", t, "eth0", &c, &[]).0, 0));
            }
        });
        for t in &targets {
            assert!(w.link(t, "eth0").is_none(), "link left in {t}");
        }
    }
    let mut store = mvnet_core::store::SqliteStore::open(&w.root).unwrap();
    use mvnet_core::store::Store;
    let net = store.network("mynet").unwrap();
    assert!(
        store.endpoints_of_network(&net.id).unwrap().is_empty(),
        "store empty after DEL"
    );
    assert_eq!(store.check_consistency().unwrap(), Vec::<String>::new());
}

#[test]
fn kill_minus_nine_mid_add_then_gc_leaves_a_consistent_store() {
    let mut w = World::new();
    let c = conf(
        "1.1.0",
        json!({"type": "mvnet", "subnet": "10.4.0.0/16"}),
        json!({}),
    );
    let targets: Vec<String> = (0..40).map(|i| w.netns(&format!("k{i}"))).collect();
    // Start ADDs and kill them at staggered moments.
    let root = w.root.display().to_string();
    let mut kids: Vec<_> = targets
        .iter()
        .map(|t| w.spawn(PLUGIN, "ADD", t, "eth0", &c, &[("MVNET_ROOT", &root)]))
        .collect();
    for (i, k) in kids.iter_mut().enumerate() {
        std::thread::sleep(std::time::Duration::from_micros(300 * (i as u64 % 7)));
        // SAFETY: kill(2) only sends a signal; no memory is involved.
        unsafe { libc::kill(k.id() as i32, libc::SIGKILL) };
    }
    let finished: Vec<bool> = kids
        .into_iter()
        .map(|mut k| k.wait().unwrap().success())
        .collect();
    // The runtime GCs with the attachments it believes in: the ones that completed.
    let valid: Vec<Value> = targets
        .iter()
        .zip(&finished)
        .filter(|(_, ok)| **ok)
        .map(|(t, _)| json!({"containerID": format!("ctr-{t}"), "ifname": "eth0"}))
        .collect();
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!(valid);
    w.ok("GC", "", &gc);
    let mut store = mvnet_core::store::SqliteStore::open(&w.root).unwrap();
    use mvnet_core::store::Store;
    assert_eq!(store.check_consistency().unwrap(), Vec::<String>::new());
    if let Ok(net) = store.network("mynet") {
        assert_eq!(
            store.endpoints_of_network(&net.id).unwrap().len(),
            valid.len(),
            "only valid attachments remain"
        );
    }
    // No orphan links: every eth0 left belongs to a valid attachment.
    for (t, ok) in targets.iter().zip(&finished) {
        assert_eq!(
            w.link(t, "eth0").is_some(),
            *ok,
            "{t}: orphan or missing link"
        );
    }
    // The next ADDs work, for killed and completed containers alike (after their DEL).
    for t in &targets {
        w.ok("DEL", t, &c);
        w.ok("ADD", t, &c);
    }
    assert_eq!(store.check_consistency().unwrap(), Vec::<String>::new());
}

/// `"probe": true`: the far end of the master's cable (lan1, a LAN device in its own
/// namespace) holds 192.0.2.10 and answers ARP for it.
#[test]
fn probe_skips_an_address_the_lan_answers_for() {
    let mut w = World::new();
    let lan = w.lan();
    let o = Command::new("ip")
        .args(["-n", &lan, "-j", "link", "show", "lan1"])
        .output()
        .unwrap();
    let lan1: Value = serde_json::from_slice(&o.stdout).unwrap();
    let holder = lan1[0]["address"].as_str().unwrap().to_string();
    let ipam = json!({"type": "mvnet", "subnet": "192.0.2.0/24", "rangeStart": "192.0.2.10", "rangeEnd": "192.0.2.20"});

    // With probing, the ADD moves on to .11 and says why on stderr.
    let probing = conf("1.1.0", ipam.clone(), json!({"probe": true}));
    let b = w.netns("b");
    let (code, stdout, stderr) = w.exec_raw(PLUGIN, "ADD", &b, "eth0", &probing, &[]);
    let r: Value = serde_json::from_slice(&stdout).unwrap_or(Value::Null);
    assert_eq!(code, 0, "{r} {stderr}");
    assert_eq!(r["ips"][0]["address"], "192.0.2.11/24", "{stderr}");
    assert_eq!(
        r["interfaces"][0]["mac"], "02:42:c0:00:02:0b",
        "the MAC follows"
    );
    assert!(
        stderr.contains(&format!(
            "192.0.2.10 is already used on the LAN by the device with MAC {holder}"
        )),
        "{stderr}"
    );
    let link = w.link(&b, "eth0").unwrap();
    let addrs: Vec<&str> = link["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["family"] == "inet")
        .map(|a| a["local"].as_str().unwrap())
        .collect();
    assert_eq!(addrs, ["192.0.2.11"]);
    assert_eq!(link["address"], "02:42:c0:00:02:0b");
    let mut store = mvnet_core::store::SqliteStore::open(&w.root).unwrap();
    use mvnet_core::store::Store;
    let net = store.network("mynet").unwrap();
    let held = store.lan_conflicts(&net).unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].ip.to_string(), "192.0.2.10");
    assert_eq!(held[0].mac.map(|m| m.to_string()), Some(holder.clone()));
    // CHECK agrees with what ADD returned.
    let mut check = probing.clone();
    check["prevResult"] = r;
    w.ok("CHECK", &b, &check);

    // Asked for by name (CNI_ARGS IP=...): refused, nothing left behind.
    let c = w.netns("c");
    let (code, r) = w.exec(
        PLUGIN,
        "ADD",
        &c,
        "eth0",
        &probing,
        &[("CNI_ARGS", "IP=192.0.2.10")],
    );
    assert_ne!(code, 0);
    assert!(
        r["msg"].as_str().unwrap().contains(&format!(
            "address 192.0.2.10 is already used on the LAN by the device with MAC {holder}"
        )),
        "{r}"
    );
    assert!(w.link(&c, "eth0").is_none());
    assert_eq!(store.endpoints_of_network(&net.id).unwrap().len(), 1);
    assert_eq!(store.check_consistency().unwrap(), Vec::<String>::new());

    // Another IPAM plugin cannot offer a second choice: the ADD fails and host-local is
    // released (its lease file for .10 is gone).
    let hl = json!({"type": "host-local", "subnet": "192.0.2.0/24", "rangeStart": "192.0.2.10", "dataDir": w.root.join("host-local")});
    let mut delegated = conf("1.0.0", hl, json!({"probeMs": 50}));
    delegated["name"] = json!("other");
    let d = w.netns("d");
    let (code, r) = w.exec(PLUGIN, "ADD", &d, "eth0", &delegated, &[]);
    assert_ne!(code, 0);
    assert!(
        r["msg"]
            .as_str()
            .unwrap()
            .contains("address 192.0.2.10 from IPAM plugin host-local is already used on the LAN"),
        "{r}"
    );
    assert!(w.link(&d, "eth0").is_none());
    assert!(!w.root.join("host-local/other/192.0.2.10").exists());

    // Probing is off by default, as in every other plugin: the held address is handed out.
    // (A fresh host-local lease directory: its cursor would otherwise have moved past .10.)
    delegated.as_object_mut().unwrap().remove("probeMs");
    delegated["ipam"]["dataDir"] = json!(w.root.join("host-local-2"));
    let r = w.ok("ADD", &d, &delegated);
    assert_eq!(r["ips"][0]["address"], "192.0.2.10/24");
    w.ok("DEL", &d, &delegated);

    // Bad settings are config errors.
    let (code, r) = w.exec(
        PLUGIN,
        "ADD",
        &d,
        "eth0",
        &conf("1.1.0", ipam, json!({"probeMs": 60000})),
        &[],
    );
    assert_ne!(code, 0);
    assert!(r["msg"].as_str().unwrap().contains("at most 5000"), "{r}");
}
