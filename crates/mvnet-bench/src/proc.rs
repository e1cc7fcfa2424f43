//! Timing one process the way a runtime runs a plugin: whole exec, stdin in, wait, with the
//! child's own resource usage from wait4 (peak RSS, CPU time).

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Sample {
    pub wall_ms: f64,
    pub cpu_ms: f64,
    pub max_rss_kib: i64,
    pub ok: bool,
}

/// Runs `argv` in this process's network namespace (main() enters the lab's docker host
/// once, as a container runtime runs its plugins from its own namespace), feeding `stdin`,
/// and measures it: spawn, stdin, wait4. The small outputs are read after exit (plugins
/// print far less than a pipe holds), so no helper thread runs during the measurement.
pub fn run(argv: &[&str], env: &[(&str, String)], stdin: &[u8]) -> (Sample, String) {
    spawn_measured(None, argv, env, stdin)
}

/// Like `run`, but inside another namespace (lab machines for the data-plane runs).
pub fn run_in(
    netns: &Path,
    argv: &[&str],
    env: &[(&str, String)],
    stdin: &[u8],
) -> (Sample, String) {
    spawn_measured(Some(netns), argv, env, stdin)
}

fn spawn_measured(
    netns: Option<&Path>,
    argv: &[&str],
    env: &[(&str, String)],
    stdin: &[u8],
) -> (Sample, String) {
    let mut c = Command::new(argv[0]);
    c.args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    if let Some(path) = netns {
        mvnet_core::netns::spawn_inside(
            &mut c,
            std::fs::File::open(path).expect("namespace"),
            None,
        );
    }
    let start = Instant::now();
    let mut child = match c.spawn() {
        Ok(ch) => ch,
        Err(e) => return (Sample::default(), format!("spawn {}: {e}", argv[0])),
    };
    {
        let mut si = child.stdin.take().expect("piped");
        let _ = si.write_all(stdin);
    }
    let mut status = 0;
    // SAFETY: a plain C struct, for which all-zero bytes are a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let long_running = stdin.is_empty() && argv[0].ends_with("iperf3");
    if long_running {
        // iperf3 prints more than a pipe holds: drain while it runs.
        let out = child.wait_with_output().expect("wait");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        return (
            Sample {
                wall_ms: start.elapsed().as_secs_f64() * 1e3,
                ok: out.status.success(),
                ..Default::default()
            },
            text,
        );
    }
    // SAFETY: status and rusage point to live locals of the types wait4 expects.
    unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    let wall = start.elapsed();
    let mut text = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut text);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut text);
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    let sample = Sample {
        wall_ms: wall.as_secs_f64() * 1e3,
        cpu_ms: (tv(ru.ru_utime) + tv(ru.ru_stime)).as_secs_f64() * 1e3,
        max_rss_kib: ru.ru_maxrss,
        ok: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
    };
    (sample, text)
}

pub fn median(v: &[f64]) -> f64 {
    percentile(v, 0.5)
}

pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let idx = ((s.len() - 1) as f64 * p).round() as usize;
    s[idx]
}
