//! The coordinator: the few key-value operations a fleet needs from etcd, behind a trait,
//! so the pool logic is tested against an in-memory fake and the real cluster alike.
//!
//! Every write is one etcd transaction guarded by a revision: a claim is created only if
//! the key does not exist (`create_revision == 0`), and a take-over or a release goes
//! through only if nobody wrote the key since it was read (`mod_revision`). The calls are
//! synchronous (the engine is); the etcd one drives etcd-client on a small runtime of its
//! own, and gives up after [`DEADLINE`] with [`Error::Unavailable`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// How long one operation may try (over every endpoint) before etcd counts as unreachable:
/// a `run` that needs a new address fails within 5 s, with room for the rest of the command
/// on a loaded machine (4 s left too little: a CI run once took 5.2 s). Still longer than
/// an etcd leader election (about 1 s with etcd's defaults).
pub const DEADLINE: Duration = Duration::from_millis(3000);

/// The outcome of a create-if-absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The key is ours, written at this revision.
    Yes(i64),
    /// Somebody holds it: their value and the revision it was last written at.
    Held { value: String, mod_revision: i64 },
}

pub trait Coordinator: Send {
    /// Creates `key` with `value` unless it exists.
    fn create(&mut self, key: &str, value: &str) -> Result<Created>;
    /// Replaces `key` with `value` if it is still at `mod_revision`; the new revision, or
    /// `None` when somebody wrote it meanwhile.
    fn swap(&mut self, key: &str, mod_revision: i64, value: &str) -> Result<Option<i64>>;
    /// Deletes `key` if it is still at `mod_revision`; the revision of the delete, or
    /// `None` when somebody wrote it meanwhile (or it is gone).
    fn delete_if(&mut self, key: &str, mod_revision: i64) -> Result<Option<i64>>;
    /// The value of `key` and the revision it was last written at.
    fn get(&mut self, key: &str) -> Result<Option<(String, i64)>>;
    /// Every key under `prefix`: (key, value, mod_revision), in key order.
    fn list(&mut self, prefix: &str) -> Result<Vec<(String, String, i64)>>;
    /// The first write of `key` after revision `after` (from etcd's history): its
    /// revision, and whether it deleted the key. `None` if there was none. A release whose
    /// answer was lost (a member died mid-call) learns this way whether it went through.
    fn first_change_after(&mut self, key: &str, after: i64) -> Result<Option<(i64, bool)>>;
}

// ----- in memory ------------------------------------------------------------------------

/// A shared in-memory key space with etcd's revision rules; clones share it, so several
/// `FleetStore`s (several "hosts") can be tested against one "cluster".
#[derive(Clone, Default)]
pub struct MemoryCoordinator {
    kv: Arc<Mutex<MemKv>>,
}

#[derive(Default)]
struct MemKv {
    revision: i64,
    keys: BTreeMap<String, (String, i64)>,
    /// Every write: (key, revision, deleted).
    history: Vec<(String, i64, bool)>,
    /// Set by tests: every call fails as an unreachable cluster does.
    down: bool,
}

impl MemoryCoordinator {
    pub fn new() -> MemoryCoordinator {
        MemoryCoordinator::default()
    }

    /// Makes every following call fail (`true`) or work again.
    pub fn set_down(&self, down: bool) {
        self.kv.lock().unwrap().down = down;
    }

    fn with<R>(&self, f: impl FnOnce(&mut MemKv) -> R) -> Result<R> {
        let mut kv = self.kv.lock().unwrap();
        if kv.down {
            return Err(unavailable(
                &["memory".to_string()],
                "the test took it down",
            ));
        }
        Ok(f(&mut kv))
    }
}

impl Coordinator for MemoryCoordinator {
    fn create(&mut self, key: &str, value: &str) -> Result<Created> {
        self.with(|kv| match kv.keys.get(key) {
            Some((v, rev)) => Created::Held {
                value: v.clone(),
                mod_revision: *rev,
            },
            None => {
                kv.revision += 1;
                let rev = kv.revision;
                kv.keys.insert(key.to_string(), (value.to_string(), rev));
                kv.history.push((key.to_string(), rev, false));
                Created::Yes(rev)
            }
        })
    }

