//! Persistent state behind a trait, so a distributed backend (etcd, for fleets of hosts on
//! one LAN) can slot in later. The embedded default is SQLite in WAL mode: safe for many
//! processes at once, crash-safe under `kill -9`, and allocation is O(1) amortised.

pub mod keeper;
pub mod memory;
pub mod root;
mod sqlite;

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;

use std::net::IpAddr;

use crate::model::{Container, Endpoint, Frontend, LanConflict, MacAddr, Network};
use crate::Result;

/// An address of a shared pool this host claimed ahead (`crate::fleet`), allocated here
/// under the spare's own id; its claim in etcd names that id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spare {
    pub id: String,
    pub network_id: String,
    pub ip: IpAddr,
    /// Its claim is made (only then may an attach take it).
    pub confirmed: bool,
    /// The process making its claim (an unconfirmed spare of a dead one is dropped).
    pub owner_pid: u32,
}

/// What an attach asks the store to reserve, atomically: an endpoint row, its interface
/// name, and its addresses.
#[derive(Debug, Clone, Default)]
pub struct EndpointRequest {
    pub container_id: String,
    pub container_name: String,
    pub netns: String,
    /// `None` picks the next free `ethN` of the container.
    pub ifname: Option<String>,
    pub static_ipv4: Option<IpAddr>,
    pub static_ipv6: Option<IpAddr>,
    pub mac: Option<MacAddr>,
    pub owner_pid: u32,
    pub frontend: Frontend,
    /// Addresses this host itself holds in the network's subnets, with the interface that
    /// holds them: never handed out (a probe cannot see the host's own addresses), and
    /// refused by name when asked for.
    pub host_addresses: Vec<(IpAddr, String)>,
    /// An IPv4 address the LAN's DHCP server leased (networks with `--ipam-driver dhcp`):
    /// recorded in the LAN's address book as it is, without a pool.
    pub leased_ipv4: Option<(IpAddr, u8)>,
    /// Whether the attach probes the LAN for its IPv4 address before using it (a shared
    /// pool reuses a gone host's address only then).
    pub probes: bool,
}

impl EndpointRequest {
    /// The interface name: the one asked for (unless the container has it already), else
    /// the next free `ethN`. `taken`: the container's interface names.
    pub fn choose_ifname(&self, taken: &[&str]) -> Result<String> {
        match &self.ifname {
            Some(n) if taken.contains(&n.as_str()) => Err(crate::conflict!(
                "container {} already has an interface named {n}",
                self.container_name
            )),
            Some(n) => Ok(n.clone()),
            None => Ok((0..)
                .map(|i| format!("eth{i}"))
                .find(|n| !taken.contains(&n.as_str()))
                .expect("an unused ethN exists")),
        }
    }

    /// The pools that give `net`'s endpoints IPv4 and IPv6 addresses (in the order given at
    /// create), checked against the static addresses asked for.
    pub fn family_pools(&self, net: &Network) -> Result<(Vec<usize>, Vec<usize>)> {
        let pools_of = |v6: bool| -> Vec<usize> {
            let enabled = if v6 { net.ipv6 } else { net.ipv4_enabled() };
            (0..net.pools.len())
                .filter(|&i| enabled && net.pools[i].subnet.network().is_ipv6() == v6)
                .collect()
        };
        let (v4, v6) = (pools_of(false), pools_of(true));
        if self.static_ipv4.is_some_and(|ip| ip.is_ipv6())
            || self.static_ipv6.is_some_and(|ip| ip.is_ipv4())
        {
            return Err(crate::invalid!(
                "--ip takes an IPv4 address and --ip6 an IPv6 address"
            ));
        }
        if self.static_ipv4.is_some() && v4.is_empty() {
            return Err(crate::invalid!(
                "network {} has no IPv4 subnet for --ip",
                net.name
            ));
        }
        if self.static_ipv6.is_some() && v6.is_empty() {
            return Err(crate::invalid!(
                "network {} has no IPv6 subnet for --ip6",
                net.name
            ));
        }
        Ok((v4, v6))
    }

