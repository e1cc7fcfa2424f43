//! Every bad input fails with a non-zero exit and a one-line message that says what to do,
//! and changes nothing: no state row, no link, no namespace. Leaked namespaces are those no
//! state root lists (see `orphan_container_netns`), so other tests may run beside it.

mod common;
use common::TestLab;

#[test]
fn bad_input_fails_clearly_and_changes_nothing() {
    let lab = TestLab::new();
    lab.seed_network("base", &[]);
    lab.container("taken", "base", &["--ip", "10.103.19.77"]);
    let before = lab.snapshot();

    // (arguments, a phrase the message must contain)
    let cases: &[(&[&str], &str)] = &[
        // networks
        (
            &[
                "network",
                "create",
                "--subnet=10.1.0.0/33",
                "-o",
                "parent=eth0",
                "n1",
            ],
            "CIDR",
        ),
        (
            &[
                "network",
                "create",
                "--subnet=10.1.0.5/24",
                "-o",
                "parent=eth0",
                "n1",
            ],
            "did you mean --subnet=10.1.0.0/24",
        ),
        (
            &[
                "network",
                "create",
                "--subnet=10.103.19.0/26",
                "-o",
                "parent=eth0",
                "n1",
            ],
            "overlaps subnet 10.103.19.0/24 of network base",
        ),
        (
            &[
                "network",
                "create",
                "--subnet=10.1.0.0/24",
                "--gateway=10.2.0.1",
                "-o",
                "parent=eth0",
                "n1",
            ],
            "outside subnet",
        ),
        (
            &[
                "network",
                "create",
                "--subnet=10.1.0.0/24",
                "--ip-range=10.3.0.0/28",
                "-o",
                "parent=eth0",
                "n1",
            ],
            "outside subnet",
        ),
        (
            &[
                "network",
                "create",
                "--subnet=10.1.0.0/24",
                "-o",
                "parent=eth0",
                "-o",
                "macvlan_mode=fast",
                "n1",
            ],
            "valid modes: bridge, private, vepa, passthru",
        ),
        (
            &[
                "network",
                "create",
                "--subnet=10.1.0.0/24",
                "-o",
                "parent=ens99",
                "n1",
            ],
            "interfaces here: eth0",
        ),
        (
            &[
                "network",
                "create",
                "--subnet=10.1.0.0/24",
                "-o",
                "parent=lo",
                "n1",
            ],
            "loopback",
        ),
        (
            &[
                "network",
                "create",
                "--subnet=10.1.0.0/24",
                "-o",
                "parent=eth0",
                "base",
            ],
            "network with name base already exists",
        ),
        (
            &[
                "network",
                "create",
                "--subnet=10.1.0.0/24",
                "-o",
                "parent=eth0",
                "-o",
                "mtu=9000",
                "n1",
            ],
            "larger than the MTU 1500 of parent eth0",
        ),
        (
            &[
                "network",
                "create",
                "--subnet=10.1.0.0/24",
                "-o",
                "parent=eth0",
                "-o",
                "color=red",
                "n1",
            ],
            "accepts: parent, macvlan_mode, mtu",
        ),
        (
            &[
                "network",
                "create",
                "-d",
                "overlay",
                "--subnet=10.1.0.0/24",
                "-o",
                "parent=eth0",
                "n1",
            ],
            "unknown driver",
        ),
        (
            &["network", "create", "-o", "parent=eth0", "n1"],
            "needs the LAN's subnet",
        ),
        (&["network", "rm", "base"], "has active endpoints (taken)"),
        (&["network", "rm", "nope"], "network nope not found"),
        (&["network", "inspect", "nope"], "network nope not found"),
        // containers
        (
            &["run", "-d", "--network", "nope", "--", "sleep", "1"],
            "network nope not found",
        ),
        (
            &[
                "run",
                "-d",
                "--network",
                "base",
                "--ip",
                "10.9.9.9",
                "--",
                "sleep",
                "1",
            ],
            "outside subnet 10.103.19.0/24",
        ),
        (
            &[
                "run",
                "-d",
                "--network",
                "base",
                "--ip",
                "10.103.19.77",
                "--",
                "sleep",
                "1",
            ],
            "already in use by taken",
        ),
        (
            &[
                "run",
                "-d",
                "--network",
                "base",
                "--ip",
                "10.103.19.1",
                "--",
                "sleep",
                "1",
            ],
            "is the gateway",
        ),
        (
            &[
                "run",
                "-d",
                "--network",
                "base",
                "--ip",
                "banana",
                "--",
                "sleep",
                "1",
            ],
            "invalid --ip",
        ),
        (
            &[
                "run",
                "-d",
                "--network",
                "base",
                "--mac-address",
                "zz:zz",
                "--",
                "sleep",
                "1",
            ],
            "invalid MAC address",
        ),
        (
            &[
                "run",
                "-d",
                "--network",
                "base",
                "--mac-address",
                "01:00:5e:00:00:01",
                "--",
                "sleep",
                "1",
            ],
            "multicast",
        ),
        (
            &[
                "run",
                "-d",
                "--network",
                "base",
                "--name",
                "taken",
                "--",
                "sleep",
                "1",
            ],
            "already in use by container",
        ),
        (
            &[
                "run",
                "-d",
                "--network",
                "base",
                "--name",
                "bad/name",
                "--",
                "sleep",
                "1",
            ],
            "invalid container name",
        ),
        (&["run", "-d", "--network", "base"], "needs a command"),
        (
            &["run", "-d", "--network", "base", "--", "/no/such/binary"],
            "command not found",
        ),
        (
            &["run", "--network", "base", "--", "/no/such/binary"],
            "command not found",
        ),
        (&["exec", "nope", "--", "true"], "no such container: nope"),
        (&["rm", "nope"], "no such container: nope"),
        (&["rm", "taken"], "cannot remove running container taken"),
        (
            &["network", "connect", "base", "taken"],
            "already connected",
        ),
        (
            &["network", "disconnect", "base", "nope"],
            "no such container",
        ),
    ];
    for (args, want) in cases {
        let line = lab.fails(args);
        assert!(
            line.contains(want),
            "mvnet {args:?}: got '{line}', want '{want}'"
        );
        assert_eq!(lab.snapshot(), before, "mvnet {args:?} changed something");
    }
}
