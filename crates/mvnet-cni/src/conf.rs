//! The plugin's inputs: environment, CNI_ARGS and the network configuration on stdin.
//! Every field of the reference macvlan plugin is accepted with the same meaning.

use serde::Deserialize;
use serde_json::Value;

use crate::error::{code, CniError, CniResult};

pub const SUPPORTED_VERSIONS: [&str; 7] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

/// The CNI_* environment, validated as the spec says.
#[derive(Debug, Clone)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
    pub path: String,
}

impl Env {
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> CniResult<Env> {
        let var = |k: &str| get(k).unwrap_or_default();
        let command = match var("CNI_COMMAND").as_str() {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "" => {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    "required env variables [CNI_COMMAND] missing",
                ))
            }
            other => {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    format!(
                    "unknown CNI_COMMAND {other}: expected ADD, DEL, CHECK, VERSION, STATUS or GC"
                ),
                ))
            }
        };
        let env = Env {
            command,
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: var("CNI_ARGS"),
            path: var("CNI_PATH"),
        };
        let required: &[(&str, &String)] = match command {
            Command::Add | Command::Check => &[
                ("CNI_CONTAINERID", &env.container_id),
                ("CNI_NETNS", &env.netns),
                ("CNI_IFNAME", &env.ifname),
                ("CNI_PATH", &env.path),
            ],
            Command::Del => &[
                ("CNI_CONTAINERID", &env.container_id),
                ("CNI_IFNAME", &env.ifname),
                ("CNI_PATH", &env.path),
            ],
            _ => &[],
        };
        let missing: Vec<&str> = required
            .iter()
            .filter(|(_, v)| v.is_empty())
            .map(|(k, _)| *k)
            .collect();
        if !missing.is_empty() {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!("required env variables [{}] missing", missing.join(",")),
            ));
        }
        // VERSION (and STATUS, GC) take no container: a runtime may leave stale values of
        // these variables around, and they must not fail a version query.
        let per_container = matches!(command, Command::Add | Command::Del | Command::Check);
        if per_container
            && !env.container_id.is_empty()
            && !env
                .container_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!(
                    "invalid CNI_CONTAINERID {:?}: use letters, digits, '_', '.' and '-'",
                    env.container_id
                ),
            ));
        }
        if per_container && !env.ifname.is_empty() {
            let bad = env.ifname.len() > 15
                || env.ifname == "."
                || env.ifname == ".."
                || env
                    .ifname
                    .chars()
                    .any(|c| c == '/' || c == ':' || c.is_whitespace());
            if bad {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    format!(
                        "invalid CNI_IFNAME {:?}: at most 15 characters, no '/', ':' or spaces",
                        env.ifname
                    ),
                ));
            }
        }
        Ok(env)
    }
}

/// `CNI_ARGS`: `K=V;K=V`. Only MAC (and IP for mvnet's IPAM) are used; any other key is an
/// error unless IgnoreUnknown is true, as in the reference plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub mac: Option<String>,
    pub ip: Option<String>,
    /// `K8S_POD_NAME` (Kubernetes, Podman): the name a DHCP client id is made from, so a
    /// pod re-created under the same name gets its address back. Still an unknown key
    /// for the `IgnoreUnknown` rule, as for the reference plugin.
    pub pod_name: Option<String>,
}

pub fn parse_args(s: &str) -> CniResult<CniArgs> {
    let mut out = CniArgs::default();
    let mut ignore_unknown = false;
    let mut unknown = Vec::new();
    for pair in s.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            CniError::new(
                code::INVALID_ENV,
                format!("invalid CNI_ARGS pair {pair:?}: expected KEY=VALUE"),
            )
        })?;
        match k {
            "MAC" => out.mac = Some(v.to_string()),
            "IP" => out.ip = Some(v.to_string()),
            "IgnoreUnknown" => {
                ignore_unknown = matches!(v.to_ascii_lowercase().as_str(), "1" | "true")
            }
            "K8S_POD_NAME" => {
                out.pod_name = Some(v.to_string());
                unknown.push(k.to_string());
            }
            _ => unknown.push(k.to_string()),
        }
    }
    if !unknown.is_empty() && !ignore_unknown {
        return Err(CniError::new(
            code::INVALID_ENV,
            format!(
                "ARGS: unknown args {:?}; add IgnoreUnknown=1 to CNI_ARGS to ignore them",
                unknown
            ),
        ));
    }
    Ok(out)
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuntimeConfig {
    #[serde(default)]
    pub mac: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    #[serde(default)]
    pub ifname: String,
}

