//! What each of Docker's calls does, in mvnet's terms. Synchronous: the HTTP layer runs
//! each call on a blocking thread with an engine of its own, so slow calls (a conflict
//! probe) never hold up others.
//!
//! Docker's model, and how mvnet fits it:
//! - `IpamDriver.RequestAddress` is the only moment an address can still change, so mvnet
//!   builds the endpoint there, through the engine's one attach path, in *handover* mode:
//!   the address is reserved in the shared store, the macvlan is created in the host
//!   namespace with its MAC (02:42 + IPv4), the LAN conflict probe runs on it (a taken
//!   address is skipped for the next one, as for every other front end), and the link is
//!   left down and unconfigured, which is how Docker wants it.
//! - `CreateEndpoint` ties that staged endpoint to Docker's endpoint id (or builds it now,
//!   when Docker's own IPAM chose the address) and tells Docker the MAC.
//! - `Join` names that link; Docker moves it into the container and configures it.
//! - `DeleteEndpoint` deletes the link; the addresses stay Docker's until
//!   `ReleaseAddress`, so nobody else can get them in between.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use mvnet_core::engine::Engine;
use mvnet_core::engine::{
    Addressing, AttachOptions, AttachRequest, AttachTarget, LinkSettings, NetworkSpec,
};
use mvnet_core::model::{Endpoint, Frontend, MacAddr, Network};
use mvnet_core::Error;
use serde_json::{json, Value};

use crate::network::{self, IPAM_LABEL};
use crate::protocol::{self as p, parse};

/// Row owner of an endpoint staged by the IPAM and not (or no longer) tied to one of
/// Docker's endpoints: `docker-ipam-<random>`.
const STAGED_PREFIX: &str = "docker-ipam-";
/// How long a dual-stack network's IPv4 request waits for its IPv6 twin.
const PAIRING_WAIT: Duration = Duration::from_secs(10);

pub struct Plugin {
    pub root: PathBuf,
    /// The host namespace (the plugin's own, pinned to a path that outlives restarts).
    pub host: String,
    /// Docker's API socket, to learn network names in the background.
    pub docker: PathBuf,
    /// `--ip-range` per pool, from `RequestPool` until `CreateNetwork` reads it.
    ranges: Mutex<BTreeMap<String, String>>,
    /// `--ipam-opt` per pool (a shared pool: `pool=`, `etcd=`, `grace=`), likewise.
    ipam_options: Mutex<BTreeMap<String, Vec<String>>>,
    /// Dual-stack networks: Docker asks for an endpoint's IPv4 address and then its IPv6
    /// one, without saying that they belong together. One endpoint per network is between
    /// the two at a time, so the IPv6 request finds the endpoint its IPv4 one staged.
    pairing: Mutex<BTreeMap<String, Pairing>>,
    paired: Condvar,
    /// Each joined endpoint's container namespace (Join's SandboxKey), where its
    /// addresses are announced once Docker has configured the link.
    sandboxes: Mutex<BTreeMap<String, String>>,
    /// DHCP endpoints whose lease still runs on the host's side of the link (leased in
    /// CreateEndpoint, before Docker moved the link): endpoint id -> the lease's key at
    /// the agent, until the lease moves into the container.
    staged_leases: Mutex<BTreeMap<String, String>>,
}

enum Pairing {
    Staging(Instant),
    Awaiting(Box<Endpoint>, Instant),
}

impl Pairing {
    fn since(&self) -> Instant {
        match self {
            Pairing::Staging(t) | Pairing::Awaiting(_, t) => *t,
        }
    }
}

pub type Outcome = Result<Value, String>;

thread_local! {
    /// One engine per blocking thread and state root (tests run several plugins at once).
    static CACHED: std::cell::RefCell<BTreeMap<PathBuf, Engine>> =
        const { std::cell::RefCell::new(BTreeMap::new()) };
}

/// An engine borrowed from this thread's cache; it goes back on drop.
struct EngineGuard {
    root: PathBuf,
    engine: Option<Engine>,
}

impl std::ops::Deref for EngineGuard {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        self.engine.as_ref().expect("present until drop")
    }
}

impl std::ops::DerefMut for EngineGuard {
    fn deref_mut(&mut self) -> &mut Engine {
        self.engine.as_mut().expect("present until drop")
    }
}

impl Drop for EngineGuard {
    fn drop(&mut self) {
        if let Some(e) = self.engine.take() {
            let root = std::mem::take(&mut self.root);
            CACHED.with(|c| c.borrow_mut().insert(root, e));
        }
    }
}

fn err(e: Error) -> String {
    mvnet_core::one_line(&e.to_string())
}

impl Plugin {
    pub fn new(root: PathBuf, host: String, docker: PathBuf) -> Plugin {
        Plugin {
            root,
            host,
            docker,
            ranges: Mutex::new(BTreeMap::new()),
            ipam_options: Mutex::new(BTreeMap::new()),
            pairing: Mutex::new(BTreeMap::new()),
            paired: Condvar::new(),
            sandboxes: Mutex::new(BTreeMap::new()),
            staged_leases: Mutex::new(BTreeMap::new()),
        }
    }

