//! Releases that could not reach etcd (no quorum, or a cut-off host) wait here, one file
//! each under `<root>/fleet/releases/`, until the host's keeper, or the next attach on a
//! shared pool, gets them through. A file is written whole before it is renamed into
//! place and deleted only once etcd has the release, so `kill -9` at any moment loses
//! none; a release tried twice is harmless (it deletes only this host's own claim).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One release to retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRelease {
    pub etcd: Vec<String>,
    pub pool: String,
    pub ip: IpAddr,
    pub host: String,
    pub endpoint: String,
}

fn dir(root: &Path) -> PathBuf {
    root.join("fleet").join("releases")
}

/// Queues `r`.
pub fn push(root: &Path, r: &PendingRelease) -> Result<()> {
    use std::io::Write;
    let dir = dir(root);
    crate::store::root::private_dir(&root.join("fleet"))?;
    crate::store::root::private_dir(&dir)?;
    let name = format!("{}_{}_{}.json", r.pool, r.ip, r.endpoint);
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    {
        let mut f = crate::store::root::create_private_file(&tmp)?;
        f.write_all(serde_json::to_string(r).expect("serializes").as_bytes())
            .map_err(|e| Error::io(format!("write {}", tmp.display()), e))?;
        f.sync_all()
            .map_err(|e| Error::io(format!("sync {}", tmp.display()), e))?;
    }
    std::fs::rename(&tmp, dir.join(&name)).map_err(|e| Error::io(format!("queue {name}"), e))
}

/// The queued releases, oldest name first, with their files.
pub fn pending(root: &Path) -> Vec<(PathBuf, PendingRelease)> {
    let Ok(entries) = std::fs::read_dir(dir(root)) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, PendingRelease)> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .filter_map(|p| {
            let r = serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?;
            Some((p, r))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Whether anything waits (one directory read; cheap on the attach path).
pub fn is_empty(root: &Path) -> bool {
    std::fs::read_dir(dir(root))
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

/// Drops a release etcd now has.
pub fn done(path: &Path) {
    let _ = std::fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_wait_in_files_until_done() {
        let root = std::env::temp_dir().join(format!("mvnet-queue-{}", crate::ids::new_id()));
        crate::store::root::prepare(&root).unwrap();
        assert!(is_empty(&root));
        let r = PendingRelease {
            etcd: vec!["http://10.0.0.5:2379".into()],
            pool: "office".into(),
            ip: "10.103.19.7".parse().unwrap(),
            host: "h1".into(),
            endpoint: "ep1".into(),
        };
        push(&root, &r).unwrap();
        push(&root, &r).unwrap(); // the same release twice is one file
        let p = pending(&root);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].1, r);
        assert!(!is_empty(&root));
        done(&p[0].0);
        assert!(pending(&root).is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
