//! Drivers: the kernel work of attaching an endpoint to a network. Bookkeeping (the store)
//! happens around them in `engine`.

pub mod macvlan;
