//! The network model: what a network, an endpoint and a container are, as plain data, and
//! the parsing of user options into it. No kernel and no store here.

pub mod container;
pub mod mac;
pub mod network;
pub mod time;

pub use container::{Container, ContainerStatus};
pub use mac::MacAddr;
pub use network::{
    CreateNetworkRequest, Driver, Endpoint, EndpointState, FleetPool, Frontend, IpvlanMode,
    LanConflict, Lease, MacvlanMode, Network, NetworkOptions, PoolSpec, DOCKER_LABEL,
};
