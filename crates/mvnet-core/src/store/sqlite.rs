use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::{EndpointRequest, NetworkCheck, Spare, Store};
use crate::error::StoreError;
use crate::ipam::ip_key;
use crate::model::{
    Container, Endpoint, EndpointState, LanConflict, MacAddr, MacvlanMode, Network,
};
use crate::{conflict, invalid, not_found, Error, Result};

const SCHEMA_VERSION: i64 = 4;

/// Statements through the connection's cache. The CNI agent keeps its connection between
/// requests, and parsing the same SQL again was the largest part of its CPU time per ADD
/// (profiled with perf: a third of the agent's time was in sqlite3_prepare).
trait CachedSql {
    fn exec<P: rusqlite::Params>(&self, sql: &str, p: P) -> rusqlite::Result<usize>;
    fn row<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        p: P,
        f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T>;
}

impl CachedSql for Connection {
    fn exec<P: rusqlite::Params>(&self, sql: &str, p: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(p)
    }
    fn row<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        p: P,
        f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(p, f)
    }
}

/// Room for every distinct statement of the store (about 60), so none is parsed twice.
const STATEMENT_CACHE: usize = 128;

/// Every object is one row with its JSON body; the columns beside it are the ones queried.
/// Allocations are keyed by (address domain, address): networks sharing a parent share a LAN,
/// so an address is unique across them. An address another device on the LAN answered for is
/// an allocation with an empty endpoint id (so the O(1) allocator skips it for free), with
/// who answered and when in `lan_conflicts`. Every statement is idempotent, so running the
/// whole schema again migrates an older version.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS networks(
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, parent TEXT NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pool_cursors(
    network_id TEXT NOT NULL, pool_idx INTEGER NOT NULL, cursor BLOB,
    PRIMARY KEY(network_id, pool_idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS allocations(
    domain TEXT NOT NULL, ip BLOB NOT NULL, network_id TEXT NOT NULL, endpoint_id TEXT NOT NULL,
    PRIMARY KEY(domain, ip)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS allocations_by_endpoint ON allocations(endpoint_id);
CREATE TABLE IF NOT EXISTS domain_counts(domain TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS endpoints(
    id TEXT PRIMARY KEY, network_id TEXT NOT NULL, container_id TEXT NOT NULL,
    state TEXT NOT NULL, owner_pid INTEGER NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS endpoints_by_network ON endpoints(network_id);
CREATE INDEX IF NOT EXISTS endpoints_by_container ON endpoints(container_id);
CREATE INDEX IF NOT EXISTS endpoints_by_state ON endpoints(state);
CREATE TABLE IF NOT EXISTS owned_parents(name TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS containers(
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS lan_conflicts(
    domain TEXT NOT NULL, ip BLOB NOT NULL, network_id TEXT NOT NULL, mac TEXT, seen TEXT NOT NULL,
    PRIMARY KEY(domain, ip)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS lan_conflicts_by_network ON lan_conflicts(network_id);
CREATE TABLE IF NOT EXISTS spares(
    id TEXT PRIMARY KEY, network_id TEXT NOT NULL, ip BLOB NOT NULL, confirmed INTEGER NOT NULL,
    owner_pid INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS spares_by_network ON spares(network_id);
";

/// The endpoint id of an allocation held by a device on the LAN rather than by an endpoint.
const LAN_HOLDER: &str = "";
/// The endpoint id of an allocation another host of a shared pool holds (`crate::fleet`).
const FLEET_HOLDER: &str = "\u{1}fleet";

pub struct SqliteStore {
    conn: Connection,
    /// `mvnet.lock`: writers queue on flock() here, sleeping in the kernel, instead of
    /// polling SQLite's lock. A process killed mid-transaction releases it automatically.
    lock: std::fs::File,
    /// Endpoints whose creator died mid-attach, reclaimed by the last write: the engine
    /// deletes their half-made links (`Store::take_reclaimed`).
    reclaimed: Vec<Endpoint>,
    /// Networks parsed lately, with the stored text they came from. A network is read on
    /// every attach and detach; a resident process (the CNI agent) keeps its store, so a
    /// row whose text has not changed is not parsed again. Always checked against the row
    /// just read, so it can never be stale.
    parsed_networks: Vec<(String, Network)>,
}

/// How many parsed networks a store keeps (`SqliteStore::parsed_networks`).
const PARSED_NETWORKS: usize = 8;

/// Holds the write lock; released on drop (after the transaction beside it).
struct WriteLock<'a>(&'a std::fs::File);

/// How long a writer waits for the lock before it names the holder and gives up.
/// `MVNET_LOCK_TIMEOUT` (seconds) changes it, for tests.
fn lock_timeout() -> Duration {
    std::env::var("MVNET_LOCK_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(30))
}

impl<'a> WriteLock<'a> {
    fn take(f: &'a std::fs::File) -> Result<WriteLock<'a>> {
        use std::os::fd::AsRawFd;
        let fd = f.as_raw_fd();
        // The common case: nobody holds it.
        // SAFETY: flock on an fd we own; no memory is involved.
        if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(WriteLock(f));
        }
        let e = std::io::Error::last_os_error();
        if !matches!(
            e.raw_os_error(),
            Some(libc::EWOULDBLOCK) | Some(libc::EINTR)
        ) {
            return Err(Error::io("lock the state store", e));
        }
        // Busy: queue in the kernel (fair, no polling) on a helper thread, so that we can
        // give up after the timeout. A helper that gets the lock after we gave up drops it.
        #[derive(PartialEq)]
        enum State {
            Waiting,
            Acquired,
            Failed(i32),
            Abandoned,
        }
        let shared = std::sync::Arc::new((
            std::sync::Mutex::new(State::Waiting),
            std::sync::Condvar::new(),
        ));
        let helper = shared.clone();
        std::thread::spawn(move || {
            let outcome = loop {
                // SAFETY: as above. The fd outlives this thread in every path that waits
                // for it; after a timeout the process reports an error and the helper only
                // unlocks.
                if unsafe { libc::flock(fd, libc::LOCK_EX) } == 0 {
                    break State::Acquired;
                }
                let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                if errno != libc::EINTR {
                    break State::Failed(errno);
                }
            };
            let (m, cv) = &*helper;
            let mut st = m.lock().unwrap_or_else(|p| p.into_inner());
            if *st == State::Abandoned {
                if outcome == State::Acquired {
                    // SAFETY: as above.
                    unsafe { libc::flock(fd, libc::LOCK_UN) };
                }
            } else {
                *st = outcome;
                cv.notify_one();
            }
        });
        let (m, cv) = &*shared;
        let timeout = lock_timeout();
        let (mut st, _) = cv
            .wait_timeout_while(m.lock().unwrap_or_else(|p| p.into_inner()), timeout, |s| {
                *s == State::Waiting
            })
            .unwrap_or_else(|p| p.into_inner());
        match *st {
            State::Acquired => Ok(WriteLock(f)),
            State::Failed(errno) => Err(Error::io(
                "lock the state store",
                std::io::Error::from_raw_os_error(errno),
            )),
            _ => {
                *st = State::Abandoned;
                Err(Error::Conflict(lock_holder_message(f, timeout)))
            }
        }
    }
}

/// "locked by process 1234 (mvnet)": read from /proc/locks, which lists flock holders by
/// inode.
fn lock_holder_message(f: &std::fs::File, waited: Duration) -> String {
    use std::os::unix::fs::MetadataExt;
    let ino = f.metadata().map(|m| m.ino()).unwrap_or(0);
    let holder = std::fs::read_to_string("/proc/locks")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("FLOCK") && !l.contains("->"))
        .find_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let dev_ino = fields.iter().find(|f| f.matches(':').count() == 2)?;
            (dev_ino.rsplit(':').next()? == ino.to_string())
                .then(|| fields.get(4).and_then(|p| p.parse::<u32>().ok()))
                .flatten()
        });
    match holder {
        Some(pid) => {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            format!(
                "the state store is locked by process {pid} ({}) and stayed locked for {} s; if that process hangs, stop it (kill {pid}) and try again",
                comm.trim(),
                waited.as_secs()
            )
        }
        None => format!(
            "the state store stayed locked for {} s by a process mvnet cannot name; find it with: fuser -v ROOT/mvnet.lock",
            waited.as_secs()
        ),
    }
}

impl Drop for WriteLock<'_> {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: unlocking an fd we own.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `root/mvnet.db`, and makes sure a keeper
    /// holds it open for the next process (see `keeper`).
    pub fn open(root: &Path) -> Result<SqliteStore> {
        let store = SqliteStore::open_without_keeper(root)?;
        super::keeper::ensure(root);
        Ok(store)
    }

    /// Opens the store only if its database exists, never creating the state root or the
    /// database: what background processes use (a keeper, an agent, a container's
    /// monitor), which may wake up after their state root was removed and must not bring
    /// it back.
    pub fn open_existing(root: &Path) -> Result<SqliteStore> {
        let store = SqliteStore::open_inner(root, false)?;
        super::keeper::ensure(root);
        Ok(store)
    }

    /// Opens the store without starting a keeper (the keeper itself uses this).
    pub(super) fn open_without_keeper(root: &Path) -> Result<SqliteStore> {
        SqliteStore::open_inner(root, true)
    }

    /// `open_existing` without starting a keeper (the keeper itself uses this).
    pub(super) fn open_existing_without_keeper(root: &Path) -> Result<SqliteStore> {
        SqliteStore::open_inner(root, false)
    }

    fn open_inner(root: &Path, create: bool) -> Result<SqliteStore> {
        let db = root.join("mvnet.db");
        let gone = || not_found!("state database {} does not exist", db.display());
        if create {
            super::root::prepare(root)?;
        } else if !db.exists() {
            return Err(gone());
        }
        let lock = super::root::open_private(&root.join("mvnet.lock"))?;
        // A new database is created under the write lock, so an empty file found while
        // holding it is not one being created: it is a store that lost its contents.
        let new_or_empty = std::fs::symlink_metadata(&db).map_or(true, |m| m.len() == 0);
        let conn = {
            let guard = new_or_empty.then(|| WriteLock::take(&lock)).transpose()?;
            let creating = match (&guard, std::fs::symlink_metadata(&db)) {
                (None, _) => false,
                (Some(_), Ok(m)) if m.len() == 0 => {
                    return Err(invalid!(
                        "state database {} is empty (0 bytes): every network and container mvnet knew about is gone from it, though their links may remain; restore it from a backup, or move it away (mv {} {}.broken) to start again with an empty store",
                        db.display(),
                        db.display(),
                        db.display()
                    ))
                }
                (Some(_), Ok(_)) => false,
                (Some(_), Err(_)) if !create => return Err(gone()),
                (Some(_), Err(_)) => true,
            };
            if creating {
                super::root::open_private(&db)?; // 0600 from the first byte
            }
            // The root is ours and private (`prepare`); these cost one lstat each.
            for file in ["mvnet.db", "mvnet.db-wal", "mvnet.db-shm"] {
                super::root::check_private_file(&root.join(file))?;
            }
            let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
                | rusqlite::OpenFlags::SQLITE_OPEN_NOFOLLOW;
            let conn = Connection::open_with_flags(&db, flags)?;
            if creating {
                // Writes the file's first page before the lock is released. WAL is a
                // property of the file: set once, it holds for every later open.
                conn.pragma_update(None, "journal_mode", "WAL")?;
            }
            conn
        };
        // WAL: readers never block the writer; synchronous=NORMAL keeps every committed
        // transaction across a process crash (kill -9) and never corrupts on power loss.
        // Writers queue on mvnet.lock (below), so SQLite itself is rarely busy (a checkpoint,
        // an older mvnet). Then retry every millisecond, for up to about 30 s.
        conn.busy_handler(Some(|attempt: i32| {
            std::thread::sleep(Duration::from_millis(1));
            attempt < 30_000
        }))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // Short-lived processes (every CNI exec) are usually the last connection: without
        // this, each one would checkpoint (two fsyncs), delete the WAL, and the next would
        // recreate it. SQLite's own auto-checkpoint still runs every 1000 pages, and an
        // uncheckpointed WAL is replayed on open, so nothing is lost.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )?;
        let mut store = SqliteStore {
            conn,
            lock,
            reclaimed: Vec::new(),
            parsed_networks: Vec::new(),
        };
        store.migrate(create)?;
        Ok(store)
    }

    /// Brings the schema up to date. `create`: a database without one (new, or emptied
    /// under us) may get it; without, only an existing schema is upgraded, so a process
    /// that only looks (a keeper, an agent, a test's observer) never writes a database
    /// into a file someone else just created or emptied.
    fn migrate(&mut self, create: bool) -> Result<()> {
        let v: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        if v == SCHEMA_VERSION {
            return Ok(());
        }
        if v == 0 && !create {
            return Err(not_found!(
                "state database {} has no schema yet",
                self.conn.path().unwrap_or_default()
            ));
        }
        self.conn.pragma_update(None, "journal_mode", "WAL")?;
        let (tx, _lock) = self.write()?;
        tx.execute_batch(SCHEMA)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
        Ok(())
    }

    /// A write transaction that takes the lock up front, so concurrent writers queue instead
    /// of failing with SQLITE_BUSY at commit.
    fn write(&mut self) -> Result<(Transaction<'_>, WriteLock<'_>)> {
        let lock = WriteLock::take(&self.lock)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        Ok((tx, lock))
    }

    /// The network stored as `body` (asked for as `asked`): parsed once, then reused while
    /// its stored text stays the same.
    fn parsed_network(&mut self, body: String, asked: &str) -> Result<Network> {
        if let Some((_, net)) = self.parsed_networks.iter().find(|(text, _)| *text == body) {
            return Ok(net.clone());
        }
        let net: Network = from_json(&body).map_err(|e| {
            invalid!(
                "network {} is stored corrupt ({e}); remove it with: mvnet network rm {}",
                crate::quote(asked),
                crate::quote(asked)
            )
        })?;
        if self.parsed_networks.len() == PARSED_NETWORKS {
            self.parsed_networks.remove(0);
        }
        self.parsed_networks.push((body, net.clone()));
        Ok(net)
    }

    /// A single-statement write under the write lock.
    fn write_one(&mut self, sql: &str, p: impl rusqlite::Params) -> Result<usize> {
        let _lock = WriteLock::take(&self.lock)?;
        Ok(self.conn.exec(sql, p)?)
    }
}

impl SqliteStore {
    /// Checks the database and the invariants between tables; returns the problems found
    /// (empty when consistent). Used by the crash tests and by repair tooling.
    pub fn check_consistency(&mut self) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let ic: String = self.conn.row("PRAGMA integrity_check", [], |r| r.get(0))?;
        if ic != "ok" {
            problems.push(format!("integrity_check: {ic}"));
        }
        let checks = [
            ("allocation without endpoint",
             "SELECT count(*) FROM allocations a WHERE a.endpoint_id != '' AND a.endpoint_id != char(1) || 'fleet'
              AND NOT EXISTS (SELECT 1 FROM endpoints e WHERE e.id = a.endpoint_id)
              AND NOT EXISTS (SELECT 1 FROM spares s WHERE s.id = a.endpoint_id)"),
            ("spare without allocation",
             "SELECT count(*) FROM spares s WHERE NOT EXISTS (SELECT 1 FROM allocations a WHERE a.endpoint_id = s.id)"),
            ("LAN-held allocation without conflict record",
             "SELECT count(*) FROM allocations a WHERE a.endpoint_id = '' AND NOT EXISTS (SELECT 1 FROM lan_conflicts c WHERE c.domain = a.domain AND c.ip = a.ip)"),
            ("conflict record without LAN-held allocation",
             "SELECT count(*) FROM lan_conflicts c WHERE NOT EXISTS (SELECT 1 FROM allocations a WHERE a.domain = c.domain AND a.ip = c.ip AND a.endpoint_id = '')"),
            ("endpoint without network",
             "SELECT count(*) FROM endpoints e WHERE NOT EXISTS (SELECT 1 FROM networks n WHERE n.id = e.network_id)"),
            ("domain count differs from allocations",
             "SELECT count(*) FROM (SELECT domain, count(*) AS c FROM allocations GROUP BY domain) a
              LEFT JOIN domain_counts d USING(domain) WHERE d.n IS NULL OR d.n != a.c"),
            ("stale non-zero domain count",
             "SELECT count(*) FROM domain_counts d WHERE d.n != 0 AND NOT EXISTS (SELECT 1 FROM allocations a WHERE a.domain = d.domain)"),
            ("unparsable record",
             "SELECT (SELECT count(*) FROM networks WHERE json_valid(body) = 0)
                   + (SELECT count(*) FROM endpoints WHERE json_valid(body) = 0)
                   + (SELECT count(*) FROM containers WHERE json_valid(body) = 0)"),
        ];
        for (what, sql) in checks {
            let n: i64 = self.conn.row(sql, [], |r| r.get(0))?;
            if n != 0 {
                problems.push(format!("{what}: {n}"));
            }
        }
        // Every endpoint's addresses must be allocated to it.
        let mut st = self.conn.prepare_cached("SELECT id, body FROM endpoints")?;
        let rows: Vec<(String, String)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        drop(st);
        for (id, body) in rows {
            let ep: Endpoint = from_json(&body)?;
            for (ip, _) in ep.ipv4.iter().chain(ep.ipv6.iter()) {
                let owner: Option<String> = self
                    .conn
                    .row(
                        "SELECT endpoint_id FROM allocations WHERE ip = ?1",
                        [&ip_key(*ip)[..]],
                        |r| r.get(0),
                    )
                    .optional()?;
                if owner.as_deref() != Some(id.as_str()) {
                    problems.push(format!("endpoint {id} address {ip} not allocated to it"));
                }
            }
        }
        Ok(problems)
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("model types serialize")
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::Store(StoreError::Corrupt(e.to_string())))
}

/// Parses a stored row; a corrupt one is reported on stderr and skipped, so one bad row
/// cannot break every command (the `rm` commands remove it).
fn parse_or_report<T: serde::de::DeserializeOwned>(body: &str, what: &str, key: &str) -> Option<T> {
    match serde_json::from_str(body) {
        Ok(v) => Some(v),
        Err(e) => {
            let fix = match what {
                "network" => format!("mvnet network rm {}", crate::quote(key)),
                "container" => format!("mvnet rm -f {}", crate::quote(key)),
                _ => "mvnet network rm (its network) or mvnet rm -f (its container)".into(),
            };
            crate::warn_user(&format!(
                "skipping {what} {} stored corrupt ({e}); remove it with: {fix}",
                crate::quote(key)
            ));
            None
        }
    }
}

fn state_str(s: EndpointState) -> &'static str {
    match s {
        EndpointState::Creating => "creating",
        EndpointState::Active => "active",
    }
}

/// Finds one row by exact name, exact id, or unique id prefix.
fn lookup(tx: &Connection, table: &str, what: &str, key: &str) -> Result<Option<String>> {
    let by_name = format!("SELECT body FROM {table} WHERE name = ?1 OR id = ?1");
    if let Some(b) = tx.row(&by_name, [key], |r| r.get(0)).optional()? {
        return Ok(Some(b));
    }
    if !crate::ids::is_hex_prefix(key) {
        return Ok(None);
    }
    let by_prefix = format!("SELECT body FROM {table} WHERE id >= ?1 AND id < ?1 || 'g' LIMIT 2");
    let mut st = tx.prepare_cached(&by_prefix)?;
    let rows: Vec<String> = st
        .query_map([key.to_ascii_lowercase()], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    match rows.len() {
        0 => Ok(None),
        1 => Ok(rows.into_iter().next()),
        _ => Err(invalid!(
            "{what} id prefix '{key}' is ambiguous; give more characters or the name"
        )),
    }
}

fn endpoints_where(conn: &Connection, column: &str, value: &str) -> Result<Vec<Endpoint>> {
    let sql = format!("SELECT body, state FROM endpoints WHERE {column} = ?1 ORDER BY rowid");
    let mut st = conn.prepare_cached(&sql)?;
    let rows = st.query_map([value], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (body, state) = row?;
        let Some(mut ep) = parse_or_report::<Endpoint>(&body, "endpoint", value) else {
            continue;
        };
        ep.state = if state == "active" {
            EndpointState::Active
        } else {
            EndpointState::Creating
        };
        out.push(ep);
    }
    Ok(out)
}

/// Releases an endpoint's addresses and deletes its row, inside `tx`.
fn delete_endpoint(tx: &Transaction, id: &str) -> Result<Option<Endpoint>> {
    let body: Option<String> = tx
        .row("SELECT body FROM endpoints WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?;
    let Some(body) = body else { return Ok(None) };
    // A corrupt row still gives its addresses back.
    let ep: Option<Endpoint> = from_json(&body).ok();
    free_allocations_of(tx, id)?;
    tx.exec("DELETE FROM endpoints WHERE id = ?1", [id])?;
    Ok(ep)
}

/// Frees every address held under `id` (an endpoint's or a spare's), keeping the domains'
/// counts, inside `tx`.
fn free_allocations_of(tx: &Transaction, id: &str) -> Result<()> {
    let mut st = tx.prepare_cached("SELECT domain FROM allocations WHERE endpoint_id = ?1")?;
    let domains: Vec<String> = st
        .query_map([id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for d in &domains {
        tx.exec("UPDATE domain_counts SET n = n - 1 WHERE domain = ?1", [d])?;
    }
    tx.exec("DELETE FROM allocations WHERE endpoint_id = ?1", [id])?;
    Ok(())
}

/// Checks an attach against the rows (network still there, not connected twice, passthru
/// taken), picks its interface name and addresses, and inserts its endpoint row (state
/// `creating`), inside `tx`. `spare`: the id and IPv4 address of a spare to use, whose
/// allocation row is the spare's already.
fn insert_endpoint(
    tx: &Transaction,
    net: &Network,
    req: &EndpointRequest,
    spare: Option<(String, (IpAddr, u8))>,
) -> Result<Endpoint> {
    let still_there = tx
        .prepare_cached("SELECT 1 FROM networks WHERE id = ?1")?
        .exists([&net.id])?;
    if !still_there {
        return Err(not_found!(
            "network {} was removed; nothing attached",
            net.name
        ));
    }
    let mine = endpoints_where(tx, "container_id", &req.container_id)?;
    if mine.iter().any(|e| e.network_id == net.id) {
        return Err(conflict!(
            "container {} is already connected to network {}",
            req.container_name,
            net.name
        ));
    }
    if net.options.macvlan_mode == MacvlanMode::Passthru {
        if let Some(owner) = endpoints_where(tx, "network_id", &net.id)?.first() {
            return Err(conflict!(
                "network {} is in passthru mode and its parent {} already belongs to {}; passthru gives the parent to exactly one container (use bridge mode to share it)",
                net.name,
                net.options.parent,
                owner.container_name
            ));
        }
    }
    let taken: Vec<&str> = mine.iter().map(|e| e.ifname.as_str()).collect();
    let ifname = req.choose_ifname(&taken)?;
    let (v4_pools, v6_pools) = req.family_pools(net)?;
    let (id, ipv4) = match spare {
        Some((id, ip)) => (id, Some(ip)),
        None => {
            let id = crate::ids::new_id();
            let ipv4 = match req.leased_ipv4 {
                Some((ip, len)) => {
                    record_leased(tx, net, ip, &id, &req.host_addresses)?;
                    Some((ip, len))
                }
                None => allocate_in(
                    tx,
                    net,
                    &v4_pools,
                    req.static_ipv4,
                    &id,
                    &req.host_addresses,
                )?,
            };
            (id, ipv4)
        }
    };
    let ipv6 = allocate_in(
        tx,
        net,
        &v6_pools,
        req.static_ipv6,
        &id,
        &req.host_addresses,
    )?;
    let ep = req.endpoint(id, net, ifname, ipv4, ipv6);
    tx.exec(
        "INSERT INTO endpoints(id, network_id, container_id, state, owner_pid, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            ep.id,
            ep.network_id,
            ep.container_id,
            state_str(ep.state),
            ep.owner_pid,
            to_json(&ep)
        ],
    )?;
    Ok(ep)
}

/// The spares of `network_id`, oldest first.
fn spares_where(tx: &rusqlite::Connection, network_id: &str) -> Result<Vec<Spare>> {
    let mut st = tx.prepare_cached(
        "SELECT id, ip, confirmed, owner_pid FROM spares WHERE network_id = ?1 ORDER BY rowid",
    )?;
    let rows: Vec<(String, Vec<u8>, bool, u32)> = st
        .query_map([network_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, key, confirmed, owner_pid)| {
            Some(Spare {
                id,
                network_id: network_id.to_string(),
                ip: key_to_ip(&key)?,
                confirmed,
                owner_pid,
            })
        })
        .collect())
}

/// Deletes spare `id` and frees its address, inside `tx`.
fn delete_spare(tx: &Transaction, id: &str) -> Result<Option<Spare>> {
    let row: Option<(String, Vec<u8>, bool, u32)> = tx
        .row(
            "SELECT network_id, ip, confirmed, owner_pid FROM spares WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((network_id, key, confirmed, owner_pid)) = row else {
        return Ok(None);
    };
    tx.exec("DELETE FROM spares WHERE id = ?1", [id])?;
    free_allocations_of(tx, id)?;
    Ok(key_to_ip(&key).map(|ip| Spare {
        id: id.to_string(),
        network_id,
        ip,
        confirmed,
        owner_pid,
    }))
}

/// Endpoints left `creating` by a process that died mid-attach (kill -9) give their
/// addresses back. Returns them: their half-made links are the caller's to delete.
fn reclaim_abandoned(tx: &Transaction) -> Result<Vec<Endpoint>> {
    let mut st =
        tx.prepare_cached("SELECT id, owner_pid FROM endpoints WHERE state = 'creating'")?;
    let rows: Vec<(String, u32)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    drop(st);
    let mut reclaimed = Vec::new();
    for (id, pid) in rows {
        if !super::pid_alive(pid) {
            tracing::warn!(endpoint = %id, pid, "reclaiming endpoint abandoned mid-attach");
            reclaimed.extend(delete_endpoint(tx, &id)?);
        }
    }
    Ok(reclaimed)
}

/// Takes one address for `endpoint_id` from pool `idx` of `net`: the static request if
/// given (and free), else the next free address round-robin.
fn allocate(
    tx: &Transaction,
    net: &Network,
    idx: usize,
    requested: Option<IpAddr>,
    endpoint_id: &str,
    host_addresses: &[(IpAddr, String)],
) -> Result<(IpAddr, u8)> {
    let spec = &net.pools[idx];
    let pool = spec.pool();
    let domain = net.address_domain();
    let mut taken_st =
        tx.prepare_cached("SELECT endpoint_id FROM allocations WHERE domain = ?1 AND ip = ?2")?;
    let ip = match requested {
        Some(ip) => {
            pool.check_static(ip)?;
            if let Some((_, ifname)) = host_addresses.iter().find(|(a, _)| *a == ip) {
                return Err(conflict!(
                    "address {ip} belongs to this host (it is on {ifname}); a container with it would take the host off the LAN: pick another --ip"
                ));
            }
            let holder: Option<String> = taken_st
                .query_row(params![domain, &ip_key(ip)[..]], |r| r.get(0))
                .optional()?;
            if holder.as_deref() == Some(LAN_HOLDER) {
                // Asked for by name: the probe that follows decides whether the device that
                // held it is still there. Until then the address is the endpoint's.
                forget_lan_conflict(tx, domain, ip)?;
            } else if holder.as_deref() == Some(FLEET_HOLDER) {
                // Another host held it when last asked; etcd decides now.
                delete_allocation(tx, domain, ip, FLEET_HOLDER)?;
            } else if let Some(holder) = holder {
                let who: Option<String> = tx
                    .row(
                        "SELECT json_extract(body, '$.container_name') FROM endpoints WHERE id = ?1",
                        [&holder],
                        |r| r.get(0),
                    )
                    .optional()?;
                return Err(conflict!(
                    "address {ip} is already in use by {} on this LAN; pick another --ip or leave it out to get a free one",
                    who.unwrap_or_else(|| "another endpoint".into())
                ));
            }
            ip
        }
        None => {
            let cursor: Option<Vec<u8>> = tx
                .row(
                    "SELECT cursor FROM pool_cursors WHERE network_id = ?1 AND pool_idx = ?2",
                    params![net.id, idx as i64],
                    |r| r.get(0),
                )
                .optional()?
                .flatten();
            let cursor = cursor.and_then(|c| key_to_ip(&c));
            let count: i64 = tx
                .row(
                    "SELECT n FROM domain_counts WHERE domain = ?1",
                    [domain],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(0);
            // The host's own addresses are skipped like taken ones (and counted, so the
            // search bound still covers every free address).
            let bound = count.max(0) as u128 + host_addresses.len() as u128;
            let found = pool.allocate(cursor, bound, |ip| {
                if host_addresses.iter().any(|(a, _)| *a == ip) {
                    return Ok(true);
                }
                taken_st
                    .exists(params![domain, &ip_key(ip)[..]])
                    .map_err(Error::from)
            })?;
            let ip = found.ok_or_else(|| {
                conflict!(
                    "no free address left in {} of network {}; widen --ip-range or remove containers",
                    spec.ip_range.unwrap_or(spec.subnet),
                    net.name
                )
            })?;
            tx.exec(
                "INSERT INTO pool_cursors(network_id, pool_idx, cursor) VALUES (?1, ?2, ?3)
                 ON CONFLICT(network_id, pool_idx) DO UPDATE SET cursor = excluded.cursor",
                params![net.id, idx as i64, &ip_key(ip)[..]],
            )?;
            ip
        }
    };
    insert_allocation(tx, domain, ip, &net.id, endpoint_id)?;
    Ok((ip, spec.subnet.prefix_len()))
}

/// Records an address the LAN's DHCP server leased to `endpoint_id` (no pool: the server
/// chose it), unless the host or another endpoint holds it.
fn record_leased(
    tx: &Transaction,
    net: &Network,
    ip: IpAddr,
    endpoint_id: &str,
    host_addresses: &[(IpAddr, String)],
) -> Result<()> {
    let domain = net.address_domain();
    if let Some((_, ifname)) = host_addresses.iter().find(|(a, _)| *a == ip) {
        return Err(super::leased_taken(ip, &format!("this host ({ifname})")));
    }
    let holder: Option<String> = tx
        .row(
            "SELECT endpoint_id FROM allocations WHERE domain = ?1 AND ip = ?2",
            params![domain, &ip_key(ip)[..]],
            |r| r.get(0),
        )
        .optional()?;
    match holder.as_deref() {
        None => {}
        // A device answered for it once; the server knows better now.
        Some(LAN_HOLDER) => forget_lan_conflict(tx, domain, ip)?,
        Some(other) => {
            let who: Option<String> = tx
                .row(
                    "SELECT json_extract(body, '$.container_name') FROM endpoints WHERE id = ?1",
                    [other],
                    |r| r.get(0),
                )
                .optional()?;
            return Err(super::leased_taken(
                ip,
                &who.unwrap_or_else(|| "another endpoint".into()),
            ));
        }
    }
    insert_allocation(tx, domain, ip, &net.id, endpoint_id)
}

/// `allocate` over the pools of one family (see `store::take_over_pools`).
fn allocate_in(
    tx: &Transaction,
    net: &Network,
    pools: &[usize],
    requested: Option<IpAddr>,
    endpoint_id: &str,
    host_addresses: &[(IpAddr, String)],
) -> Result<Option<(IpAddr, u8)>> {
    super::take_over_pools(net, pools, requested, |idx, ip| {
        allocate(tx, net, idx, ip, endpoint_id, host_addresses)
    })
}

/// Records that `endpoint_id` holds `ip` in `domain`, keeping the domain's count.
fn insert_allocation(
    tx: &Transaction,
    domain: &str,
    ip: IpAddr,
    network_id: &str,
    endpoint_id: &str,
) -> Result<()> {
    tx.exec(
        "INSERT INTO allocations(domain, ip, network_id, endpoint_id) VALUES (?1, ?2, ?3, ?4)",
        params![domain, &ip_key(ip)[..], network_id, endpoint_id],
    )?;
    tx.exec(
        "INSERT INTO domain_counts(domain, n) VALUES (?1, 1)
         ON CONFLICT(domain) DO UPDATE SET n = n + 1",
        [domain],
    )?;
    Ok(())
}

/// Releases `ip` in `domain` if `endpoint_id` holds it, keeping the domain's count.
fn delete_allocation(tx: &Transaction, domain: &str, ip: IpAddr, endpoint_id: &str) -> Result<()> {
    let n = tx.exec(
        "DELETE FROM allocations WHERE domain = ?1 AND ip = ?2 AND endpoint_id = ?3",
        params![domain, &ip_key(ip)[..], endpoint_id],
    )?;
    if n > 0 {
        tx.exec(
            "UPDATE domain_counts SET n = n - 1 WHERE domain = ?1",
            [domain],
        )?;
    }
    Ok(())
}

/// Marks `ip` as held by a device on the LAN (`holder`), inside `tx`. An address an endpoint
/// still holds is left alone.
fn insert_lan_conflict(
    tx: &Transaction,
    net: &Network,
    ip: IpAddr,
    holder: Option<MacAddr>,
) -> Result<()> {
    let domain = net.address_domain();
    let key = ip_key(ip);
    let current: Option<String> = tx
        .row(
            "SELECT endpoint_id FROM allocations WHERE domain = ?1 AND ip = ?2",
            params![domain, &key[..]],
            |r| r.get(0),
        )
        .optional()?;
    match current.as_deref() {
        Some(LAN_HOLDER) => {}
        Some(_) => return Ok(()),
        None => insert_allocation(tx, domain, ip, &net.id, LAN_HOLDER)?,
    }
    tx.exec(
        "INSERT INTO lan_conflicts(domain, ip, network_id, mac, seen) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(domain, ip) DO UPDATE SET mac = excluded.mac, seen = excluded.seen",
        params![
            domain,
            &key[..],
            net.id,
            holder.map(|m| m.to_string()),
            crate::model::time::now_rfc3339()
        ],
    )?;
    Ok(())
}

/// A network is going: its LAN conflicts are facts about the LAN, so each one passes to
/// another network on the same parent whose subnets contain it, or is forgotten.
fn hand_over_lan_conflicts(tx: &Transaction, network_id: &str) -> Result<()> {
    let mut st = tx.prepare_cached(
        "SELECT body FROM networks WHERE parent = (SELECT parent FROM networks WHERE id = ?1) AND id != ?1",
    )?;
    let others: Vec<Network> = st
        .query_map([network_id], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?
        .iter()
        .map(|b| from_json(b))
        .collect::<Result<_>>()?;
    drop(st);
    let mut st = tx.prepare_cached("SELECT domain, ip FROM lan_conflicts WHERE network_id = ?1")?;
    let rows: Vec<(String, Vec<u8>)> = st
        .query_map([network_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    drop(st);
    for (domain, key) in rows {
        let Some(ip) = key_to_ip(&key) else { continue };
        let heir = others
            .iter()
            .find(|n| n.pools.iter().any(|p| p.subnet.contains(&ip)));
        match heir {
            Some(n) => {
                tx.exec(
                    "UPDATE lan_conflicts SET network_id = ?3 WHERE domain = ?1 AND ip = ?2",
                    params![domain, &key[..], n.id],
                )?;
                tx.exec(
                    "UPDATE allocations SET network_id = ?3 WHERE domain = ?1 AND ip = ?2 AND endpoint_id = ''",
                    params![domain, &key[..], n.id],
                )?;
            }
            None => forget_lan_conflict(tx, &domain, ip)?,
        }
    }
    Ok(())
}

/// Drops every LAN conflict of network `network_id`, inside `tx`; returns how many.
fn drop_lan_conflicts(tx: &Transaction, network_id: &str) -> Result<usize> {
    let mut st = tx.prepare_cached("SELECT domain, ip FROM lan_conflicts WHERE network_id = ?1")?;
    let rows: Vec<(String, Vec<u8>)> = st
        .query_map([network_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    drop(st);
    for (domain, key) in &rows {
        if let Some(ip) = key_to_ip(key) {
            forget_lan_conflict(tx, domain, ip)?;
        }
    }
    Ok(rows.len())
}

/// Drops the LAN conflict on `ip` and its allocation, inside `tx`.
fn forget_lan_conflict(tx: &Transaction, domain: &str, ip: IpAddr) -> Result<()> {
    let key = ip_key(ip);
    tx.exec(
        "DELETE FROM lan_conflicts WHERE domain = ?1 AND ip = ?2",
        params![domain, &key[..]],
    )?;
    delete_allocation(tx, domain, ip, LAN_HOLDER)
}

fn key_to_ip(k: &[u8]) -> Option<IpAddr> {
    if k.len() != 17 {
        return None;
    }
    let v = u128::from_be_bytes(k[1..].try_into().ok()?);
    Some(crate::ipam::u128_to_ip(v, k[0] == 6))
}

impl Store for SqliteStore {
    fn create_network(
        &mut self,
        net: &Network,
        check: NetworkCheck,
        created_parent: bool,
    ) -> Result<()> {
        let (tx, _lock) = self.write()?;
        let exists: bool = tx
            .prepare_cached("SELECT 1 FROM networks WHERE name = ?1")?
            .exists([&net.name])?;
        if exists {
            return Err(conflict!(
                "network with name {} already exists; pick another name or remove it first (mvnet network rm {})",
                net.name,
                net.name
            ));
        }
        let all = {
            let mut st = tx.prepare_cached("SELECT body FROM networks ORDER BY rowid")?;
            let bodies: Vec<String> = st
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            bodies
                .iter()
                .map(|b| from_json(b))
                .collect::<Result<Vec<Network>>>()?
        };
        check(&all)?;
        tx.exec(
            "INSERT INTO networks(id, name, parent, body) VALUES (?1, ?2, ?3, ?4)",
            params![net.id, net.name, net.options.parent, to_json(net)],
        )?;
        if created_parent {
            tx.exec(
                "INSERT OR IGNORE INTO owned_parents(name) VALUES (?1)",
                [&net.options.parent],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn networks(&mut self) -> Result<Vec<Network>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT name, body FROM networks ORDER BY rowid")?;
        let rows: Vec<(String, String)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows
            .iter()
            .filter_map(|(name, b)| parse_or_report(b, "network", name))
            .collect())
    }

    fn update_network(&mut self, net: &Network) -> Result<()> {
        let n = self
            .write_one(
                "UPDATE networks SET name = ?3, body = ?2 WHERE id = ?1",
                params![net.id, to_json(net), net.name],
            )
            .map_err(|e| match e {
                Error::Store(StoreError::Sqlite(ref q)) if q.to_string().contains("UNIQUE") => {
                    conflict!("network with name {} already exists", net.name)
                }
                other => other,
            })?;
        if n == 0 {
            return Err(not_found!("network {} was removed meanwhile", net.name));
        }
        Ok(())
    }

    fn network(&mut self, name_or_id: &str) -> Result<Network> {
        match lookup(&self.conn, "networks", "network", name_or_id)? {
            Some(b) => self.parsed_network(b, name_or_id),
            None => Err(not_found!(
                "network {name_or_id} not found; see the networks that exist with: mvnet network ls"
            )),
        }
    }

    fn network_named(&mut self, name: &str) -> Result<Option<Network>> {
        let body: Option<String> = self
            .conn
            .row("SELECT body FROM networks WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?;
        body.map(|b| self.parsed_network(b, name)).transpose()
    }

    fn remove_network(&mut self, id: &str) -> Result<Option<String>> {
        let (tx, _lock) = self.write()?;
        let reclaimed = reclaim_abandoned(&tx)?;
        let eps = endpoints_where(&tx, "network_id", id)?;
        if !eps.is_empty() {
            let name: String = tx
                .row("SELECT name FROM networks WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .optional()?
                .unwrap_or_default();
            let names: Vec<&str> = eps.iter().map(|e| e.container_name.as_str()).collect();
            return Err(conflict!(
                "error while removing network: network {name} id {} has active endpoints ({}); disconnect or remove them first",
                crate::ids::short(id),
                names.join(", ")
            ));
        }
        let parent: Option<String> = tx
            .row("SELECT parent FROM networks WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        tx.exec("DELETE FROM pool_cursors WHERE network_id = ?1", [id])?;
        // Its spares go with it (the fleet store releases their claims after this).
        for spare in spares_where(&tx, id)? {
            delete_spare(&tx, &spare.id)?;
        }
        hand_over_lan_conflicts(&tx, id)?;
        tx.exec("DELETE FROM networks WHERE id = ?1", [id])?;
        // The last network on a parent mvnet created takes the parent with it.
        let mut to_delete = None;
        if let Some(parent) = parent {
            let still_used = tx
                .prepare_cached("SELECT 1 FROM networks WHERE parent = ?1")?
                .exists([&parent])?;
            if !still_used && tx.exec("DELETE FROM owned_parents WHERE name = ?1", [&parent])? > 0 {
                to_delete = Some(parent);
            }
        }
        tx.commit()?;
        drop(_lock);
        self.reclaimed.extend(reclaimed);
        Ok(to_delete)
    }

    fn parent_is_owned(&mut self, name: &str) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM owned_parents WHERE name = ?1")?
            .exists([name])?)
    }

    fn reserve_endpoint(&mut self, net: &Network, req: &EndpointRequest) -> Result<Endpoint> {
        let (tx, _lock) = self.write()?;
        let reclaimed = reclaim_abandoned(&tx)?;
        let ep = insert_endpoint(&tx, net, req, None)?;
        tx.commit()?;
        drop(_lock);
        self.reclaimed.extend(reclaimed);
        Ok(ep)
    }

    fn activate_endpoint(&mut self, id: &str) -> Result<()> {
        // The `state` column is the endpoint's state (`endpoints_where` reads it over the
        // body's); the body keeps the state it was reserved with. Rewriting the body here
        // too (json_set) cost a third of this transaction: a JSON parse and print.
        let n = self.write_one("UPDATE endpoints SET state = 'active' WHERE id = ?1", [id])?;
        if n == 0 {
            return Err(Error::Internal(format!(
                "endpoint {id} vanished during attach"
            )));
        }
        Ok(())
    }

    fn update_endpoint(&mut self, ep: &Endpoint) -> Result<()> {
        let (tx, _lock) = self.write()?;
        let body: Option<String> = tx
            .row("SELECT body FROM endpoints WHERE id = ?1", [&ep.id], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(body) = body else {
            return Err(not_found!("endpoint {} not found", ep.id));
        };
        let old: Endpoint = from_json(&body)?;
        if old.ipv4 != ep.ipv4 || old.ipv6 != ep.ipv6 || old.network_id != ep.network_id {
            return Err(Error::Internal(format!(
                "update_endpoint cannot change the addresses or network of {}",
                ep.id
            )));
        }
        let mut new = ep.clone();
        new.state = old.state;
        tx.exec(
            "UPDATE endpoints SET container_id = ?2, body = ?3 WHERE id = ?1",
            params![ep.id, new.container_id, to_json(&new)],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn remove_endpoint(&mut self, id: &str) -> Result<Option<Endpoint>> {
        let (tx, _lock) = self.write()?;
        let ep = delete_endpoint(&tx, id)?;
        tx.commit()?;
        Ok(ep)
    }

    fn endpoints_of_network(&mut self, network_id: &str) -> Result<Vec<Endpoint>> {
        endpoints_where(&self.conn, "network_id", network_id)
    }

    fn endpoints_of_container(&mut self, container_id: &str) -> Result<Vec<Endpoint>> {
        endpoints_where(&self.conn, "container_id", container_id)
    }

    fn replace_conflicting_address(
        &mut self,
        net: &Network,
        endpoint_id: &str,
        ip: IpAddr,
        holder: Option<MacAddr>,
    ) -> Result<Endpoint> {
        let (tx, _lock) = self.write()?;
        let body: Option<String> = tx
            .row(
                "SELECT body FROM endpoints WHERE id = ?1",
                [endpoint_id],
                |r| r.get(0),
            )
            .optional()?;
        let mut ep: Endpoint = from_json(&body.ok_or_else(|| {
            Error::Internal(format!("endpoint {endpoint_id} vanished during attach"))
        })?)?;
        let slot = if ep.ipv4.is_some_and(|(a, _)| a == ip) {
            &mut ep.ipv4
        } else if ep.ipv6.is_some_and(|(a, _)| a == ip) {
            &mut ep.ipv6
        } else {
            return Err(Error::Internal(format!(
                "endpoint {endpoint_id} does not hold {ip}"
            )));
        };
        let idx = net
            .pools
            .iter()
            .position(|p| p.subnet.contains(&ip))
            .ok_or_else(|| Error::Internal(format!("{ip} is in no pool of {}", net.name)))?;
        delete_allocation(&tx, net.address_domain(), ip, endpoint_id)?;
        insert_lan_conflict(&tx, net, ip, holder)?;
        let new = allocate(&tx, net, idx, None, endpoint_id, &[])?;
        *slot = Some(new);
        if let (IpAddr::V4(old4), IpAddr::V4(new4)) = (ip, new.0) {
            if ep.mac == MacAddr::from_ipv4(old4) {
                ep.mac = MacAddr::from_ipv4(new4);
            }
        }
        tx.exec(
            "UPDATE endpoints SET body = ?2 WHERE id = ?1",
            params![endpoint_id, to_json(&ep)],
        )?;
        tx.commit()?;
        Ok(ep)
    }

    fn move_leased_address(
        &mut self,
        net: &Network,
        endpoint_id: &str,
        lease: &crate::model::Lease,
    ) -> Result<Endpoint> {
        let (tx, _lock) = self.write()?;
        let body: Option<String> = tx
            .row(
                "SELECT body FROM endpoints WHERE id = ?1",
                [endpoint_id],
                |r| r.get(0),
            )
            .optional()?;
        let mut ep: Endpoint =
            from_json(&body.ok_or_else(|| not_found!("endpoint {endpoint_id} not found"))?)?;
        if let Some((old, _)) = ep.ipv4 {
            delete_allocation(&tx, net.address_domain(), old, endpoint_id)?;
        }
        let new = IpAddr::V4(lease.ip);
        record_leased(&tx, net, new, endpoint_id, &[])?;
        ep.ipv4 = Some((new, lease.prefix));
        ep.lease = Some(lease.clone());
        tx.exec(
            "UPDATE endpoints SET body = ?2 WHERE id = ?1",
            params![endpoint_id, to_json(&ep)],
        )?;
        tx.commit()?;
        Ok(ep)
    }

    fn record_lan_conflict(
        &mut self,
        net: &Network,
        ip: IpAddr,
        holder: Option<MacAddr>,
    ) -> Result<()> {
        let (tx, _lock) = self.write()?;
        insert_lan_conflict(&tx, net, ip, holder)?;
        tx.commit()?;
        Ok(())
    }

    fn mark_held_elsewhere(&mut self, net: &Network, ip: IpAddr) -> Result<()> {
        let (tx, _lock) = self.write()?;
        let domain = net.address_domain();
        let held: Option<String> = tx
            .row(
                "SELECT endpoint_id FROM allocations WHERE domain = ?1 AND ip = ?2",
                params![domain, &ip_key(ip)[..]],
                |r| r.get(0),
            )
            .optional()?;
        if held.is_none() {
            insert_allocation(&tx, domain, ip, &net.id, FLEET_HOLDER)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn set_cursor(&mut self, net: &Network, ip: IpAddr) -> Result<()> {
        let (tx, _lock) = self.write()?;
        tx.exec(
            "INSERT INTO pool_cursors(network_id, pool_idx, cursor) VALUES (?1, 0, ?2)
             ON CONFLICT(network_id, pool_idx) DO UPDATE SET cursor = excluded.cursor",
            params![net.id, &ip_key(ip)[..]],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn forget_held_elsewhere(&mut self, net: &Network) -> Result<usize> {
        let (tx, _lock) = self.write()?;
        let domain = net.address_domain().to_string();
        let ips: Vec<Vec<u8>> = {
            let mut st = tx.prepare_cached(
                "SELECT ip FROM allocations WHERE network_id = ?1 AND endpoint_id = ?2",
            )?;
            let rows = st
                .query_map(params![net.id, FLEET_HOLDER], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            rows
        };
        for key in &ips {
            if let Some(ip) = key_to_ip(key) {
                delete_allocation(&tx, &domain, ip, FLEET_HOLDER)?;
            }
        }
        tx.commit()?;
        Ok(ips.len())
    }

    fn keeps_spares(&self) -> bool {
        true
    }

    fn reserve_spare(&mut self, net: &Network) -> Result<Option<Spare>> {
        let (tx, _lock) = self.write()?;
        let still_there = tx
            .prepare_cached("SELECT 1 FROM networks WHERE id = ?1")?
            .exists([&net.id])?;
        if !still_there {
            return Ok(None);
        }
        let id = crate::ids::new_id();
        let v4: Vec<usize> = (0..net.pools.len())
            .filter(|&i| net.pools[i].subnet.addr().is_ipv4())
            .collect();
        let ip = match allocate_in(&tx, net, &v4, None, &id, &[]) {
            Ok(Some((ip, _))) => ip,
            Ok(None) => return Ok(None),
            Err(Error::Conflict(m)) if m.starts_with("no free address left") => return Ok(None),
            Err(e) => return Err(e),
        };
        let pid = std::process::id();
        tx.exec(
            "INSERT INTO spares(id, network_id, ip, confirmed, owner_pid) VALUES (?1, ?2, ?3, 0, ?4)",
            params![id, net.id, &ip_key(ip)[..], pid],
        )?;
        tx.commit()?;
        Ok(Some(Spare {
            id,
            network_id: net.id.clone(),
            ip,
            confirmed: false,
            owner_pid: pid,
        }))
    }

    fn confirm_spare(&mut self, id: &str) -> Result<bool> {
        Ok(self.write_one("UPDATE spares SET confirmed = 1 WHERE id = ?1", [id])? > 0)
    }

    fn unconfirm_spares(&mut self, network_id: &str) -> Result<usize> {
        self.write_one(
            "UPDATE spares SET confirmed = 0, owner_pid = 0 WHERE network_id = ?1",
            [network_id],
        )
    }

    fn remove_spare(&mut self, id: &str) -> Result<Option<Spare>> {
        let (tx, _lock) = self.write()?;
        let spare = delete_spare(&tx, id)?;
        tx.commit()?;
        Ok(spare)
    }

    fn spares(&mut self, network_id: &str) -> Result<Vec<Spare>> {
        spares_where(&self.conn, network_id)
    }

    fn take_spare(&mut self, net: &Network, req: &EndpointRequest) -> Result<Option<Endpoint>> {
        let (tx, _lock) = self.write()?;
        let reclaimed = reclaim_abandoned(&tx)?;
        let chosen = spares_where(&tx, &net.id)?.into_iter().find(|s| {
            s.confirmed
                && req.static_ipv4.is_none_or(|want| want == s.ip)
                && !req.host_addresses.iter().any(|(a, _)| *a == s.ip)
        });
        let ep = match chosen {
            Some(s) => {
                let prefix = net
                    .pools
                    .iter()
                    .find(|p| p.subnet.contains(&s.ip))
                    .map(|p| p.subnet.prefix_len());
                match prefix {
                    Some(len) if req.leased_ipv4.is_none() => {
                        tx.exec("DELETE FROM spares WHERE id = ?1", [&s.id])?;
                        Some(insert_endpoint(&tx, net, req, Some((s.id, (s.ip, len))))?)
                    }
                    _ => None,
                }
            }
            None => None,
        };
        tx.commit()?;
        drop(_lock);
        self.reclaimed.extend(reclaimed);
        Ok(ep)
    }

    fn endpoint_to_spare(&mut self, net: &Network, id: &str) -> Result<Option<Endpoint>> {
        let (tx, _lock) = self.write()?;
        let Some(ep) = delete_endpoint(&tx, id)? else {
            return Ok(None);
        };
        if let (Some((ip, _)), None) = (ep.ipv4, &ep.lease) {
            insert_allocation(&tx, net.address_domain(), ip, &net.id, id)?;
            tx.exec(
                // Unconfirmed, by nobody (pid 0): its claim is checked before it is used.
                "INSERT INTO spares(id, network_id, ip, confirmed, owner_pid) VALUES (?1, ?2, ?3, 0, 0)",
                params![id, net.id, &ip_key(ip)[..]],
            )?;
        }
        tx.commit()?;
        Ok(Some(ep))
    }

    fn lan_conflicts(&mut self, net: &Network) -> Result<Vec<LanConflict>> {
        let mut st = self.conn.prepare_cached(
            "SELECT ip, mac, seen FROM lan_conflicts WHERE network_id = ?1 ORDER BY seen, ip",
        )?;
        let rows: Vec<(Vec<u8>, Option<String>, String)> = st
            .query_map([&net.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        rows.into_iter()
            .map(|(key, mac, seen)| {
                let ip = key_to_ip(&key).ok_or_else(|| {
                    Error::Store(StoreError::Corrupt("a LAN conflict address".into()))
                })?;
                let mac = mac.map(|m| m.parse()).transpose()?;
                Ok(LanConflict { ip, mac, seen })
            })
            .collect()
    }

    fn clear_lan_conflicts(&mut self, net: &Network) -> Result<usize> {
        let (tx, _lock) = self.write()?;
        let n = drop_lan_conflicts(&tx, &net.id)?;
        tx.commit()?;
        Ok(n)
    }

    fn create_container(&mut self, c: &Container) -> Result<()> {
        let (tx, _lock) = self.write()?;
        let holder: Option<String> = tx
            .row(
                "SELECT id FROM containers WHERE name = ?1",
                [&c.name],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(holder) = holder {
            return Err(conflict!(
                "the container name \"{}\" is already in use by container {}; remove it (mvnet rm -f {}) or pick another --name",
                c.name,
                crate::ids::short(&holder),
                c.name
            ));
        }
        tx.exec(
            "INSERT INTO containers(id, name, body) VALUES (?1, ?2, ?3)",
            params![c.id, c.name, to_json(c)],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn update_container(&mut self, c: &Container) -> Result<()> {
        self.write_one(
            "UPDATE containers SET body = ?2 WHERE id = ?1",
            params![c.id, to_json(c)],
        )?;
        Ok(())
    }

    fn containers(&mut self) -> Result<Vec<Container>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT name, body FROM containers ORDER BY rowid")?;
        let rows: Vec<(String, String)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows
            .iter()
            .filter_map(|(name, b)| parse_or_report(b, "container", name))
            .collect())
    }

    fn container(&mut self, name_or_id: &str) -> Result<Container> {
        match lookup(&self.conn, "containers", "container", name_or_id)? {
            Some(b) => from_json(&b).map_err(|e| {
                invalid!(
                    "container {} is stored corrupt ({e}); remove it with: mvnet rm -f {}",
                    crate::quote(name_or_id),
                    crate::quote(name_or_id)
                )
            }),
            None => Err(not_found!(
                "no such container: {name_or_id}; see the containers that exist with: mvnet ps -a"
            )),
        }
    }

    fn take_reclaimed(&mut self) -> Vec<Endpoint> {
        std::mem::take(&mut self.reclaimed)
    }

    fn remove_unreadable_network(&mut self, name_or_id: &str) -> Result<Option<Vec<Endpoint>>> {
        let (tx, _lock) = self.write()?;
        let row: Option<(String, String)> = tx
            .row(
                "SELECT id, body FROM networks WHERE name = ?1 OR id = ?1",
                [name_or_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((id, body)) = row else {
            return Ok(None);
        };
        if serde_json::from_str::<Network>(&body).is_ok() {
            return Ok(None);
        }
        let eps = endpoints_where(&tx, "network_id", &id)?;
        let ids: Vec<String> = {
            let mut st = tx.prepare_cached("SELECT id FROM endpoints WHERE network_id = ?1")?;
            let v = st
                .query_map([&id], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            v
        };
        for ep in ids {
            delete_endpoint(&tx, &ep)?;
        }
        drop_lan_conflicts(&tx, &id)?;
        tx.exec("DELETE FROM pool_cursors WHERE network_id = ?1", [&id])?;
        tx.exec("DELETE FROM networks WHERE id = ?1", [&id])?;
        tx.commit()?;
        Ok(Some(eps))
    }

    fn remove_unreadable_container(&mut self, name_or_id: &str) -> Result<bool> {
        let (tx, _lock) = self.write()?;
        let row: Option<(String, String)> = tx
            .row(
                "SELECT id, body FROM containers WHERE name = ?1 OR id = ?1",
                [name_or_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((id, body)) = row else {
            return Ok(false);
        };
        if serde_json::from_str::<Container>(&body).is_ok() {
            return Ok(false);
        }
        tx.exec("DELETE FROM containers WHERE id = ?1", [&id])?;
        tx.commit()?;
        Ok(true)
    }

    fn remove_container(&mut self, id: &str) -> Result<()> {
        self.write_one("DELETE FROM containers WHERE id = ?1", [id])?;
        Ok(())
    }
}