    /// Docker networks whose Docker name mvnet has not learned yet (at start-up).
    pub fn unnamed_networks(&self) -> Vec<String> {
        let Ok(mut engine) = self.engine() else {
            return Vec::new();
        };
        engine
            .networks()
            .unwrap_or_default()
            .into_iter()
            .filter(|n| {
                n.labels
                    .get(mvnet_core::model::DOCKER_LABEL)
                    .is_some_and(|v| v.is_empty())
            })
            .map(|n| n.id)
            .collect()
    }

    /// This thread's engine on the plugin's root (opened once per thread and kept: opening
    /// the store costs more than most calls).
    fn engine(&self) -> Result<EngineGuard, String> {
        let cached = CACHED.with(|c| c.borrow_mut().remove(&self.root));
        let engine = match cached {
            Some(e) => e,
            None => Engine::open(&self.root).map_err(err)?,
        };
        Ok(EngineGuard {
            root: self.root.clone(),
            engine: Some(engine),
        })
    }

    /// Serves one call; `None` for a method mvnet does not implement (HTTP 404).
    pub fn call(&self, method: &str, body: &[u8]) -> Option<Outcome> {
        Some(match method {
            "/Plugin.Activate" => Ok(json!({"Implements": ["NetworkDriver", "IpamDriver"]})),
            "/NetworkDriver.GetCapabilities" => {
                Ok(json!({"Scope": "local", "ConnectivityScope": "local"}))
            }
            "/NetworkDriver.CreateNetwork" => parse(body).and_then(|r| self.create_network(&r)),
            "/NetworkDriver.DeleteNetwork" => parse(body).and_then(|r| self.delete_network(&r)),
            "/NetworkDriver.CreateEndpoint" => parse(body).and_then(|r| self.create_endpoint(&r)),
            "/NetworkDriver.EndpointOperInfo" => parse(body).and_then(|r| self.oper_info(&r)),
            "/NetworkDriver.DeleteEndpoint" => parse(body).and_then(|r| self.delete_endpoint(&r)),
            "/NetworkDriver.Join" => parse(body).and_then(|r| self.join(&r)),
            "/NetworkDriver.ProgramExternalConnectivity" => {
                parse(body).and_then(|r| self.program_external(&r))
            }
            // Docker moves the link back to the host itself; DeleteEndpoint deletes it.
            "/NetworkDriver.Leave" => parse(body).and_then(|r| self.leave(&r)),
            "/NetworkDriver.RevokeExternalConnectivity"
            | "/NetworkDriver.DiscoverNew"
            | "/NetworkDriver.DiscoverDelete"
            | "/NetworkDriver.FreeNetwork" => Ok(json!({})),
            "/NetworkDriver.AllocateNetwork" => Ok(json!({"Options": {}})),
            // No RequiresMACAddress: with it, libnetwork makes up a random MAC for every
            // endpoint the user gave none, and then a user's --mac-address could not be
            // told from it. The user's MAC arrives in CreateEndpoint instead.
            "/IpamDriver.GetCapabilities" => {
                Ok(json!({"RequiresMACAddress": false, "RequiresRequestReplay": false}))
            }
            "/IpamDriver.GetDefaultAddressSpaces" => Ok(json!({
                "LocalDefaultAddressSpace": network::LOCAL_SPACE,
                "GlobalDefaultAddressSpace": network::GLOBAL_SPACE,
            })),
            "/IpamDriver.RequestPool" => parse(body).and_then(|r| self.request_pool(&r)),
            "/IpamDriver.ReleasePool" => Ok(json!({})),
            "/IpamDriver.RequestAddress" => parse(body).and_then(|r| self.request_address(&r)),
            "/IpamDriver.ReleaseAddress" => parse(body).and_then(|r| self.release_address(&r)),
            _ => return None,
        })
    }

    // ----- IPAM -------------------------------------------------------------------------