    /// The `creating` row this request becomes once its id, interface and addresses are
    /// chosen. The MAC: the one asked for, else 02:42 + the IPv4 address, else random.
    pub fn endpoint(
        &self,
        id: String,
        net: &Network,
        ifname: String,
        ipv4: Option<(IpAddr, u8)>,
        ipv6: Option<(IpAddr, u8)>,
    ) -> Endpoint {
        let mac = self.mac.unwrap_or_else(|| {
            ipv4.and_then(|(ip, _)| MacAddr::from_ipv4_addr(ip))
                .unwrap_or_else(MacAddr::random_local)
        });
        Endpoint {
            id,
            network_id: net.id.clone(),
            container_id: self.container_id.clone(),
            container_name: self.container_name.clone(),
            netns: self.netns.clone(),
            ifname,
            mac,
            ipv4,
            ipv6,
            state: crate::model::EndpointState::Creating,
            owner_pid: self.owner_pid,
            frontend: self.frontend,
            lease: None,
        }
    }
}

/// Why a leased address cannot be recorded: the host's own, or an endpoint's.
pub(crate) fn leased_taken(ip: IpAddr, holder: &str) -> crate::Error {
    crate::conflict!(
        "the LAN's DHCP server leased {ip}, which {holder} already has; keep the DHCP server's range apart from the ranges of mvnet's own networks on this LAN"
    )
}

