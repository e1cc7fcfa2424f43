//! Drivers: the kernel work of attaching an endpoint to a network (macvlan and ipvlan
//! links). Bookkeeping (the store) happens around them in `engine`.
//!
//! - `plan`: what one attachment asks of the kernel, as plain data (pure);
//! - `attach`: the sequence that carries a plan out, and undoes it on failure;
//! - `conflict`: the LAN conflict probe and IPv6 DAD, and the caller's say on a conflict.

pub mod attach;
pub mod conflict;
pub mod plan;

pub use attach::{
    attach, create_early, create_link, delete_endpoint_link, CreateOutcome, EarlyLink, ParentNs,
};
pub use conflict::{ConflictHandler, OnConflict, MAX_PROBED_ADDRESSES};
pub use plan::{gateway_for, parent_down_notice, parent_is_down, LinkKind, LinkPlan, RoutePlan};