    fn request_pool(&self, r: &p::RequestPool) -> Outcome {
        if r.pool.is_empty() {
            return Err("mvnet puts containers on an existing LAN, whose subnet Docker cannot pick: give --subnet (and --gateway) to docker network create".into());
        }
        let pool: ipnet::IpNet = r
            .pool
            .parse()
            .map_err(|_| format!("invalid subnet {}", mvnet_core::quote(&r.pool)))?;
        if pool.addr() != pool.network() {
            return Err(format!(
                "invalid subnet {pool}: it has host bits set; use {}",
                pool.trunc()
            ));
        }
        if pool.addr().is_ipv6() != r.v6 {
            return Err(format!(
                "subnet {pool} is not of the family Docker asked for"
            ));
        }
        if !r.sub_pool.is_empty() {
            let range: ipnet::IpNet = r
                .sub_pool
                .parse()
                .map_err(|_| format!("invalid --ip-range {}", mvnet_core::quote(&r.sub_pool)))?;
            if !pool.contains(&range) {
                return Err(format!(
                    "--ip-range {range} is not inside --subnet {pool}; give a range within the subnet"
                ));
            }
            self.ranges
                .lock()
                .unwrap()
                .insert(pool.to_string(), range.to_string());
        } else {
            self.ranges.lock().unwrap().remove(&pool.to_string());
        }
        // --ipam-opt: a shared pool (checked now, so a mistake fails the create at once).
        let opts: Vec<String> = r.options.iter().map(|(k, v)| format!("{k}={v}")).collect();
        mvnet_core::model::FleetPool::from_ipam_options(&opts).map_err(err)?;
        self.ipam_options
            .lock()
            .unwrap()
            .insert(pool.to_string(), opts);
        Ok(json!({
            "PoolID": p::pool_id(&pool.to_string(), &r.sub_pool),
            "Pool": pool.to_string(),
            "Data": {},
        }))
    }

    fn request_address(&self, r: &p::RequestAddress) -> Outcome {
        let (subnet, _) = p::parse_pool_id(&r.pool_id)?;
        let with_len = |ip: IpAddr| format!("{ip}/{}", subnet.prefix_len());
        let requested: Option<IpAddr> = if r.address.is_empty() {
            None
        } else {
            Some(
                network::strip_len(&r.address)
                    .parse()
                    .map_err(|_| format!("invalid address {}", mvnet_core::quote(&r.address)))?,
            )
        };
        if let Some(ip) = requested {
            if !subnet.contains(&ip) {
                return Err(format!("address {ip} is not in subnet {subnet}"));
            }
        }
        let is_gateway =
            r.options.get(p::REQUEST_ADDRESS_TYPE).map(String::as_str) == Some(p::GATEWAY_TYPE);
        let mut engine = self.engine()?;
        let net = docker_network_with(&mut engine, &subnet)?;
        if is_gateway || net.is_none() {
            // The network's own addresses at creation (gateway, --aux-address): the LAN's
            // router and devices, never mvnet's to hand out. mvnet's network record keeps
            // them out of the pool once CreateNetwork arrives.
            let ip = match (requested, is_gateway) {
                (Some(ip), _) => ip,
                // Docker's rule: the first address after the network's.
                (None, true) => first_host(&subnet)
                    .ok_or_else(|| format!("subnet {subnet} has no room for a gateway"))?,
                (None, false) => {
                    return Err(format!(
                        "no mvnet network has subnet {subnet}: mvnet's IPAM driver serves networks of mvnet's network driver (docker network create -d mvnet --ipam-driver mvnet)"
                    ))
                }
            };
            return Ok(json!({"Address": with_len(ip), "Data": {}}));
        }
        let net = net.expect("checked above");
        let mac = match r.options.get(p::MAC_ADDRESS).filter(|m| !m.is_empty()) {
            Some(m) => Some(
                m.parse::<MacAddr>()
                    .map_err(|e| format!("invalid --mac-address: {e}"))?,
            ),
            None => None,
        };
        let dual = net.pools.iter().any(|p| p.subnet.addr().is_ipv6())
            && net.pools.iter().any(|p| p.subnet.addr().is_ipv4());
        if subnet.addr().is_ipv6() && dual {
            return self.hand_out_ipv6(&mut engine, &net, requested);
        }
        if dual {
            self.wait_for_pairing(&net.id);
        }
        let staged = self.stage(&mut engine, &net, requested, None, mac);
        if dual {
            let mut slots = self.pairing.lock().unwrap();
            match &staged {
                Ok(ep) => {
                    slots.insert(
                        net.id.clone(),
                        Pairing::Awaiting(Box::new(ep.clone()), Instant::now()),
                    );
                }
                Err(_) => {
                    slots.remove(&net.id);
                }
            }
            self.paired.notify_all();
        }
        let ep = staged?;
        let (ip, _) = if subnet.addr().is_ipv4() {
            ep.ipv4
        } else {
            ep.ipv6
        }
        .ok_or_else(|| format!("network {} gave no address in {subnet}", net.name))?;
        Ok(json!({"Address": with_len(ip), "Data": {}}))
    }

    /// Waits until no other endpoint of `net` is between its two address requests, then
    /// takes the network's turn.
    fn wait_for_pairing(&self, net_id: &str) {
        let mut slots = self.pairing.lock().unwrap();
        loop {
            match slots.get(net_id) {
                Some(s) if s.since().elapsed() < PAIRING_WAIT => {
                    slots = self
                        .paired
                        .wait_timeout(slots, Duration::from_millis(200))
                        .unwrap()
                        .0;
                }
                _ => break,
            }
        }
        slots.insert(net_id.to_string(), Pairing::Staging(Instant::now()));
    }

