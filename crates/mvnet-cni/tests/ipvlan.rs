//! The plugin as an ipvlan drop-in (root; needs a kernel with ipvlan, so it runs under
//! Debian's kernel through scripts/vm-tests.sh): a differential run against
//! /usr/lib/cni/ipvlan, selection by name and by "driver", and the chained master rule.

use serde_json::{json, Value};

mod common;
use common::{ip, kernel_has_ipvlan, World, PLUGIN};

fn full_kernel_or_skip(test: &str) -> bool {
    if kernel_has_ipvlan() {
        return true;
    }
    if std::env::var("MVNET_REQUIRE_FULL_KERNEL").as_deref() == Ok("1") {
        panic!("{test}: this kernel lacks ipvlan, but MVNET_REQUIRE_FULL_KERNEL=1");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "skipped {test}: this kernel lacks ipvlan; scripts/vm-tests.sh runs it under Debian's full kernel");
    false
}

#[test]
fn differential_against_the_reference_ipvlan_plugin() {
    if !full_kernel_or_skip("ipvlan_differential") {
        return;
    }
    let mut w = World::new();
    // One binary, two names: the reference's name selects ipvlan.
    let as_ipvlan = w.root.join("bin/ipvlan");
    std::fs::create_dir_all(as_ipvlan.parent().unwrap()).unwrap();
    std::fs::copy(PLUGIN, &as_ipvlan).unwrap();
    std::fs::copy(
        common::FULL_PLUGIN,
        as_ipvlan.with_file_name("mvnet-cni-full"),
    )
    .unwrap();
    let mut n = 0;
    for v in ["0.3.1", "0.4.0", "1.0.0"] {
        for mode in ["l2", "l3", "l3s"] {
            n += 1;
            let (ta, tb) = (w.netns(&format!("r{n}")), w.netns(&format!("m{n}")));
            let mk = |dir: &str| {
                json!({"cniVersion": v, "name": format!("ipv{n}"), "type": "ipvlan", "master": "lan0", "mode": mode,
                "ipam": {"type": "host-local", "subnet": "10.8.0.0/24", "routes": [{"dst": "0.0.0.0/0"}], "dataDir": w.root.join(dir)}})
            };
            // One after the other: ipvlan refuses the same address twice on one master.
            let ours = as_ipvlan.to_str().unwrap();
            let (ra_code, ra) = w.exec("/usr/lib/cni/ipvlan", "ADD", &ta, "eth0", &mk("ref"), &[]);
            assert_eq!(ra_code, 0, "{v} {mode}: reference {ra}");
            let la = w.link(&ta, "eth0").unwrap();
            assert_eq!(
                w.exec("/usr/lib/cni/ipvlan", "DEL", &ta, "eth0", &mk("ref"), &[])
                    .0,
                0
            );
            let (rb_code, rb) = w.exec(ours, "ADD", &tb, "eth0", &mk("ours"), &[]);
            assert_eq!(rb_code, 0, "{v} {mode}: ours {rb}");
            let lb = w.link(&tb, "eth0").unwrap();
            assert_eq!(w.exec(ours, "DEL", &tb, "eth0", &mk("ours"), &[]).0, 0);
            let strip = |mut r: Value| {
                for i in r["interfaces"].as_array_mut().into_iter().flatten() {
                    i["sandbox"] = json!("");
                }
                r
            };
            assert_eq!(
                strip(ra),
                strip(rb),
                "{v} {mode}: result JSON (MAC included: both share the master's)"
            );
            assert_eq!(la["linkinfo"]["info_kind"], "ipvlan");
            assert_eq!(
                la["linkinfo"]["info_data"]["mode"], lb["linkinfo"]["info_data"]["mode"],
                "{v} {mode}"
            );
            assert_eq!(la["mtu"], lb["mtu"]);
            assert_eq!(la["address"], lb["address"]);
        }
    }
}

#[test]
fn driver_field_and_chained_master() {
    if !full_kernel_or_skip("ipvlan_chained") {
        return;
    }
    let mut w = World::new();
    let t = w.netns("t");
    let c = json!({"cniVersion": "1.0.0", "name": "ipn", "type": "mvnet-cni", "driver": "ipvlan", "master": "lan0", "mode": "l3",
                   "ipam": {"type": "mvnet", "subnet": "10.9.0.0/24"}});
    let r = w.ok("ADD", &t, &c);
    let link = w.link(&t, "eth0").unwrap();
    assert_eq!(link["linkinfo"]["info_kind"], "ipvlan");
    assert_eq!(link["linkinfo"]["info_data"]["mode"], "l3");
    let mut check = c.clone();
    check["prevResult"] = r;
    w.ok("CHECK", &t, &check);
    w.ok("DEL", &t, &c);
    // Chained: no master, the previous plugin's single interface is the master (it lives in
    // the origin namespace here).
    let t2 = w.netns("t2");
    let mut chained = json!({"cniVersion": "1.0.0", "name": "ipc", "type": "mvnet-cni", "driver": "ipvlan", "ipam": {}});
    chained["prevResult"] = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "lan0"}]});
    w.ok("ADD", &t2, &chained);
    assert_eq!(
        w.link(&t2, "eth0").unwrap()["linkinfo"]["info_kind"],
        "ipvlan"
    );
    w.ok("DEL", &t2, &chained);
    chained["prevResult"] =
        json!({"cniVersion": "1.0.0", "interfaces": [{"name": "a"}, {"name": "b"}]});
    let (code, e) = w.exec(PLUGIN, "ADD", &t2, "eth0", &chained, &[]);
    assert_ne!(code, 0);
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("single named interface"),
        "{e}"
    );
    // A MAC cannot be chosen for ipvlan.
    let mut m = c.clone();
    m["mac"] = json!("c2:11:22:33:44:55");
    let (code, e) = w.exec(PLUGIN, "ADD", &t2, "eth0", &m, &[]);
    assert_ne!(code, 0);
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("share the master's MAC"),
        "{e}"
    );
    ip(&["-n", &t2, "link", "show"]);
}