    fn swap(&mut self, key: &str, mod_revision: i64, value: &str) -> Result<Option<i64>> {
        self.with(|kv| match kv.keys.get(key) {
            Some((_, rev)) if *rev == mod_revision => {
                kv.revision += 1;
                let rev = kv.revision;
                kv.keys.insert(key.to_string(), (value.to_string(), rev));
                kv.history.push((key.to_string(), rev, false));
                Some(rev)
            }
            _ => None,
        })
    }

    fn delete_if(&mut self, key: &str, mod_revision: i64) -> Result<Option<i64>> {
        self.with(|kv| match kv.keys.get(key) {
            Some((_, rev)) if *rev == mod_revision => {
                kv.revision += 1;
                kv.keys.remove(key);
                let rev = kv.revision;
                kv.history.push((key.to_string(), rev, true));
                Some(rev)
            }
            _ => None,
        })
    }

    fn get(&mut self, key: &str) -> Result<Option<(String, i64)>> {
        self.with(|kv| kv.keys.get(key).cloned())
    }

    fn list(&mut self, prefix: &str) -> Result<Vec<(String, String, i64)>> {
        self.with(|kv| {
            kv.keys
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, (v, r))| (k.clone(), v.clone(), *r))
                .collect()
        })
    }

    fn first_change_after(&mut self, key: &str, after: i64) -> Result<Option<(i64, bool)>> {
        self.with(|kv| {
            kv.history
                .iter()
                .find(|(k, r, _)| k == key && *r > after)
                .map(|(_, r, d)| (*r, *d))
        })
    }
}

// ----- etcd -----------------------------------------------------------------------------

/// etcd v3 through etcd-client, on a current-thread runtime owned by this value.
pub struct EtcdCoordinator {
    endpoints: Vec<String>,
    /// Always `Some` until drop.
    rt: Option<tokio::runtime::Runtime>,
    client: Option<etcd_client::Client>,
    /// The member to connect to next. One member at a time: a client of all of them
    /// opens a connection to each before its first call, and a short-lived process (a CNI
    /// ADD) would pay for three handshakes to use one. A failure moves on to the next.
    next: usize,
}

/// The error for a cluster that did not answer in time (or has no quorum).
pub fn unavailable(endpoints: &[String], why: &str) -> Error {
    Error::Unavailable(format!(
        "etcd at {} did not answer in {} s ({why}): it is down or has no quorum, so no address can be claimed now; containers already running keep working, and releases are queued until it is back (check with: etcdctl --endpoints={} endpoint health)",
        endpoints.join(","),
        DEADLINE.as_secs(),
        endpoints.join(",")
    ))
}

impl EtcdCoordinator {
    /// A coordinator for the cluster at `endpoints`; it connects on first use.
    pub fn new(endpoints: &[String]) -> Result<EtcdCoordinator> {
        // A member that dies while a request is being written makes the write fail with
        // EPIPE, or, where SIGPIPE is the default (the CLI sets it for `| head`), kills
        // the process without a word: the fleet keeper died so whenever a member was
        // stopped. An error is what the retry loop below handles.
        // SAFETY: sets a signal disposition; no handler code is involved.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("start the etcd client's runtime", e))?;
        Ok(EtcdCoordinator {
            endpoints: endpoints.to_vec(),
            rt: Some(rt),
            client: None,
            // Processes start at different members, so the load spreads.
            next: std::process::id() as usize % endpoints.len().max(1),
        })
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("the runtime lives until drop")
    }