    /// The IPv6 address of the endpoint the IPv4 request just staged (re-staged with the
    /// requested IPv6 address when `--ip6` asks for another).
    fn hand_out_ipv6(
        &self,
        engine: &mut Engine,
        net: &Network,
        requested: Option<IpAddr>,
    ) -> Outcome {
        let staged = {
            let mut slots = self.pairing.lock().unwrap();
            let s = match slots.remove(&net.id) {
                Some(Pairing::Awaiting(ep, _)) => Some(*ep),
                Some(other) => {
                    slots.insert(net.id.clone(), other);
                    None
                }
                None => None,
            };
            self.paired.notify_all();
            s
        };
        let Some(mut ep) = staged else {
            return Err(format!(
                "IPv6 address request on {} without the IPv4 one before it; retry the command",
                net.name
            ));
        };
        if let (Some(want), Some((have, _))) = (requested, ep.ipv6) {
            if want != have {
                let v4 = ep.ipv4.map(|(ip, _)| ip);
                let mac = Some(ep.mac);
                engine.disconnect(&ep).map_err(err)?;
                ep = self.stage(engine, net, v4, Some(want), mac)?;
            }
        }
        let (ip, len) = ep
            .ipv6
            .ok_or_else(|| format!("network {} gave no IPv6 address", net.name))?;
        Ok(json!({"Address": format!("{ip}/{len}"), "Data": {}}))
    }

    /// Builds an endpoint in the staging namespace through the engine's attach path.
    fn stage(
        &self,
        engine: &mut Engine,
        net: &Network,
        ipv4: Option<IpAddr>,
        ipv6: Option<IpAddr>,
        mac: Option<MacAddr>,
    ) -> Result<Endpoint, String> {
        let nonce = random_hex(4);
        let attached = engine
            .attach(&AttachRequest {
                network: NetworkSpec::Existing(net.clone()),
                target: AttachTarget {
                    container_id: format!("{STAGED_PREFIX}{nonce}"),
                    container_name: String::new(),
                    netns: self.host.clone(),
                    // The host's namespace: a link already there is never ours to replace.
                    owned: false,
                },
                options: AttachOptions {
                    ipv4,
                    ipv6,
                    mac: mac.filter(|_| net.driver != mvnet_core::model::Driver::Ipvlan),
                    ifname: Some(format!("mvd{nonce}")),
                    force: false,
                    frontend: Frontend::Docker,
                },
                addressing: Addressing::Managed,
                link: LinkSettings {
                    static_fix: Some(
                        "pick another --ip/--ip6 for docker run or docker network connect".into(),
                    ),
                    // Docker moves the link into the container and configures it.
                    handover: true,
                    ..Default::default()
                },
            })
            .map_err(err)?;
        attached
            .endpoint
            .ok_or_else(|| "the engine returned no endpoint".to_string())
    }

    fn release_address(&self, r: &p::ReleaseAddress) -> Outcome {
        let (subnet, _) = p::parse_pool_id(&r.pool_id)?;
        let ip: IpAddr = network::strip_len(&r.address)
            .parse()
            .map_err(|_| format!("invalid address {}", mvnet_core::quote(&r.address)))?;
        let mut engine = self.engine()?;
        let Some(net) = docker_network_with(&mut engine, &subnet)? else {
            return Ok(json!({})); // a gateway or aux address, or a network gone already
        };
        for ep in engine.endpoints_of_network(&net.id).map_err(err)? {
            if !ep.container_id.starts_with(STAGED_PREFIX) {
                continue;
            }
            // An endpoint goes with its IPv4 address; its IPv6 one only frees IPv6-only
            // rows (the IPv4 release of a dual-stack endpoint has freed both already, and
            // the address may belong to somebody new by now).
            let holds = match ip {
                IpAddr::V4(_) => ep.ipv4.map(|(a, _)| a) == Some(ip),
                IpAddr::V6(_) => ep.ipv4.is_none() && ep.ipv6.map(|(a, _)| a) == Some(ip),
            };
            if holds {
                engine.disconnect(&ep).map_err(err)?;
            }
        }
        Ok(json!({}))
    }

    // ----- network driver ---------------------------------------------------------------

