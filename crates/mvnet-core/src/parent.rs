//! Finding (and, for 802.1Q names, creating) a parent link. Store-free, so the CNI plugin
//! uses it as is; the engine adds ownership records on top.

use crate::error::KernelContext;
use crate::model::network::parse_vlan_parent;
use crate::netlink::{Link, ProbeKind};
use crate::os::Rtnl;
use crate::{invalid, Error, Result};

/// The parent link, created first when it is a missing `BASE.VID` 802.1Q sub-interface
/// (Docker's rule). Returns whether this call created it.
/// `driver` names the network's driver in messages ("macvlan" or "ipvlan").
pub fn ensure(nl: &mut dyn Rtnl, name: &str, driver: &str) -> Result<(Link, bool)> {
    let found = nl
        .link_by_name(name)
        .kernel(format!("look up parent {name}"))?;
    match found {
        // Docker's words (macvlan_setup.go, ipvlan_network.go).
        Some(l) if l.loopback => Err(invalid!(
            "loopback interface is not a valid {driver} parent link; use a LAN interface such as eth0"
        )),
        Some(l) => Ok((l, false)),
        None => match parse_vlan_parent(name)? {
            Some((base, vid)) => create_vlan(nl, name, &base, vid),
            None => Err(missing(nl, name)),
        },
    }
}

/// "Not found" with the interfaces that do exist, so the user can pick one.
pub fn missing(nl: &mut dyn Rtnl, name: &str) -> Error {
    let names: Vec<String> = match nl.links() {
        Ok(links) => links
            .into_iter()
            .filter(|l| !l.loopback)
            .map(|l| l.name)
            .collect(),
        Err(e) => return Error::kernel("list links", e),
    };
    Error::ParentMissing {
        name: name.to_string(),
        present: names,
    }
}

/// Creates `name` as VLAN `vid` of `base`, brings both up. Returns whether it was created
/// here (false when another process created it a moment earlier).
pub fn create_vlan(nl: &mut dyn Rtnl, name: &str, base: &str, vid: u16) -> Result<(Link, bool)> {
    let k = |op: String| move |e: std::io::Error| Error::kernel(op, e);
    let Some(base_link) = nl
        .link_by_name(base)
        .map_err(k(format!("look up {base}")))?
    else {
        return Err(missing(nl, base));
    };
    let created = match nl.create_vlan(name, base_link.index, vid) {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => false,
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            return Err(
                crate::kernel::feature(ProbeKind::Vlan).missing_error(&format!(
                    "parent {name} (an 802.1Q VLAN sub-interface of {base})"
                )),
            )
        }
        Err(e) => return Err(Error::kernel(format!("create VLAN {vid} on {base}"), e)),
    };
    let configured = (|| {
        // Like `ifconfig ens19 up` in the seed: a trunk port that is down carries nothing.
        if !base_link.up {
            nl.set_up(base_link.index, true)
                .map_err(k(format!("set {base} up")))?;
        }
        let link = nl
            .link_by_name(name)
            .map_err(k(format!("look up {name}")))?
            .ok_or_else(|| Error::Internal(format!("{name} vanished right after creation")))?;
        nl.set_up(link.index, true)
            .map_err(k(format!("set {name} up")))?;
        Ok(Link { up: true, ..link })
    })();
    match configured {
        Ok(link) => Ok((link, created)),
        Err(e) => {
            if created {
                let _ = nl.delete_link_by_name(name);
            }
            Err(e)
        }
    }
}
