use serde::{Deserialize, Serialize};

/// An mvnet container: a named network namespace (plus a UTS namespace for its hostname)
/// and, optionally, one process running inside them. No image, no rootfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub hostname: String,
    /// Path of the named netns (`/run/netns/mvnet-<short id>`), Docker's `SandboxKey`.
    pub netns: String,
    /// Path of the bind-mounted UTS namespace.
    pub uts: String,
    pub created: String,
    pub command: Vec<String>,
    pub status: ContainerStatus,
    pub pid: u32,
    /// The process start time (field 22 of /proc/PID/stat), so a recycled PID is not
    /// mistaken for our process.
    #[serde(default)]
    pub pid_start: u64,
    pub exit_code: Option<i32>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub auto_remove: bool,
    pub log_path: Option<String>,
    /// The `mvnet run` process that is creating it, with its start time: a container still
    /// `Created` whose creator is gone (killed mid-run) is cleaned up by the next run.
    #[serde(default)]
    pub creator_pid: u32,
    #[serde(default)]
    pub creator_start: u64,
    /// `--label KEY=VALUE` (Docker's `Config.Labels`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerStatus {
    Created,
    Running,
    Exited,
}

impl std::fmt::Display for ContainerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Exited => "exited",
        })
    }
}