    fn create_network(&self, r: &p::CreateNetwork) -> Outcome {
        let ranges = self.ranges.lock().unwrap().clone();
        let mut req = network::request(r, &ranges)?;
        {
            let mut opts = self.ipam_options.lock().unwrap();
            for subnet in &req.subnets {
                if let Some(o) = opts.remove(subnet) {
                    req.ipam_options.extend(o);
                }
            }
        }
        let mut engine = self.engine()?;
        if engine.network(&r.network_id).is_ok() {
            return Ok(json!({})); // Docker replays CreateNetwork for networks it restores
        }
        // Docker's address requests name a pool, not a network: one Docker network per
        // subnet, as Docker's own IPAM also requires.
        for s in &req.subnets {
            let subnet: ipnet::IpNet = s.parse().map_err(|_| format!("invalid subnet {s}"))?;
            if let Some(other) = docker_network_with(&mut engine, &subnet)? {
                return Err(format!(
                    "subnet {subnet} is already used by Docker network {} (mvnet network {}); one Docker network per subnet: remove that one first",
                    other.labels.get(mvnet_core::model::DOCKER_LABEL).filter(|n| !n.is_empty()).unwrap_or(&other.name),
                    other.name
                ));
            }
        }
        let (net, notices) = engine.create_network(&req).map_err(err)?;
        for n in notices {
            eprintln!("mvnet-docker: {}: {n}", net.name);
        }
        let mut ranges = self.ranges.lock().unwrap();
        for s in &req.subnets {
            ranges.remove(s);
        }
        crate::names::learn_in_background(
            self.root.clone(),
            self.docker.clone(),
            vec![net.id.clone()],
        );
        Ok(json!({}))
    }

    fn delete_network(&self, r: &p::NetworkRef) -> Outcome {
        let mut engine = self.engine()?;
        let net = match engine.network(&r.network_id) {
            Ok(n) if n.id == r.network_id => n,
            Ok(_) | Err(Error::NotFound(_)) => return Ok(json!({})),
            Err(e) => return Err(err(e)),
        };
        // Addresses Docker never released (a dockerd killed mid-way) go with the network.
        for ep in engine.endpoints_of_network(&net.id).map_err(err)? {
            if ep.frontend == Frontend::Docker {
                engine.disconnect(&ep).map_err(err)?;
            }
        }
        engine.remove_network(&net.id).map_err(err)?;
        Ok(json!({}))
    }

    fn create_endpoint(&self, r: &p::CreateEndpoint) -> Outcome {
        let mut engine = self.engine()?;
        let net = known_network(&mut engine, &r.network_id)?;
        let iface = r.interface.clone().unwrap_or_default();
        let v4 = parse_ip(&iface.address)?;
        let v6 = parse_ip(&iface.address_ipv6)?;
        let mac = if iface.mac_address.is_empty() {
            None
        } else {
            Some(
                iface
                    .mac_address
                    .parse::<MacAddr>()
                    .map_err(|e| format!("invalid --mac-address: {e}"))?,
            )
        };
        if let Some(ep) = find_endpoint(&mut engine, &net, &r.endpoint_id)? {
            // Docker replays CreateEndpoint after a restart of the plugin.
            return Ok(json!({"Interface": interface_reply(&net, &iface, &ep)}));
        }
        let staged = engine
            .endpoints_of_network(&net.id)
            .map_err(err)?
            .into_iter()
            .find(|e| {
                e.container_id.starts_with(STAGED_PREFIX)
                    && v4.is_some()
                    && e.ipv4.map(|(a, _)| a) == v4
            });
        let mut ep = match staged {
            Some(ep) => ep,
            // Docker's own IPAM chose the addresses (or none: the null IPAM; a DHCP
            // network leases one here): build the endpoint now, with those addresses
            // recorded in mvnet's store.
            None => self.stage(&mut engine, &net, v4, v6, mac)?,
        };
        if ep.lease.is_some() {
            self.staged_leases.lock().unwrap().insert(
                r.endpoint_id.clone(),
                mvnet_core::dhcp::lease_key(&ep.container_id, &net.id),
            );
        }
        if let Some(m) = mac {
            if m != ep.mac && net.driver != mvnet_core::model::Driver::Ipvlan {
                ep = engine.set_endpoint_mac(&ep, m).map_err(err)?;
            }
        }
        ep.container_id = r.endpoint_id.clone();
        engine.update_endpoint(&ep).map_err(err)?;
        Ok(json!({"Interface": interface_reply(&net, &iface, &ep)}))
    }

    /// Docker asks this twice per endpoint, for `docker inspect`; mvnet has nothing to add
    /// to what Docker shows, so it answers without a store read.
    fn oper_info(&self, _r: &p::EndpointRef) -> Outcome {
        Ok(json!({"Value": {}}))
    }