    /// Runs `op` against the cluster, connecting (again) as needed, retrying until
    /// [`DEADLINE`]. `op` must be safe to repeat (every write here is guarded).
    fn run<T, F, Fut>(&mut self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut(etcd_client::Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let started = Instant::now();
        let mut last = String::from("no answer");
        while started.elapsed() < DEADLINE {
            let left = DEADLINE.saturating_sub(started.elapsed());
            if self.client.is_none() {
                // A member cut off from the leader refuses at once (require_leader)
                // instead of letting the call wait out its timeout.
                let opts = etcd_client::ConnectOptions::new()
                    .with_connect_timeout(Duration::from_millis(1000))
                    .with_timeout(Duration::from_millis(1500))
                    .with_require_leader(true);
                let eps = vec![self.endpoints[self.next % self.endpoints.len()].clone()];
                let connected = self.rt().block_on(async {
                    tokio::time::timeout(left, etcd_client::Client::connect(eps, Some(opts))).await
                });
                match connected {
                    Ok(Ok(c)) => self.client = Some(c),
                    Ok(Err(e)) => {
                        last = e.to_string();
                        self.next += 1;
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                    Err(_) => {
                        last = "connect timed out".into();
                        break;
                    }
                }
            }
            let client = self.client.clone().expect("connected above");
            let left = DEADLINE.saturating_sub(started.elapsed());
            let call = Instant::now();
            match self
                .rt()
                .block_on(async { tokio::time::timeout(left, op(client)).await })
            {
                Ok(Ok(v)) => {
                    if std::env::var_os("MVNET_TIMING").is_some() {
                        crate::to_stderr(&format!(
                            "mvnet timing: etcd {what} {:.3}ms (with connecting: {:.3}ms)",
                            call.elapsed().as_secs_f64() * 1e3,
                            started.elapsed().as_secs_f64() * 1e3
                        ));
                    }
                    return Ok(v);
                }
                Ok(Err(e)) => {
                    last = e.to_string();
                    // A member that went away: connect again, and let the next try pick
                    // another one.
                    self.client = None;
                    self.next += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(_) => {
                    last = format!("{what} timed out");
                    self.client = None;
                    self.next += 1;
                }
            }
        }
        Err(unavailable(&self.endpoints, &last))
    }

    /// Grants a lease of `ttl` seconds; its id.
    pub fn grant(&mut self, ttl: i64) -> Result<i64> {
        self.run("lease grant", |mut c| async move {
            c.lease_grant(ttl, None).await.map(|r| r.id())
        })
    }

    /// Refreshes lease `id`; false when it has run out (a new one is needed).
    pub fn keep_alive(&mut self, id: i64) -> Result<bool> {
        self.run("lease keep-alive", |mut c| async move {
            let (mut keeper, mut stream) = c.lease_keep_alive(id).await?;
            keeper.keep_alive().await?;
            Ok(stream.message().await?.is_some_and(|r| r.ttl() > 0))
        })
    }

    /// Writes `key` (bound to lease `lease` when not 0).
    pub fn put(&mut self, key: &str, value: &str, lease: i64) -> Result<()> {
        let (key, value) = (key.to_string(), value.to_string());
        self.run("put", |mut c| {
            let (key, value) = (key.clone(), value.clone());
            async move {
                let opts = (lease != 0).then(|| etcd_client::PutOptions::new().with_lease(lease));
                c.put(key, value, opts).await.map(|_| ())
            }
        })
    }
}

impl Drop for EtcdCoordinator {
    /// Without waiting for the runtime's helper threads (the resolver's): a CNI ADD
    /// would otherwise spend its last milliseconds joining them.
    fn drop(&mut self) {
        self.client = None;
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Coordinator for EtcdCoordinator {
    fn first_change_after(&mut self, key: &str, after: i64) -> Result<Option<(i64, bool)>> {
        let key = key.to_string();
        self.run("history", |mut c| {
            let key = key.clone();
            async move {
                // Anything after `after` is history by now, or nothing happened: a watch
                // from `after + 1` hands the first event over at once, if there is one.
                let now = c
                    .get(key.clone(), None)
                    .await?
                    .header()
                    .map(|h| h.revision())
                    .unwrap_or(0);
                if now <= after {
                    return Ok(None);
                }
                let opts = etcd_client::WatchOptions::new().with_start_revision(after + 1);
                let mut stream = c.watch(key, Some(opts)).await?;
                // The created notice comes first, then the history. (Called only when a
                // write after `after` must exist; a quiet key ends in the timeout.)
                while let Ok(msg) =
                    tokio::time::timeout(Duration::from_millis(1000), stream.message()).await
                {
                    let Some(resp) = msg? else { break };
                    if let Some(ev) = resp.events().first() {
                        let rev = ev.kv().map(|kv| kv.mod_revision()).unwrap_or(0);
                        return Ok(Some((
                            rev,
                            ev.event_type() == etcd_client::EventType::Delete,
                        )));
                    }
                    if resp.canceled() {
                        break;
                    }
                }
                Ok(None)
            }
        })
    }

    fn create(&mut self, key: &str, value: &str) -> Result<Created> {
        use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
        let (key, value) = (key.to_string(), value.to_string());
        self.run("claim", |mut c| {
            let (key, value) = (key.clone(), value.clone());
            async move {
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key.clone(), value, None)])
                    .or_else([TxnOp::get(key, None)]);
                let r = c.txn(txn).await?;
                let revision = r.header().map(|h| h.revision()).unwrap_or(0);
                if r.succeeded() {
                    return Ok(Created::Yes(revision));
                }
                for op in r.op_responses() {
                    if let TxnOpResponse::Get(g) = op {
                        if let Some(kv) = g.kvs().first() {
                            return Ok(Created::Held {
                                value: String::from_utf8_lossy(kv.value()).into_owned(),
                                mod_revision: kv.mod_revision(),
                            });
                        }
                    }
                }
                // Deleted between the compare and the get cannot happen inside one txn.
                Err(etcd_client::Error::InvalidArgs(
                    "a failed claim without the key".into(),
                ))
            }
        })
    }

    fn swap(&mut self, key: &str, mod_revision: i64, value: &str) -> Result<Option<i64>> {
        use etcd_client::{Compare, CompareOp, Txn, TxnOp};
        let (key, value) = (key.to_string(), value.to_string());
        self.run("take-over", |mut c| {
            let (key, value) = (key.clone(), value.clone());
            async move {
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        mod_revision,
                    )])
                    .and_then([TxnOp::put(key, value, None)]);
                let r = c.txn(txn).await?;
                Ok(r.succeeded()
                    .then(|| r.header().map(|h| h.revision()).unwrap_or(0)))
            }
        })
    }

    fn delete_if(&mut self, key: &str, mod_revision: i64) -> Result<Option<i64>> {
        use etcd_client::{Compare, CompareOp, Txn, TxnOp};
        let key = key.to_string();
        self.run("release", |mut c| {
            let key = key.clone();
            async move {
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        mod_revision,
                    )])
                    .and_then([TxnOp::delete(key, None)]);
                let r = c.txn(txn).await?;
                Ok(r.succeeded()
                    .then(|| r.header().map(|h| h.revision()).unwrap_or(0)))
            }
        })
    }

    fn get(&mut self, key: &str) -> Result<Option<(String, i64)>> {
        let key = key.to_string();
        self.run("get", |mut c| {
            let key = key.clone();
            async move {
                let r = c.get(key, None).await?;
                Ok(r.kvs().first().map(|kv| {
                    (
                        String::from_utf8_lossy(kv.value()).into_owned(),
                        kv.mod_revision(),
                    )
                }))
            }
        })
    }

    fn list(&mut self, prefix: &str) -> Result<Vec<(String, String, i64)>> {
        let prefix = prefix.to_string();
        self.run("list", |mut c| {
            let prefix = prefix.clone();
            async move {
                let r = c
                    .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
                    .await?;
                Ok(r.kvs()
                    .iter()
                    .map(|kv| {
                        (
                            String::from_utf8_lossy(kv.key()).into_owned(),
                            String::from_utf8_lossy(kv.value()).into_owned(),
                            kv.mod_revision(),
                        )
                    })
                    .collect())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fake_follows_etcds_revision_rules() {
        let mut a = MemoryCoordinator::new();
        let mut b = a.clone();
        let Created::Yes(r1) = a.create("/k", "a").unwrap() else {
            panic!("first create must win")
        };
        assert_eq!(
            b.create("/k", "b").unwrap(),
            Created::Held {
                value: "a".into(),
                mod_revision: r1
            }
        );
        // A guarded write with a stale revision loses.
        let r2 = b.swap("/k", r1, "b").unwrap().unwrap();
        assert!(a.swap("/k", r1, "a again").unwrap().is_none());
        assert!(a.delete_if("/k", r1).unwrap().is_none());
        assert!(a.delete_if("/k", r2).unwrap().is_some());
        assert!(a.get("/k").unwrap().is_none());
        a.create("/p/1", "x").unwrap();
        a.create("/p/2", "y").unwrap();
        a.create("/q", "z").unwrap();
        let keys: Vec<String> = a
            .list("/p/")
            .unwrap()
            .into_iter()
            .map(|(k, ..)| k)
            .collect();
        assert_eq!(keys, ["/p/1", "/p/2"]);
        a.set_down(true);
        assert!(matches!(b.get("/q"), Err(Error::Unavailable(_))));
    }
}