/// The network configuration as the runtime passes it to the plugin.
#[derive(Debug, Clone, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    /// Parent interface; empty means the interface holding the default route.
    #[serde(default)]
    pub master: String,
    /// mvnet addition: 802.1Q VLAN of `master` (same as master "BASE.VID").
    #[serde(default)]
    pub vlan: Option<u16>,
    #[serde(default)]
    pub mode: String,
    /// mvnet addition: "ipvlan" selects the ipvlan driver (so does running this binary under
    /// the name `ipvlan`); anything else, or nothing, is macvlan.
    #[serde(default)]
    pub driver: String,
    #[serde(default)]
    pub mtu: u32,
    #[serde(default)]
    pub mac: String,
    #[serde(rename = "linkInContainer", default)]
    pub link_in_container: bool,
    #[serde(default)]
    pub bcqueuelen: Option<u32>,
    /// mvnet addition: probe the LAN for each address before using it (an RFC 5227 ARP
    /// probe; IPv6 through DAD). Off by default, as runtimes expect an ADD to be quick.
    #[serde(default)]
    pub probe: bool,
    /// mvnet addition: the probe window in ms (turns probing on; 0 turns it off).
    #[serde(rename = "probeMs", default)]
    pub probe_ms: Option<u32>,
    #[serde(default)]
    pub ipam: Value,
    #[serde(rename = "runtimeConfig", alias = "RuntimeConfig", default)]
    pub runtime_config: RuntimeConfig,
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<Attachment>>,
}

impl NetConf {
    pub fn parse(bytes: &[u8]) -> CniResult<NetConf> {
        let conf: NetConf = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(
                code::DECODE,
                format!("failed to parse the network configuration: {e}"),
            )
        })?;
        check_network_name(&conf.name)?;
        if !(conf.ipam.is_null() || conf.ipam.is_object()) {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "\"ipam\" must be an object such as {\"type\": \"mvnet\", \"subnet\": \"10.103.19.0/24\"}, or left out",
            ));
        }
        let v = conf.version();
        if !SUPPORTED_VERSIONS.contains(&v) {
            return Err(
                CniError::new(code::INCOMPATIBLE_VERSION, "incompatible CNI versions")
                    .with_details(format!(
                        "config is {v:?}, plugin supports {:?}",
                        SUPPORTED_VERSIONS
                    )),
            );
        }
        Ok(conf)
    }

    /// The config's version; a missing one means 0.1.0, as in libcni.
    pub fn version(&self) -> &str {
        if self.cni_version.is_empty() {
            "0.1.0"
        } else {
            &self.cni_version
        }
    }

    pub fn ipam_type(&self) -> &str {
        self.ipam.get("type").and_then(Value::as_str).unwrap_or("")
    }

    pub fn is_ipvlan(&self) -> bool {
        self.driver == "ipvlan"
    }

    /// The conflict-probe window: `probeMs`, else 30 ms with `"probe": true`, else none.
    pub fn probe_window(&self) -> CniResult<Option<std::time::Duration>> {
        use mvnet_core::model::NetworkOptions;
        let ms = match (self.probe_ms, self.probe) {
            (Some(ms), _) => ms,
            (None, true) => NetworkOptions::DEFAULT_PROBE_MS,
            (None, false) => 0,
        };
        if ms > NetworkOptions::MAX_PROBE_MS {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!(
                    "probeMs {ms} is too long: at most {} (every ADD waits this long per address)",
                    NetworkOptions::MAX_PROBE_MS
                ),
            ));
        }
        if ms > 0 && self.is_ipvlan() {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "probing needs macvlan: ipvlan ports share the master's MAC, so the answer to a probe cannot reach them; remove \"probe\"/\"probeMs\"",
            ));
        }
        Ok((ms > 0).then(|| std::time::Duration::from_millis(ms as u64)))
    }

    /// The link type and mode to create, from `driver` and `mode`.
    pub fn link_kind(&self) -> CniResult<mvnet_core::driver::LinkKind> {
        use mvnet_core::driver::LinkKind;
        if self.is_ipvlan() {
            let mode = if self.mode.is_empty() {
                Default::default()
            } else {
                self.mode.parse().map_err(|_| {
                    CniError::new(
                        code::INVALID_CONFIG,
                        format!(
                            "unknown ipvlan mode {:?}; valid modes: l2, l3, l3s",
                            self.mode
                        ),
                    )
                })?
            };
            Ok(LinkKind::Ipvlan(mode, Default::default()))
        } else {
            Ok(LinkKind::Macvlan(self.macvlan_mode()?))
        }
    }

    pub fn macvlan_mode(&self) -> CniResult<mvnet_core::model::MacvlanMode> {
        if self.mode.is_empty() {
            return Ok(Default::default());
        }
        self.mode.parse().map_err(|_| {
            CniError::new(
                code::INVALID_CONFIG,
                format!(
                    "unknown macvlan mode {:?}; valid modes: bridge, private, vepa, passthru",
                    self.mode
                ),
            )
        })
    }

    /// The parent's name after folding `vlan` into it, checked to be an interface name.
    pub fn master_name(&self) -> CniResult<String> {
        let name = self.master_unchecked()?;
        if !name.is_empty() {
            mvnet_core::model::network::check_ifname(&name, "\"master\"")
                .map_err(|e| CniError::new(code::INVALID_CONFIG, e.to_string()))?;
        }
        Ok(name)
    }

    fn master_unchecked(&self) -> CniResult<String> {
        match self.vlan {
            None => Ok(self.master.clone()),
            Some(vid) if (1..=4094).contains(&vid) => {
                if self.master.is_empty() || self.master.contains('.') {
                    return Err(CniError::new(
                        code::INVALID_CONFIG,
                        "\"vlan\" needs a plain \"master\" such as \"eth0\"",
                    ));
                }
                Ok(format!("{}.{vid}", self.master))
            }
            Some(vid) => Err(CniError::new(
                code::INVALID_CONFIG,
                format!("vlan id must be between 1-4094, received: {vid}"),
            )),
        }
    }

    /// The MAC to use, by the reference's precedence: runtimeConfig, then CNI_ARGS, then mac.
    pub fn requested_mac(&self, args: &CniArgs) -> CniResult<Option<mvnet_core::model::MacAddr>> {
        let raw = if !self.runtime_config.mac.is_empty() {
            Some(self.runtime_config.mac.as_str())
        } else if let Some(m) = args.mac.as_deref() {
            Some(m)
        } else if !self.mac.is_empty() {
            Some(self.mac.as_str())
        } else {
            None
        };
        raw.map(|m| {
            m.parse()
                .map_err(|e: mvnet_core::Error| CniError::new(code::INVALID_CONFIG, e.to_string()))
        })
        .transpose()
    }
}