    fn join(&self, r: &p::Join) -> Outcome {
        let mut engine = self.engine()?;
        let net = known_network(&mut engine, &r.network_id)?;
        let ep = find_endpoint(&mut engine, &net, &r.endpoint_id)?.ok_or_else(|| {
            format!(
                "endpoint {} is not known to mvnet; remove the container and start it again",
                mvnet_core::ids::short(&r.endpoint_id)
            )
        })?;
        // Where the container lives: recorded (and announced) after Join, off Docker's path.
        if !r.sandbox_key.is_empty() {
            self.sandboxes
                .lock()
                .unwrap()
                .insert(r.endpoint_id.clone(), r.sandbox_key.clone());
        }
        let l3 = net.driver == mvnet_core::model::Driver::Ipvlan
            && net.options.ipvlan_mode != mvnet_core::model::IpvlanMode::L2;
        // The gateway of the subnet each address is in.
        let gateway = |addr: Option<(IpAddr, u8)>| -> String {
            if net.internal || l3 {
                return String::new();
            }
            if let Some(lease) = ep
                .lease
                .as_ref()
                .filter(|_| addr.is_some_and(|(ip, _)| ip.is_ipv4()))
            {
                return lease.gateway.map(|g| g.to_string()).unwrap_or_default();
            }
            addr.and_then(|(ip, _)| {
                net.pools
                    .iter()
                    .find(|p| p.subnet.contains(&ip))
                    .and_then(|p| p.gateway)
            })
            .map(|g| g.to_string())
            .unwrap_or_default()
        };
        let mut reply = json!({
            "InterfaceName": {"SrcName": ep.ifname, "DstPrefix": "eth"},
            "Gateway": gateway(ep.ipv4),
            "GatewayIPv6": gateway(ep.ipv6),
        });
        if l3 && !net.internal {
            // ipvlan l3 routes everything through the parent: a default route on the device.
            let mut routes = vec![json!({"Destination": "0.0.0.0/0", "RouteType": 1})];
            if ep.ipv6.is_some() {
                routes.push(json!({"Destination": "::/0", "RouteType": 1}));
            }
            reply["StaticRoutes"] = Value::Array(routes);
            // No gateway on purpose: without this, Docker would add docker_gwbridge and a
            // second default route.
            reply["DisableGatewayService"] = Value::Bool(true);
        }
        Ok(reply)
    }

    /// Called once Docker has moved the link into the container and configured it: records
    /// which container the endpoint is in (its sandbox, named after the container id), then
    /// tells the LAN where the addresses live now (3 gratuitous ARPs and unsolicited NAs,
    /// 1 s apart, on top of the kernel's) from a background thread, off Docker's path. The
    /// announcement is best effort: a failure is logged, never returned.
    fn program_external(&self, r: &p::EndpointRef) -> Outcome {
        let Some(sandbox) = self.sandboxes.lock().unwrap().get(&r.endpoint_id).cloned() else {
            return Ok(json!({}));
        };
        let mut engine = self.engine()?;
        let net = known_network(&mut engine, &r.network_id)?;
        let Some(mut ep) = find_endpoint(&mut engine, &net, &r.endpoint_id)? else {
            return Ok(json!({}));
        };
        let name = sandbox.rsplit('/').next().unwrap_or_default();
        if !name.is_empty() && ep.container_name != name {
            ep.container_name = name.to_string();
            engine.update_endpoint(&ep).map_err(err)?;
        }
        let l3 = net.driver == mvnet_core::model::Driver::Ipvlan
            && net.options.ipvlan_mode != mvnet_core::model::IpvlanMode::L2;
        let staged_key = self.staged_leases.lock().unwrap().remove(&r.endpoint_id);
        let docker = self.docker.clone();
        let (net_id, endpoint_id) = (r.network_id.clone(), r.endpoint_id.clone());
        if !l3 {
            let root = self.root.clone();
            // Docker configures the link from runc's prestart hook, after this call: wait
            // (up to 10 s) until the container's namespace holds it, up and addressed.
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut last = String::from("not configured yet");
                let mut engine = match Engine::open_existing(&root) {
                    Ok(e) => e,
                    Err(e) => {
                        eprintln!("mvnet-docker: warning: not announced: {e}");
                        return;
                    }
                };
                let mut staged_key = staged_key;
                while started.elapsed() < Duration::from_secs(10) {
                    match engine.link_configured_in(&sandbox, &ep) {
                        Ok(true) => {}
                        Ok(false) => {
                            std::thread::sleep(Duration::from_millis(25));
                            continue;
                        }
                        Err(e) => {
                            last = e.to_string();
                            std::thread::sleep(Duration::from_millis(25));
                            continue;
                        }
                    }
                    if let Some(key) = staged_key.take() {
                        // A leased address: the lease goes on from inside the container,
                        // with the container's hostname (option 12) from Docker's API.
                        let hostname =
                            crate::names::container_hostname(&docker, &net_id, &endpoint_id);
                        if let Err(e) = engine.move_lease_into(&sandbox, &ep, &key, &hostname) {
                            eprintln!(
                                "mvnet-docker: warning: the lease of endpoint {} stays on the host's side: {e}",
                                mvnet_core::ids::short(&ep.id)
                            );
                        }
                    }
                    match engine.announce_in(&sandbox, &ep) {
                        Ok(true) => return,
                        Ok(false) => last = "not configured yet".into(),
                        Err(e) => last = e.to_string(),
                    }
                    std::thread::sleep(Duration::from_millis(25));
                }
                eprintln!(
                    "mvnet-docker: warning: endpoint {} not announced: {last}",
                    mvnet_core::ids::short(&ep.id)
                );
            });
        }
        Ok(json!({}))
    }

    /// The container leaves the network. A leased address is released now, while the
    /// lease's client still runs beside the link (Docker deletes the endpoint next).
    fn leave(&self, r: &p::EndpointRef) -> Outcome {
        self.sandboxes.lock().unwrap().remove(&r.endpoint_id);
        let staged = self.staged_leases.lock().unwrap().remove(&r.endpoint_id);
        let mut engine = self.engine()?;
        let net = match engine.network(&r.network_id) {
            Ok(n) if n.dhcp => n,
            _ => return Ok(json!({})),
        };
        if let Some(ep) = find_endpoint(&mut engine, &net, &r.endpoint_id)? {
            engine.release_lease_of(&ep, staged.as_deref());
        }
        Ok(json!({}))
    }

    fn delete_endpoint(&self, r: &p::EndpointRef) -> Outcome {
        let mut engine = self.engine()?;
        let net = match engine.network(&r.network_id) {
            Ok(n) => n,
            Err(Error::NotFound(_)) => return Ok(json!({})),
            Err(e) => return Err(err(e)),
        };
        let Some(mut ep) = find_endpoint(&mut engine, &net, &r.endpoint_id)? else {
            return Ok(json!({}));
        };
        if let Some(key) = self.staged_leases.lock().unwrap().remove(&r.endpoint_id) {
            // Never joined: the lease still runs under the key it was leased with.
            engine.release_lease_of(&ep, Some(&key));
        }
        if net.labels.get(IPAM_LABEL).map(String::as_str) == Some("mvnet") {
            // The link goes now; the addresses stay reserved for Docker until its
            // ReleaseAddress, so nobody else gets them in between.
            engine
                .delete_endpoint_link(&ep.netns, &ep.ifname, Some(ep.mac))
                .map_err(err)?;
            ep.container_id = format!("{STAGED_PREFIX}{}", random_hex(4));
            engine.update_endpoint(&ep).map_err(err)?;
        } else {
            engine.disconnect(&ep).map_err(err)?;
        }
        Ok(json!({}))
    }
}