/// Whether the process that reserved an endpoint still lives (a `creating` row of a dead
/// one is reclaimed by both stores).
pub(crate) fn pid_alive(pid: u32) -> bool {
    pid != 0
        // SAFETY: kill with signal 0 only checks whether the process exists.
        && (unsafe { libc::kill(pid as i32, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

/// Takes one address of a family whose pools are `pools` (in the order given at create),
/// with `take(pool, requested)`: a static one from the subnet that contains it; a dynamic
/// one from the first pool that has room, moving on to the next subnet when one is full,
/// as Docker does.
pub(crate) fn take_over_pools(
    net: &Network,
    pools: &[usize],
    requested: Option<IpAddr>,
    mut take: impl FnMut(usize, Option<IpAddr>) -> Result<(IpAddr, u8)>,
) -> Result<Option<(IpAddr, u8)>> {
    if pools.is_empty() {
        return Ok(None);
    }
    if let Some(ip) = requested {
        let idx = match pools.iter().find(|&&i| net.pools[i].subnet.contains(&ip)) {
            Some(&i) => i,
            // One subnet: its own message ("outside subnet ...").
            None if pools.len() == 1 => pools[0],
            None => {
                let subnets: Vec<String> = pools
                    .iter()
                    .map(|&i| net.pools[i].subnet.to_string())
                    .collect();
                return Err(crate::invalid!(
                    "requested address {ip} is outside the subnets of network {} ({}); pick an address inside one",
                    net.name,
                    subnets.join(", ")
                ));
            }
        };
        return take(idx, Some(ip)).map(Some);
    }
    let mut last = None;
    for &idx in pools {
        match take(idx, None) {
            Ok(a) => return Ok(Some(a)),
            // Full: try the next subnet.
            Err(e @ crate::Error::Conflict(_)) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("at least one pool was tried"))
}

/// A validation run inside the store's write transaction, against every network that exists
/// at that instant, so two concurrent creates cannot both pass.
pub type NetworkCheck<'a> = &'a dyn Fn(&[Network]) -> Result<()>;

pub trait Store: Send {
    /// Adds `net` if `check` accepts it against the current networks. `created_parent` says
    /// mvnet itself just created the parent link (an 802.1Q sub-interface), so it is
    /// recorded as owned: deleted with the last network using it, re-created after a reboot.
    fn create_network(
        &mut self,
        net: &Network,
        check: NetworkCheck,
        created_parent: bool,
    ) -> Result<()>;
    fn networks(&mut self) -> Result<Vec<Network>>;
    /// Rewrites a network's record (options changed by `network update`).
    fn update_network(&mut self, net: &Network) -> Result<()>;
    /// By exact name, full id, or unique id prefix.
    fn network(&mut self, name_or_id: &str) -> Result<Network>;
    /// By exact name only (never an id or an id prefix), None if there is none. Every
    /// attach of a CNI or Docker network starts with this look-up, so a store may make it
    /// cheaper than `network` (one index look-up, no id-prefix search).
    fn network_named(&mut self, name: &str) -> Result<Option<Network>> {
        match self.network(name) {
            Ok(n) if n.name == name => Ok(Some(n)),
            Ok(_) | Err(crate::Error::NotFound(_)) => Ok(None),
            Err(crate::Error::Invalid(m)) if m.contains("ambiguous") => Ok(None),
            Err(e) => Err(e),
        }
    }
    /// Refuses while endpoints remain, naming them. Returns the parent link to delete now:
    /// one mvnet created that no remaining network uses.
    fn remove_network(&mut self, id: &str) -> Result<Option<String>>;
    /// Whether mvnet created this parent link (and so may re-create it).
    fn parent_is_owned(&mut self, name: &str) -> Result<bool>;

    /// Reserves an endpoint row (state `creating`) with its addresses and interface name.
    fn reserve_endpoint(&mut self, net: &Network, req: &EndpointRequest) -> Result<Endpoint>;
    /// Marks a reserved endpoint as fully configured in the kernel.
    fn activate_endpoint(&mut self, id: &str) -> Result<()>;
    /// Rewrites who an endpoint belongs to and where its link is (container id and name,
    /// namespace, interface name, MAC). Its addresses cannot change this way. A front end
    /// whose runtime moves the link itself (Docker) keeps the row true with this.
    fn update_endpoint(&mut self, ep: &Endpoint) -> Result<()>;
    /// Deletes an endpoint and releases its addresses; returns it if it existed.
    fn remove_endpoint(&mut self, id: &str) -> Result<Option<Endpoint>>;
    fn endpoints_of_network(&mut self, network_id: &str) -> Result<Vec<Endpoint>>;

    /// Another device on the LAN answered a probe for `ip`, which endpoint `endpoint_id`
    /// holds: record the conflict (the allocator skips the address from now on) and give the
    /// endpoint the next free address of the same pool instead, with a MAC derived from it
    /// when its MAC was derived from the old one. Returns the updated endpoint.
    fn replace_conflicting_address(
        &mut self,
        net: &Network,
        endpoint_id: &str,
        ip: IpAddr,
        holder: Option<MacAddr>,
    ) -> Result<Endpoint>;
    /// The LAN's DHCP server gave endpoint `endpoint_id` another IPv4 address (with this
    /// lease): the old one goes back, the new one is recorded in the address book.
    fn move_leased_address(
        &mut self,
        net: &Network,
        endpoint_id: &str,
        lease: &crate::model::Lease,
    ) -> Result<Endpoint>;
    /// Records that `ip`, which no endpoint holds, is taken on the LAN by `holder`.
    fn record_lan_conflict(
        &mut self,
        net: &Network,
        ip: IpAddr,
        holder: Option<MacAddr>,
    ) -> Result<()>;
    /// Marks `ip` as held by another host of `net`'s shared pool (see `crate::fleet`): the
    /// allocator skips it, and a static request for it drops the mark (etcd decides). An
    /// address an endpoint here holds is left alone.
    fn mark_held_elsewhere(&mut self, net: &Network, ip: IpAddr) -> Result<()>;
    /// Forgets every such mark of `net` (before they are learned again); returns how many.
    fn forget_held_elsewhere(&mut self, net: &Network) -> Result<usize>;
    /// Whether this store keeps spares (addresses a shared pool claims ahead); the methods
    /// below do nothing where it does not.
    fn keeps_spares(&self) -> bool {
        false
    }
    /// Takes the next free IPv4 address of `net` as a new spare (not yet confirmed: its
    /// claim comes next). `None` when the pool has no free address.
    fn reserve_spare(&mut self, _net: &Network) -> Result<Option<Spare>> {
        Ok(None)
    }
    /// The spare's claim is made: attaches may take it now. False when it is gone.
    fn confirm_spare(&mut self, _id: &str) -> Result<bool> {
        Ok(false)
    }
    /// Marks every spare of a network unconfirmed and owned by nobody, so each is checked
    /// against etcd again before an attach may take it (after this host was out of touch
    /// with etcd long enough that another host might have taken its addresses over).
    fn unconfirm_spares(&mut self, _network_id: &str) -> Result<usize> {
        Ok(0)
    }
    /// Deletes a spare and frees its address here; returns it if it existed.
    fn remove_spare(&mut self, _id: &str) -> Result<Option<Spare>> {
        Ok(None)
    }
    /// The spares of a network, oldest first.
    fn spares(&mut self, _network_id: &str) -> Result<Vec<Spare>> {
        Ok(Vec::new())
    }
    /// Reserves an endpoint as `reserve_endpoint` does, on a confirmed spare's address and
    /// under the spare's id (the id its claim names), in one transaction. `None`: no spare
    /// fits (none left, or the static address asked for is not one).
    fn take_spare(&mut self, _net: &Network, _req: &EndpointRequest) -> Result<Option<Endpoint>> {
        Ok(None)
    }
    /// Deletes an endpoint but keeps its IPv4 address as a spare under the same id (the id
    /// its claim names), unconfirmed and owned by nobody until its claim is checked, in one
    /// transaction; returns the endpoint if it existed.
    fn endpoint_to_spare(&mut self, _net: &Network, id: &str) -> Result<Option<Endpoint>> {
        self.remove_endpoint(id)
    }
    /// After the answer went out (a resident process): slow upkeep this request left,
    /// such as claiming new spares.
    fn after_reply(&mut self) {}
    /// A resident process keeps its store open from one request to the next: forget what
    /// was learned for this request (networks' pools), keep the connections.
    fn end_of_request(&mut self) {}
    /// Closes connections to remote stores (etcd): the next request comes from another
    /// network namespace, where a connection made here may lead elsewhere or nowhere.
    fn drop_connections(&mut self) {}
    /// Makes the round-robin of `net`'s first pool go on after `ip` (each host of a shared
    /// pool allocates somewhere else, and jumps away from another host's addresses: fewer
    /// collisions).
    fn set_cursor(&mut self, net: &Network, ip: IpAddr) -> Result<()>;
    /// The addresses of `net` that other devices on the LAN hold, oldest first.
    fn lan_conflicts(&mut self, net: &Network) -> Result<Vec<LanConflict>>;
    /// Forgets the LAN conflicts of `net` (the devices went away); returns how many.
    fn clear_lan_conflicts(&mut self, net: &Network) -> Result<usize>;
    fn endpoints_of_container(&mut self, container_id: &str) -> Result<Vec<Endpoint>>;

    fn create_container(&mut self, c: &Container) -> Result<()>;
    fn update_container(&mut self, c: &Container) -> Result<()>;
    fn containers(&mut self) -> Result<Vec<Container>>;
    /// By exact name, full id, or unique id prefix.
    fn container(&mut self, name_or_id: &str) -> Result<Container>;
    fn remove_container(&mut self, id: &str) -> Result<()>;

    /// Endpoints that the last write found abandoned by a dead creator and released: their
    /// half-made links are still in the kernel, for the caller to delete.
    fn take_reclaimed(&mut self) -> Vec<Endpoint> {
        Vec::new()
    }
    /// Removes a network whose stored record cannot be read (by exact name or id), with its
    /// endpoints and allocations. Returns the endpoints that could be read (their links are
    /// the caller's to delete), or None when no such unreadable network exists.
    fn remove_unreadable_network(&mut self, name_or_id: &str) -> Result<Option<Vec<Endpoint>>>;
    /// Removes a container whose stored record cannot be read; false when there is none.
    fn remove_unreadable_container(&mut self, name_or_id: &str) -> Result<bool>;
}
