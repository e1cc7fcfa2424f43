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
    /// A macvlan's MAC is already taken on its parent (the engine moves a derived MAC on).
    #[error("MAC address {mac} is already used by another macvlan on {parent}; pass a different MAC address")]
    MacInUse {
        mac: crate::model::MacAddr,
        parent: String,
    },
    /// The state store failed.
    #[error("state store: {0}")]
    Store(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

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

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Store(e.to_string())
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