/// The Docker network (made through this plugin) with exactly this subnet.
fn docker_network_with(
    engine: &mut Engine,
    subnet: &ipnet::IpNet,
) -> Result<Option<Network>, String> {
    Ok(engine
        .networks()
        .map_err(err)?
        .into_iter()
        .find(|n| n.docker_owned() && n.pools.iter().any(|p| p.subnet == *subnet)))
}

fn known_network(engine: &mut Engine, id: &str) -> Result<Network, String> {
    match engine.network(id) {
        Ok(n) if n.id == id => Ok(n),
        Ok(_) | Err(Error::NotFound(_)) => Err(format!(
            "network {} is not known to mvnet (its record is missing from the mvnet root); recreate it with docker network rm and docker network create",
            mvnet_core::ids::short(id)
        )),
        Err(e) => Err(err(e)),
    }
}

fn find_endpoint(
    engine: &mut Engine,
    net: &Network,
    endpoint_id: &str,
) -> Result<Option<Endpoint>, String> {
    Ok(engine
        .endpoints_of_container(endpoint_id)
        .map_err(err)?
        .into_iter()
        .find(|e| e.network_id == net.id))
}

/// The interface fields Docker left empty, filled: the MAC (02:42 + IPv4, or the one the
/// user gave) for macvlan, and the addresses when no IPAM gave any.
fn interface_reply(net: &Network, asked: &p::EndpointInterface, ep: &Endpoint) -> Value {
    let mut out = serde_json::Map::new();
    if asked.mac_address.is_empty() && net.driver == mvnet_core::model::Driver::Macvlan {
        out.insert("MacAddress".into(), json!(ep.mac.to_string()));
    }
    if asked.address.is_empty() {
        if let Some((ip, len)) = ep.ipv4 {
            out.insert("Address".into(), json!(format!("{ip}/{len}")));
        }
    }
    if asked.address_ipv6.is_empty() {
        if let Some((ip, len)) = ep.ipv6 {
            out.insert("AddressIPv6".into(), json!(format!("{ip}/{len}")));
        }
    }
    Value::Object(out)
}

/// The address after the subnet's network address, if it is inside the subnet.
fn first_host(subnet: &ipnet::IpNet) -> Option<IpAddr> {
    let ip = match subnet.network() {
        IpAddr::V4(a) => IpAddr::V4(std::net::Ipv4Addr::from(u32::from(a).checked_add(1)?)),
        IpAddr::V6(a) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(a).checked_add(1)?)),
    };
    (subnet.contains(&ip) && (ip.is_ipv6() || ip != subnet.broadcast())).then_some(ip)
}

