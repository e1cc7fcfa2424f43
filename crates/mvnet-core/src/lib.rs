//! mvnet core: the network model, IPAM, the store, netlink, namespaces and drivers.
//! Front ends (the `mvnet` CLI, later the CNI and Docker plugins) are thin layers on top.

pub mod error;
pub mod ids;
pub mod ipam;
pub mod model;
pub mod store;

pub use error::{Error, Result};
pub mod announce;
pub mod doctor;
pub mod driver;
pub mod engine;
pub mod hostaccess;
pub mod kernel;
pub mod lab;
pub mod netlink;
pub mod netns;
pub mod parent;
pub mod probe;
pub mod runtime;
pub mod views;

/// A warning for the person at the terminal (stderr; CNI runtimes log a plugin's stderr).
pub fn warn_user(msg: &str) {
    eprintln!("mvnet: warning: {msg}");
}