/// libcni's rule for network names (letters, digits, '_', '.', '-', starting with a letter
/// or digit), with a length limit: the name is stored and shown in `mvnet network ls`.
pub fn check_network_name(name: &str) -> CniResult<()> {
    const MAX: usize = 253;
    let ok = !name.is_empty()
        && name.len() <= MAX
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CniError::new(
            code::INVALID_CONFIG,
            format!(
                "invalid network \"name\" {}: use 1-{MAX} letters, digits, '_', '.' or '-', starting with a letter or digit",
                mvnet_core::quote(name)
            ),
        ))
    }
}

/// Orders "0.3.1" < "0.4.0" < "1.0.0".
pub fn version_at_least(v: &str, min: &str) -> bool {
    let parse = |s: &str| {
        s.split('.')
            .map(|p| p.parse::<u32>().unwrap_or(0))
            .collect::<Vec<_>>()
    };
    parse(v) >= parse(min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_names_are_validated() {
        let conf = |name: &str| {
            NetConf::parse(
                serde_json::json!({"cniVersion": "1.1.0", "name": name, "type": "mvnet-cni"})
                    .to_string()
                    .as_bytes(),
            )
        };
        assert!(conf("lan-1.prod_a").is_ok());
        for bad in ["", "a\nb", "$(id)", "-x", "a b", &"n".repeat(1 << 16)] {
            let e = conf(bad).unwrap_err();
            assert_eq!(e.code, code::INVALID_CONFIG, "{bad:?}");
            assert!(e.msg.len() < 300, "{}", e.msg.len());
        }
    }

    #[test]
    fn ipam_must_be_an_object() {
        for ipam in [
            serde_json::json!("mvnet"),
            serde_json::json!([1]),
            serde_json::json!(7),
        ] {
            let raw = serde_json::json!({"cniVersion": "1.1.0", "name": "n", "ipam": ipam});
            let e = NetConf::parse(raw.to_string().as_bytes()).unwrap_err();
            assert_eq!(e.code, code::INVALID_CONFIG, "{ipam}");
        }
        let raw = serde_json::json!({"cniVersion": "1.1.0", "name": "n"});
        assert!(
            NetConf::parse(raw.to_string().as_bytes()).is_ok(),
            "no ipam is fine"
        );
    }

    #[test]
    fn version_needs_no_container_variables() {
        let e = env(&[
            ("CNI_COMMAND", "VERSION"),
            ("CNI_CONTAINERID", "not valid!"),
            ("CNI_IFNAME", "far-too-long-interface-name"),
        ]);
        assert!(e.is_ok(), "{e:?}");
    }

    #[test]
    fn master_is_an_interface_name() {
        let raw =
            serde_json::json!({"cniVersion": "1.1.0", "name": "n", "master": "m".repeat(70_000)});
        let conf = NetConf::parse(raw.to_string().as_bytes()).unwrap();
        let e = conf.master_name().unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(e.msg.len() < 300);
    }

    fn env(vars: &[(&str, &str)]) -> CniResult<Env> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_vars(|k| vars.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.clone()))
    }

    #[test]
    fn env_is_validated_as_the_spec_says() {
        let e = env(&[("CNI_COMMAND", "ADD")]).unwrap_err();
        assert_eq!(e.code, 4);
        assert_eq!(
            e.msg,
            "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH] missing"
        );
        assert!(env(&[("CNI_COMMAND", "VERSION")]).is_ok());
        assert!(
            env(&[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "c"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/x")
            ])
            .is_ok(),
            "DEL needs no netns"
        );
        let full = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/n"),
            ("CNI_PATH", "/p"),
        ];
        let with = |ifname: &'static str| {
            let mut v = full.to_vec();
            v.push(("CNI_IFNAME", ifname));
            env(&v)
        };
        assert!(with("eth0").is_ok());
        assert_eq!(with("averyveryverylongname").unwrap_err().code, 4);
        assert_eq!(with("a/b").unwrap_err().code, 4);
        assert_eq!(env(&[("CNI_COMMAND", "FOO")]).unwrap_err().code, 4);
    }

    #[test]
    fn cni_args_follow_the_reference() {
        assert_eq!(
            parse_args("MAC=c2:11:22:33:44:55").unwrap().mac.as_deref(),
            Some("c2:11:22:33:44:55")
        );
        assert_eq!(parse_args("FOO=1").unwrap_err().code, 4);
        let a = parse_args("IgnoreUnknown=true;MAC=c2:11:22:33:44:55;K8S_POD_NAME=x").unwrap();
        assert_eq!(a.mac.as_deref(), Some("c2:11:22:33:44:55"));
        assert!(parse_args("").unwrap() == CniArgs::default());
    }

    #[test]
    fn probing_is_off_by_default_and_macvlan_only() {
        use std::time::Duration;
        let window = |extra: &str| {
            let json = format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"macvlan"{extra}}}"#);
            NetConf::parse(json.as_bytes()).unwrap().probe_window()
        };
        assert_eq!(window("").unwrap(), None);
        assert_eq!(
            window(r#","probe":true"#).unwrap(),
            Some(Duration::from_millis(30))
        );
        assert_eq!(
            window(r#","probeMs":120"#).unwrap(),
            Some(Duration::from_millis(120))
        );
        assert_eq!(window(r#","probe":true,"probeMs":0"#).unwrap(), None);
        assert_eq!(window(r#","probeMs":5001"#).unwrap_err().code, 7);
        let e = window(r#","driver":"ipvlan","probe":true"#).unwrap_err();
        assert!(e.msg.contains("probing needs macvlan"), "{}", e.msg);
        assert_eq!(window(r#","driver":"ipvlan""#).unwrap(), None);
    }

    #[test]
    fn config_fields_and_versions() {
        let c = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"macvlan","master":"eth0","mode":"private","mtu":1400,
            "linkInContainer":true,"bcqueuelen":100,"ipam":{"type":"host-local","subnet":"10.1.2.0/24"},
            "RuntimeConfig":{"mac":"c2:11:22:33:44:55"},"somethingElse":1}"#).unwrap();
        assert_eq!(
            c.macvlan_mode().unwrap(),
            mvnet_core::model::MacvlanMode::Private
        );
        assert_eq!(c.ipam_type(), "host-local");
        assert!(c.link_in_container);
        assert_eq!(
            c.requested_mac(&CniArgs::default())
                .unwrap()
                .unwrap()
                .to_string(),
            "c2:11:22:33:44:55"
        );
        assert_eq!(
            NetConf::parse(br#"{"cniVersion":"9.9.9","name":"n","type":"macvlan"}"#)
                .unwrap_err()
                .code,
            1
        );
        assert_eq!(NetConf::parse(b"{nope").unwrap_err().code, 6);
        let c = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"n","type":"macvlan","master":"eth0","vlan":1318}"#,
        )
        .unwrap();
        assert_eq!(c.master_name().unwrap(), "eth0.1318");
        assert!(
            version_at_least("0.4.0", "0.4.0")
                && !version_at_least("0.3.1", "0.4.0")
                && version_at_least("1.0.0", "0.4.0")
        );
    }

    #[test]
    fn mac_precedence() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"macvlan","mac":"c2:00:00:00:00:01"}"#,
        )
        .unwrap();
        let args = CniArgs {
            mac: Some("c2:00:00:00:00:02".into()),
            ip: None,
            pod_name: None,
        };
        assert_eq!(
            c.requested_mac(&args).unwrap().unwrap().to_string(),
            "c2:00:00:00:00:02"
        );
        assert_eq!(
            c.requested_mac(&CniArgs::default())
                .unwrap()
                .unwrap()
                .to_string(),
            "c2:00:00:00:00:01"
        );
    }
}