fn parse_ip(s: &str) -> Result<Option<IpAddr>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    network::strip_len(s)
        .parse()
        .map(Some)
        .map_err(|_| format!("invalid address {}", mvnet_core::quote(s)))
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    mvnet_core::ids::random_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plugin on a fresh state root (the store only: nothing here reaches the kernel).
    fn plugin() -> (Plugin, PathBuf) {
        let root = std::env::temp_dir().join(format!("mvnet-docker-unit-{}", random_hex(6)));
        (
            Plugin::new(
                root.clone(),
                "/proc/self/ns/net".into(),
                "/nonexistent".into(),
            ),
            root,
        )
    }

    fn call(p: &Plugin, method: &str, body: &str) -> Outcome {
        p.call(method, body.as_bytes()).expect("implemented")
    }

    #[test]
    fn handshake_and_capabilities() {
        let (p, root) = plugin();
        let v = call(&p, "/Plugin.Activate", "").unwrap();
        assert_eq!(v["Implements"], json!(["NetworkDriver", "IpamDriver"]));
        let v = call(&p, "/NetworkDriver.GetCapabilities", "").unwrap();
        assert_eq!(v["Scope"], "local");
        assert_eq!(v["ConnectivityScope"], "local");
        let v = call(&p, "/IpamDriver.GetCapabilities", "").unwrap();
        assert_eq!(v["RequiresMACAddress"], false);
        let v = call(&p, "/IpamDriver.GetDefaultAddressSpaces", "").unwrap();
        assert_eq!(v["LocalDefaultAddressSpace"], "mvnet-local");
        assert!(p.call("/VolumeDriver.Mount", b"{}").is_none());
        assert!(p.call("/NetworkDriver.Nope", b"{}").is_none());
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn teardown_of_unknown_ids_succeeds() {
        let (p, root) = plugin();
        let ep = r#"{"NetworkID":"4f6c","EndpointID":"e1"}"#;
        for m in [
            "/NetworkDriver.Leave",
            "/NetworkDriver.DeleteEndpoint",
            "/NetworkDriver.RevokeExternalConnectivity",
        ] {
            assert_eq!(call(&p, m, ep).unwrap(), json!({}), "{m}");
        }
        let net = r#"{"NetworkID":"4f6c"}"#;
        assert_eq!(
            call(&p, "/NetworkDriver.DeleteNetwork", net).unwrap(),
            json!({})
        );
        let addr = r#"{"PoolID":"mvnet:10.1.0.0/24","Address":"10.1.0.5"}"#;
        assert_eq!(
            call(&p, "/IpamDriver.ReleaseAddress", addr).unwrap(),
            json!({})
        );
        let pool = r#"{"PoolID":"mvnet:10.1.0.0/24"}"#;
        assert_eq!(
            call(&p, "/IpamDriver.ReleasePool", pool).unwrap(),
            json!({})
        );
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn bad_requests_say_how_to_fix_them() {
        let (p, root) = plugin();
        let e = call(&p, "/IpamDriver.RequestPool", r#"{"Pool":"","V6":false}"#).unwrap_err();
        assert!(e.contains("--subnet"), "{e}");
        let e = call(&p, "/IpamDriver.RequestPool", r#"{"Pool":"10.1.0.5/24"}"#).unwrap_err();
        assert!(e.contains("use 10.1.0.0/24"), "{e}");
        let e = call(
            &p,
            "/IpamDriver.RequestPool",
            r#"{"Pool":"10.1.0.0/24","SubPool":"10.2.0.0/25"}"#,
        )
        .unwrap_err();
        assert!(e.contains("not inside"), "{e}");
        let v = call(
            &p,
            "/IpamDriver.RequestPool",
            r#"{"Pool":"10.1.0.0/24","SubPool":"10.1.0.128/25"}"#,
        )
        .unwrap();
        assert_eq!(v["PoolID"], "mvnet:10.1.0.0/24:10.1.0.128/25");
        // The gateway's request before the network exists: Docker's first host.
        let v = call(
            &p,
            "/IpamDriver.RequestAddress",
            r#"{"PoolID":"mvnet:fd00:1::/64","Address":"","Options":{"RequestAddressType":"com.docker.network.gateway"}}"#,
        )
        .unwrap();
        assert_eq!(v["Address"], "fd00:1::1/64");
        // An endpoint address for a pool no mvnet network has.
        let e = call(
            &p,
            "/IpamDriver.RequestAddress",
            r#"{"PoolID":"mvnet:10.1.0.0/24","Address":""}"#,
        )
        .unwrap_err();
        assert!(e.contains("-d mvnet"), "{e}");
        let e = call(
            &p,
            "/NetworkDriver.CreateEndpoint",
            r#"{"NetworkID":"abc","EndpointID":"e","Interface":{"Address":"10.1.0.2/24"}}"#,
        )
        .unwrap_err();
        assert!(e.contains("not known to mvnet"), "{e}");
        assert!(call(&p, "/NetworkDriver.Join", "{")
            .unwrap_err()
            .contains("cannot read"));
        let _ = std::fs::remove_dir_all(root);
    }
}
