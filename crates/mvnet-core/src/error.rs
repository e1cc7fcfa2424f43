//! One error type for the whole core. Every message says what was wrong *and* how to fix it,
//! because front ends print it as-is on one line.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user asked for something malformed or impossible; nothing was changed.
    #[error("{0}")]
    Invalid(String),
    /// A named object (network, container, interface) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request clashes with existing state (duplicate name, address in use, busy parent).
    #[error("{0}")]
    Conflict(String),
    /// A service mvnet needs did not answer in time (etcd without quorum, say); retrying
    /// later may work.
    #[error("{0}")]
    Unavailable(String),
    /// The running kernel lacks a feature we need.
    #[error("{0}")]
    KernelFeature(String),
    /// A kernel operation failed for another reason.
    #[error("{op}: {source}")]
    Kernel {
        op: String,
        #[source]
        source: io::Error,
    },
    /// The parent interface does not exist (Docker's words); `present` lists the ones that do,
    /// so a front end can say it in its own terms (CNI calls the parent "master").
    #[error("-o parent interface was not found on the host: {name}; interfaces here: {}", list_or_none(.present))]
    ParentMissing { name: String, present: Vec<String> },
    /// A macvlan's MAC is already taken on its parent (the engine moves a derived MAC on).
    #[error("MAC address {mac} is already used by another macvlan on {parent}; pass a different MAC address")]
    MacInUse {
        mac: crate::model::MacAddr,
        parent: String,
    },
    /// The state store failed.
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    /// Something that should not happen did (a link vanished right after it was made, a
    /// worker thread panicked): not the user's doing, but said plainly all the same.
    #[error("{0}")]
    Internal(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// "eth0, eth1", or "(none)".
pub fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "(none)".to_string()
    } else {
        names.join(", ")
    }
}

impl Error {
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn kernel(op: impl Into<String>, source: io::Error) -> Self {
        Error::Kernel {
            op: op.into(),
            source,
        }
    }

    /// The errno behind a kernel error, if any: lets callers treat ENOENT/EEXIST specially.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { source, .. } | Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// How the state store failed, typed where callers branch on it (a busy store is "try
/// again" for a CNI runtime).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the database longer than we wait.
    #[error("the database is locked by another process ({0}); try again")]
    Busy(#[source] rusqlite::Error),
    #[error("{0}")]
    Sqlite(#[source] rusqlite::Error),
    /// A stored record does not parse, or contradicts the others.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        let busy = matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked)
        );
        Error::Store(if busy {
            StoreError::Busy(e)
        } else {
            StoreError::Sqlite(e)
        })
    }
}

/// `.kernel(op)` on an io::Result: the one way to say which kernel operation failed.
pub trait KernelContext<T> {
    fn kernel(self, op: impl Into<String>) -> Result<T>;
}

impl<T> KernelContext<T> for std::result::Result<T, io::Error> {
    fn kernel(self, op: impl Into<String>) -> Result<T> {
        self.map_err(|e| Error::kernel(op, e))
    }
}

impl Error {
    /// Whether trying again later may succeed (the store was busy, the write lock held).
    pub fn is_busy(&self) -> bool {
        matches!(self, Error::Store(StoreError::Busy(_)))
    }
}

/// Shorthand constructors keep call sites readable: `invalid!("bad mode {m}")`.
#[macro_export]
macro_rules! invalid {
    ($($t:tt)*) => { $crate::error::Error::Invalid(format!($($t)*)) };
}
#[macro_export]
macro_rules! not_found {
    ($($t:tt)*) => { $crate::error::Error::NotFound(format!($($t)*)) };
}
#[macro_export]
macro_rules! conflict {
    ($($t:tt)*) => { $crate::error::Error::Conflict(format!($($t)*)) };
}
