//! `mvnet-docker`: mvnet's Docker network driver and IPAM driver (legacy plugin protocol,
//! HTTP over a unix socket in /run/docker/plugins). Start it before dockerd; then
//! `docker network create -d mvnet --ipam-driver mvnet ...`.
//!
//! - `protocol.rs`: Docker's request bodies (pure);
//! - `network.rs`: `CreateNetwork` as an mvnet network request (pure);
//! - `plugin.rs`: what each call does, through mvnet's engine;
//! - `names.rs`: Docker's network names, learned from Docker's API in the background;
//! - this file: the socket, the HTTP layer, one log line per call.

mod names;
mod network;
mod plugin;
mod protocol;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use clap::Parser;
use serde_json::Value;

use plugin::Plugin;
use protocol::Api;

/// mvnet's Docker network and IPAM plugin.
#[derive(Parser, Debug)]
#[command(name = "mvnet-docker", version)]
struct Args {
    /// mvnet's state directory (shared with the mvnet CLI and the CNI plugin).
    #[arg(long, env = "MVNET_ROOT", default_value = mvnet_core::engine::DEFAULT_ROOT)]
    root: PathBuf,
    /// Where Docker finds the plugin: /run/docker/plugins/NAME.sock, NAME being the name
    /// given to -d and --ipam-driver.
    #[arg(long, default_value = "/run/docker/plugins/mvnet.sock")]
    socket: PathBuf,
    /// Docker's API, asked (outside plugin calls) for the names of Docker's networks.
    #[arg(
        long,
        env = "DOCKER_HOST",
        default_value = "unix:///var/run/docker.sock"
    )]
    docker_host: String,
    /// Log every request and response body too (MVNET_DOCKER_DEBUG=true).
    #[arg(long, env = "MVNET_DOCKER_DEBUG")]
    debug: bool,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("mvnet-docker: error: {}", mvnet_core::one_line(&e));
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("mvnet-docker must run as root (it creates interfaces and namespaces, as dockerd does); start it with sudo or as a systemd service".into());
    }
    let plugin = Arc::new(prepare(&args)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    DEBUG.store(args.debug, std::sync::atomic::Ordering::Relaxed);
    runtime.block_on(serve(plugin, args.socket))
}

/// The store, and a pinned path to the host namespace (endpoint rows name it, so it
/// must outlive this process).
fn prepare(args: &Args) -> Result<Plugin, String> {
    let e = |e: mvnet_core::Error| mvnet_core::one_line(&e.to_string());
    // Opening the engine creates (or checks) the private root and the store.
    mvnet_core::engine::Engine::open(&args.root).map_err(e)?;
    let dir = args.root.join("docker");
    std::fs::create_dir_all(&dir)
        .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
    let host = mvnet_core::netns::pin_current_netns(&dir, "host").map_err(e)?;
    let plugin = Plugin::new(
        args.root.clone(),
        host.display().to_string(),
        names::socket_path(&args.docker_host),
    );
    names::learn_in_background(
        plugin.root.clone(),
        plugin.docker.clone(),
        plugin.unnamed_networks(),
    );
    Ok(plugin)
}

async fn serve(plugin: Arc<Plugin>, socket: PathBuf) -> Result<(), String> {
    let listener = bind(&socket)?;
    eprintln!(
        "mvnet-docker: listening on {} (root {})",
        socket.display(),
        plugin.root.display()
    );
    let app = axum::Router::new().fallback(move |uri: Uri, body: Bytes| {
        let plugin = plugin.clone();
        async move { handle(plugin, uri, body).await }
    });
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| format!("serving {}: {e}", socket.display()));
    let _ = std::fs::remove_file(&socket);
    eprintln!("mvnet-docker: stopped");
    served
}

/// Binds the socket: a stale one (nobody answers) is replaced, a live one is refused.
fn bind(socket: &Path) -> Result<tokio::net::UnixListener, String> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Err(format!(
                "another plugin is listening on {}; stop it first (systemctl stop mvnet-docker)",
                socket.display()
            ));
        }
        std::fs::remove_file(socket)
            .map_err(|e| format!("cannot remove the stale {}: {e}", socket.display()))?;
    }
    let l = tokio::net::UnixListener::bind(socket)
        .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| format!("cannot set the mode of {}: {e}", socket.display()))?;
    Ok(l)
}

static DEBUG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// One call: run it on a blocking thread (the engine is synchronous and a probe waits on
/// the LAN), answer in the API's error shape, and log one line.
async fn handle(plugin: Arc<Plugin>, uri: Uri, body: Bytes) -> Response {
    let method = uri.path().to_string();
    let started = Instant::now();
    let Some(api) = Api::of(&method) else {
        return (StatusCode::NOT_FOUND, "404 page not found\n").into_response();
    };
    let summary = summarize(&body);
    let debug = DEBUG.load(std::sync::atomic::Ordering::Relaxed);
    if debug {
        eprintln!("{method} request: {}", String::from_utf8_lossy(&body));
    }
    let m = method.clone();
    let outcome = tokio::task::spawn_blocking(move || plugin.call(&m, &body))
        .await
        .unwrap_or_else(|e| Some(Err(format!("internal error: {e}"))));
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let name = method.trim_start_matches('/');
    match outcome {
        None => {
            eprintln!("{name} {summary}-> not implemented ({ms:.2} ms)");
            (StatusCode::NOT_FOUND, "404 page not found\n").into_response()
        }
        Some(Ok(v)) => {
            eprintln!("{name} {summary}-> ok ({ms:.2} ms)");
            if debug {
                eprintln!("{method} response: {v}");
            }
            json_response(&v)
        }
        Some(Err(msg)) => {
            eprintln!("{name} {summary}-> error: {msg} ({ms:.2} ms)");
            json_response(&api.error(&msg))
        }
    }
}

fn json_response(v: &Value) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/vnd.docker.plugins.v1+json")],
        v.to_string(),
    )
        .into_response()
}

/// The ids and addresses of a request, short, for the log line.
fn summarize(body: &[u8]) -> String {
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) else {
        return String::new();
    };
    let mut out = String::new();
    for key in [
        "NetworkID",
        "EndpointID",
        "PoolID",
        "Pool",
        "SubPool",
        "Address",
    ] {
        if let Some(Value::String(s)) = m.get(key) {
            if s.is_empty() {
                continue;
            }
            let s = if key.ends_with("ID") && !key.starts_with("Pool") {
                mvnet_core::ids::short(s)
            } else {
                s
            };
            out.push_str(&format!("{}={s} ", key.to_lowercase()));
        }
    }
    if let Some(Value::Object(i)) = m.get("Interface") {
        for key in ["Address", "AddressIPv6", "MacAddress"] {
            if let Some(Value::String(s)) = i.get(key).filter(|v| v.as_str() != Some("")) {
                out.push_str(&format!("{}={s} ", key.to_lowercase()));
            }
        }
    }
    out
}
