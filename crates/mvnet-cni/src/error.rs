//! CNI errors: spec JSON on stdout with a code, and a message a user can act on.

use serde_json::json;

/// Error codes from the CNI spec (SPEC.md, "Error").
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    pub const INTERNAL: u32 = 999;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, d: impl Into<String>) -> CniError {
        self.details = d.into();
        self
    }

    pub fn to_json(&self, version: &str) -> serde_json::Value {
        // One bounded line each: a runtime logs these, and input can be megabytes.
        let mut v = json!({ "cniVersion": version, "code": self.code, "msg": mvnet_core::one_line(&self.msg) });
        if !self.details.is_empty() {
            v["details"] = json!(mvnet_core::one_line(&self.details));
        }
        v
    }
}

/// Core errors map to the spec's codes: bad input is a config error, a busy store is
/// "try again later", kernel and I/O failures are internal.
impl From<mvnet_core::Error> for CniError {
    fn from(e: mvnet_core::Error) -> CniError {
        use mvnet_core::Error as E;
        let c = match &e {
            E::Invalid(_) | E::NotFound(_) | E::ParentMissing { .. } | E::KernelFeature(_) => {
                code::INVALID_CONFIG
            }
            E::Conflict(_) => code::INVALID_CONFIG,
            E::Unavailable(_) => code::TRY_AGAIN,
            e if e.is_busy() => code::TRY_AGAIN,
            E::Io { .. } => code::IO,
            _ => code::INTERNAL,
        };
        CniError::new(c, e.to_string())
    }
}

pub type CniResult<T> = Result<T, CniError>;
